// The fork pool: "compile once, fork to inherit, serialize ciphertexts". Workers are forked
// per run, so they see the model and keys exactly as the parent holds them (copy-on-write,
// nothing reloaded) and never outlive the run.
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstring>
#include <deque>
#include <functional>
#include <stdexcept>

#include "ckks/serialization.h"
#include "ring/poly.h"
#include "runtime/executor.h"
#include "runtime/process_stats.h"
#include "runtime/transport.h"

namespace pfhe::runtime {

namespace {

std::string describe_exit(int status) {
  if (WIFSIGNALED(status)) {
    const int sig = WTERMSIG(status);
    return "was killed by signal " + std::to_string(sig) + " (" + strsignal(sig) + ")";
  }
  if (WIFEXITED(status)) return "exited with status " + std::to_string(WEXITSTATUS(status));
  return "stopped";
}

// Child side: answer task frames until the parent closes the socket. Never returns.
[[noreturn]] void serve(int fd, const TaskRings& rings, const TaskFunction& task) {
  const std::size_t max_payload = std::size_t{1} << 34;
  int code = 0;
  try {
    Frame in;
    while (receive_frame(fd, in, max_payload)) {
      Frame out;
      out.task = in.task;
      try {
        auto t0 = std::chrono::steady_clock::now();
        const ckks::Ciphertext x = ckks::load_ciphertext(rings.input, in.payload);
        out.transfer_seconds = seconds_since(t0);
        t0 = std::chrono::steady_clock::now();
        const ckks::Ciphertext y = task(in.task, x);
        out.task_seconds = seconds_since(t0);
        t0 = std::chrono::steady_clock::now();
        out.payload = ckks::save(rings.output, y);
        out.transfer_seconds += seconds_since(t0);
      } catch (const std::exception& e) {
        out.status = 1;
        const std::string msg = e.what();
        out.payload.assign(msg.begin(), msg.end());
      }
      send_frame(fd, out);
    }
  } catch (const std::exception& e) {
    std::fprintf(stderr, "pfhe fork worker %d: %s\n", static_cast<int>(getpid()), e.what());
    code = 1;
  }
  _exit(code);  // no atexit handlers or static destructors of the parent's program
}

struct Worker {
  pid_t pid = -1;
  int fd = -1;
  long task = -1;  // task in flight
};

// Owns the children of one run: on any exit path every child is killed if still running
// and reaped, and every socket closed.
class WorkerSet {
 public:
  ~WorkerSet() {
    for (auto& w : workers) {
      if (w.fd >= 0) ::close(w.fd);
      if (w.pid > 0) {
        if (!finished) ::kill(w.pid, SIGKILL);
        int status = 0;
        while (::waitpid(w.pid, &status, 0) < 0 && errno == EINTR) {
        }
      }
    }
  }
  std::vector<Worker> workers;
  bool finished = false;
};

class ForkExecutor final : public Executor {
 public:
  ForkExecutor(std::size_t workers, std::size_t retries) : workers_(workers), retries_(retries) {
    if (workers == 0) throw std::invalid_argument("fork executor: needs at least one worker");
  }
  std::string name() const override { return "fork"; }
  std::size_t workers() const override { return workers_; }

