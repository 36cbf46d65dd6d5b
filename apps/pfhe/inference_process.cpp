#include "inference_process.h"

#include <fcntl.h>
#include <omp.h>
#include <signal.h>
#include <spawn.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <memory>
#include <stdexcept>

#include "runtime/client_server.h"
#include "runtime/transport.h"

extern char** environ;

namespace pfhe::app {

namespace {

// An encrypted input is at most 4 GB (the server refuses larger ones), plus the path.
constexpr std::size_t kMaxFrameBytes = (std::size_t{4} << 30) + 8192;
constexpr int kChildSocket = 3;

ckks::Bytes request_bytes(const std::string& key_cache, std::span<const std::uint8_t> input) {
  const auto length = static_cast<std::uint32_t>(key_cache.size());
  ckks::Bytes out(4 + key_cache.size() + input.size());
  std::memcpy(out.data(), &length, 4);
  std::memcpy(out.data() + 4, key_cache.data(), key_cache.size());
  std::memcpy(out.data() + 4 + key_cache.size(), input.data(), input.size());
  return out;
}

std::string exit_description(int status) {
  if (WIFSIGNALED(status)) return std::string("killed by signal ") + std::to_string(WTERMSIG(status));
  if (WIFEXITED(status)) return "exited with status " + std::to_string(WEXITSTATUS(status));
  return "stopped";
}

}  // namespace

InferenceProcesses::InferenceProcesses(InferenceProcessOptions options, std::size_t count)
    : options_(std::move(options)) {
  for (std::size_t i = 0; i < count; ++i) {
    idle_.push_back(spawn());
    all_.push_back(idle_.back().pid);
  }
}

InferenceProcesses::~InferenceProcesses() {
  const std::lock_guard lock(mutex_);
  for (Process& p : idle_) {
    if (p.pid < 0) continue;
    if (p.fd >= 0) close(p.fd);  // the process sees the end of its socket and exits
    p.pending.reset();           // (an MPI job's rank 0 not connected yet: it cannot, and ends every rank)
    int status = 0;
    waitpid(p.pid, &status, 0);
  }
}

std::vector<pid_t> InferenceProcesses::pids() const {
  const std::lock_guard lock(mutex_);
  return all_;
}

pid_t spawn_process(const std::vector<std::string>& args, int child_socket) {
  posix_spawn_file_actions_t files;
  posix_spawn_file_actions_init(&files);
  if (child_socket >= 0) posix_spawn_file_actions_adddup2(&files, child_socket, kChildSocket);
  posix_spawn_file_actions_addopen(&files, 0, "/dev/null", O_RDONLY, 0);  // mpirun would forward a terminal's input
  // The server blocks its termination signals in every thread; the process must not inherit that.
  posix_spawnattr_t attributes;
  posix_spawnattr_init(&attributes);
  sigset_t none;
  sigemptyset(&none);
  posix_spawnattr_setsigmask(&attributes, &none);
  posix_spawnattr_setflags(&attributes, POSIX_SPAWN_SETSIGMASK);
  std::vector<char*> argv;
  for (const std::string& a : args) argv.push_back(const_cast<char*>(a.c_str()));
  argv.push_back(nullptr);
  pid_t pid = -1;
  const int error = posix_spawnp(&pid, args[0].c_str(), &files, &attributes, argv.data(), environ);
  posix_spawn_file_actions_destroy(&files);
  posix_spawnattr_destroy(&attributes);
  if (error != 0)
    throw std::runtime_error("inference process: cannot start " + args[0] + ": " + std::strerror(error));
  return pid;
}

std::vector<std::string> inference_process_arguments(const InferenceProcessOptions& o) {
  return {std::filesystem::read_symlink("/proc/self/exe").string(),
          "inference-process",
          "--executor",
          o.executor,
          "--params",
          o.params,
          "--model",
          o.model,
          "--workers",
          std::to_string(o.workers),
          "--retries",
          std::to_string(o.retries)};
}

InferenceProcesses::Process InferenceProcesses::spawn() const {
  if (options_.executor == "mpi") return spawn_mpi_job();
  int sockets[2];
  if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sockets) != 0)
    throw std::runtime_error(std::string("inference process: socketpair: ") + std::strerror(errno));
  // The child's end becomes its descriptor 3 (dup2 clears close-on-exec on the copy; an end
  // that is already 3 is moved first, since dup2 onto itself would keep the flag).
  int child_end = sockets[1];
  if (child_end == kChildSocket) {
    child_end = fcntl(sockets[1], F_DUPFD_CLOEXEC, kChildSocket + 1);
    close(sockets[1]);
  }
  std::vector<std::string> args = inference_process_arguments(options_);
  args.insert(args.end(), {"--fd", std::to_string(kChildSocket)});
  pid_t pid = -1;
  try {
    pid = spawn_process(args, child_end);
  } catch (...) {
    close(child_end);
    close(sockets[0]);
    throw;
  }
  close(child_end);
  return {pid, sockets[0], nullptr};
}

int InferenceProcesses::stop(const Process& p) const {
  int status = 0;
  if (options_.executor != "mpi") {
    kill(p.pid, SIGKILL);
    waitpid(p.pid, &status, 0);
    return status;
  }
  // mpirun ends its ranks on SIGTERM (a SIGKILL would leave them running); one that does
  // not exit within 10 s is killed.
  kill(p.pid, SIGTERM);
  for (int i = 0; i < 1000; ++i) {
    if (waitpid(p.pid, &status, WNOHANG) == p.pid) return status;
    usleep(10000);
  }
  kill(p.pid, SIGKILL);
  waitpid(p.pid, &status, 0);
  return status;
}

ckks::Bytes InferenceProcesses::infer(const std::string& key_cache, std::span<const std::uint8_t> input) {
  Process p;
  {
    std::unique_lock lock(mutex_);
    idle_changed_.wait(lock, [&] { return !idle_.empty(); });
    p = idle_.back();
    idle_.pop_back();
  }
  const auto give_back = [&](Process q) {
    const std::lock_guard lock(mutex_);
    idle_.push_back(q);
    idle_changed_.notify_one();
  };
  // A slot whose process could not be started again is retried here (the slot stays).
  const auto start = [&] {
    try {
      p = spawn();
    } catch (...) {
      give_back(Process{});
      throw;
    }
    const std::lock_guard lock(mutex_);
    all_.push_back(p.pid);
  };
  if (p.pid < 0) start();
  const runtime::Frame request{0, 0, 0, 0, request_bytes(key_cache, input)};
  for (int attempt = 0;; ++attempt) {
    runtime::Frame answer;
    bool answered = false;
    try {
      connect(p);  // an MPI job's rank 0, the first time
      runtime::send_frame(p.fd, request);
      answered = runtime::receive_frame(p.fd, answer, kMaxFrameBytes);
    } catch (const std::runtime_error& e) {
      answered = false;  // the process died, never connected, or its stream broke: as below
      if (p.fd < 0) std::fprintf(stderr, "[pfhe serve] %s\n", e.what());
    }
    if (answered) {
      give_back(p);
      if (answer.status != 0) throw std::runtime_error(std::string(answer.payload.begin(), answer.payload.end()));
      return std::move(answer.payload);
    }
    if (p.fd >= 0) close(p.fd);
    const std::string how = exit_description(stop(p));  // a broken stream from a live process: it goes too
    std::fprintf(stderr, "[pfhe serve] inference process %d %s during a job; starting another\n", static_cast<int>(p.pid),
                 how.c_str());
    start();
    if (attempt == 1) {
      give_back(p);
      throw std::runtime_error("the inference process died twice while running this job (last: " + how + ")");
    }
  }
}

void answer_jobs(int fd, const std::function<ckks::Bytes(const JobRequest&)>& run) {
  runtime::Frame request;
  while (runtime::receive_frame(fd, request, kMaxFrameBytes)) {
    runtime::Frame answer;
    try {
      std::uint32_t length = 0;
      if (request.payload.size() < 4) throw std::runtime_error("inference process: a malformed request");
      std::memcpy(&length, request.payload.data(), 4);
      if (request.payload.size() - 4 < length) throw std::runtime_error("inference process: a malformed request");
      const JobRequest job{std::string(request.payload.begin() + 4, request.payload.begin() + 4 + length),
                           {request.payload.data() + 4 + length, request.payload.size() - 4 - length}};
      answer.payload = run(job);
    } catch (const std::exception& e) {
      const std::string what = e.what();
      answer.status = 1;
      answer.payload.assign(what.begin(), what.end());
    }
    runtime::send_frame(fd, answer);
  }
}

int run_inference_process(const InferenceProcessOptions& o, int fd) {
  prctl(PR_SET_PDEATHSIG, SIGKILL);  // the server's end: this process goes with it
  if (getppid() == 1) return 1;
  omp_set_num_threads(1);  // the fork pool needs this process single-threaded
  const runtime::ServedModel model(o.params, o.model);
  runtime::LastKeySet keys(model);
  answer_jobs(fd, [&](const JobRequest& job) {
    const runtime::KeySet& set = keys.get(job.key_cache);
    const runtime::CiphertextFile in = runtime::parse_ciphertext_file(job.input, model.context(), "the encrypted input");
    const auto executor = runtime::make_fork_executor(o.workers, o.retries);
    return runtime::ciphertext_file_bytes(set.output_context(), set.infer(in, *executor));
  });
  return 0;
}

}  // namespace pfhe::app