  std::vector<ckks::Ciphertext> run(const TaskRings& rings, const TaskFunction& task,
                                    const std::vector<ckks::Ciphertext>& inputs, RunStats* stats,
                                    std::size_t first_task) override {
    if (first_task != 0) {  // the children inherit the shifted function
      const TaskFunction shifted = [&](std::size_t t, const ckks::Ciphertext& x) { return task(first_task + t, x); };
      return run(rings, shifted, inputs, stats, 0);
    }
    const auto start = std::chrono::steady_clock::now();
    if (const std::size_t threads = live_thread_count(); threads != 1)
      throw std::runtime_error("fork executor: " + std::to_string(threads) +
                               " threads are alive in this process; forking needs a single-threaded parent "
                               "(load the model and keys with OMP_NUM_THREADS=1, or use the thread executor)");
    RunStats local;
    local.task_seconds.assign(inputs.size(), 0.0);
    std::vector<ckks::Bytes> serialized;
    auto t0 = std::chrono::steady_clock::now();
    for (const auto& in : inputs) serialized.push_back(ckks::save(rings.input, in));
    local.transfer_seconds += seconds_since(t0);

    WorkerSet set;
    prepare_fork();
    for (std::size_t i = 0; i < std::min(workers_, inputs.size()); ++i) set.workers.push_back(spawn(set, rings, task));
    std::deque<std::size_t> pending;
    for (std::size_t t = 0; t < inputs.size(); ++t) pending.push_back(t);
    std::vector<ckks::Ciphertext> out(inputs.size());
    std::vector<std::size_t> attempts(inputs.size(), 0);
    std::size_t done = 0;
    // replace and dispatch call each other: a worker found dead when its task is sent (it
    // died between its fork and the send, or while idle) is replaced like one that dies
    // while running it. Both are bounded by the retries.
    std::function<void(Worker&)> replace;
    const auto dispatch = [&](Worker& w) {
      if (pending.empty()) return;
      Frame f;
      f.task = pending.front();
      pending.pop_front();
      ++attempts[f.task];
      // The last attempt may give the serialized input away; earlier ones keep it for a retry.
      if (attempts[f.task] > retries_) f.payload = std::move(serialized[f.task]);
      else f.payload = serialized[f.task];
      w.task = static_cast<long>(f.task);
      const auto ts = std::chrono::steady_clock::now();
      try {
        send_frame(w.fd, f);
      } catch (const std::runtime_error&) {
        return replace(w);
      }
      local.transfer_seconds += seconds_since(ts);
      local.transfer_bytes += f.payload.size();
    };
    // A worker that died: its task goes back to the queue on a new worker while it has
    // retries left (tasks are deterministic: the retried output is the same bytes).
    replace = [&](Worker& w) {
      const std::runtime_error lost = worker_lost(w);
      ::close(w.fd);
      w.fd = -1;
      if (w.task < 0 || attempts[static_cast<std::size_t>(w.task)] > retries_)
        throw w.task >= 0 && retries_ > 0
            ? std::runtime_error(std::string(lost.what()) + " (after " + std::to_string(retries_) + " retries)")
            : lost;
      std::fprintf(stderr, "[pfhe] %s; retrying it on a new worker (retry %zu of %zu)\n", lost.what(),
                   attempts[static_cast<std::size_t>(w.task)], retries_);
      pending.push_front(static_cast<std::size_t>(w.task));
      prepare_fork();
      w = spawn(set, rings, task);
      dispatch(w);
    };
    for (auto& w : set.workers) dispatch(w);
    while (done < inputs.size()) {
      std::vector<pollfd> fds;
      for (const auto& w : set.workers) fds.push_back({w.fd, POLLIN, 0});
      const int ready = ::poll(fds.data(), fds.size(), 1000);
      if (ready < 0 && errno != EINTR) throw std::runtime_error(std::string("fork executor: poll: ") + std::strerror(errno));
      for (std::size_t i = 0; i < fds.size(); ++i) {
        if (!(fds[i].revents & (POLLIN | POLLHUP | POLLERR))) continue;
        Worker& w = set.workers[i];
        Frame f;
        const auto tr = std::chrono::steady_clock::now();
        bool got = false;
        try {
          got = receive_frame(w.fd, f, std::size_t{1} << 34);
        } catch (const std::exception&) {
          got = false;
        }
        if (!got) {
          replace(w);
          continue;
        }
        if (f.status != 0)
          throw std::runtime_error("task " + std::to_string(f.task) + " failed in fork worker " +
                                   std::to_string(w.pid) + ": " + std::string(f.payload.begin(), f.payload.end()));
        if (static_cast<long>(f.task) != w.task) throw std::runtime_error("fork executor: worker answered the wrong task");
        out[f.task] = ckks::load_ciphertext(rings.output, f.payload);
        local.transfer_seconds += seconds_since(tr) + f.transfer_seconds;
        local.transfer_bytes += f.payload.size();
        local.task_seconds[f.task] = f.task_seconds;
        w.task = -1;
        ++done;
        dispatch(w);
      }
    }
    // Closing the sockets ends the workers' loops; the destructor reaps them.
    set.finished = true;
    local.seconds = seconds_since(start);
    if (stats) *stats = std::move(local);
    return out;
  }

 private:
  static void prepare_fork() {
    std::fflush(stdout);
    std::fflush(stderr);
    // Cached buffers and free heap inherited by a worker become copy-on-write pages: its
    // first write to each 4 KiB page copies it. Returning them to the kernel first lets the
    // workers start from zero-filled pages instead, which are cheaper to fault in.
    ring::return_freed_memory();
  }

  // A new worker; the caller puts it in `set` (whose other sockets the child closes).
  static Worker spawn(const WorkerSet& set, const TaskRings& rings, const TaskFunction& task) {
    int sv[2];
    if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0)
      throw std::runtime_error(std::string("fork executor: socketpair: ") + std::strerror(errno));
    const pid_t pid = ::fork();
    if (pid < 0) {
      ::close(sv[0]);
      ::close(sv[1]);
      throw std::runtime_error(std::string("fork executor: fork: ") + std::strerror(errno));
    }
    if (pid == 0) {
      ::close(sv[0]);
      for (const auto& w : set.workers)
        if (w.fd >= 0) ::close(w.fd);  // other workers' parent ends
      serve(sv[1], rings, task);
    }
    ::close(sv[1]);
    return {pid, sv[0], -1};
  }

  static std::runtime_error worker_lost(Worker& w) {
    ::kill(w.pid, SIGKILL);  // a worker whose stream broke but still runs is of no use (a dead one stays as it died)
    int status = 0;
    pid_t r;
    while ((r = ::waitpid(w.pid, &status, 0)) < 0 && errno == EINTR) {
    }
    const std::string what = r == w.pid ? describe_exit(status) : "vanished";
    w.pid = -1;  // reaped
    return std::runtime_error("fork worker " + what +
                              (w.task >= 0 ? " while running task " + std::to_string(w.task) : std::string()));
  }

  std::size_t workers_, retries_;
};

}  // namespace

std::unique_ptr<Executor> make_fork_executor(std::size_t workers, std::size_t retries) {
  return std::make_unique<ForkExecutor>(workers, retries);
}

}  // namespace pfhe::runtime
