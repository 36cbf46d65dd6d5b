#include <mpi.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <stdexcept>
#include <thread>

#include "ckks/checksum.h"
#include "ckks/serialization.h"
#include "runtime/mpi.h"
#include "runtime/process_stats.h"

namespace pfhe::runtime {

namespace {

constexpr int kTaskTag = 1, kResultTag = 2, kStopTag = 3, kJobTag = 4;

// Result header: task, status (0 ok / 1 error text), task seconds, worker transfer seconds.
struct ResultHeader {
  std::uint64_t task;
  std::uint64_t status;
  double task_seconds;
  double transfer_seconds;
};

void check(int rc, const char* what) {
  if (rc != MPI_SUCCESS) throw std::runtime_error(std::string("MPI: ") + what + " failed");
}

// MPI_Probe without the spinning: Open MPI's blocking wait keeps a core busy, which rank 0
// would take from the workers for a whole run on a machine with a core per worker. The
// polls back off from 50 us to 5 ms: a task takes seconds, and an idle rank (a service's,
// between jobs) then costs well under 1 % of a core.
void wait_for_message(int source, int tag, MPI_Status& status) {
  auto pause = std::chrono::microseconds(50);
  for (int arrived = 0;;) {
    check(MPI_Iprobe(source, tag, MPI_COMM_WORLD, &arrived, &status), "iprobe");
    if (arrived) return;
    std::this_thread::sleep_for(pause);
    pause = std::min(pause * 2, std::chrono::microseconds(5000));
  }
}

ckks::Bytes receive_bytes(int source, int tag, MPI_Status& status) {
  wait_for_message(source, tag, status);
  int count = 0;
  check(MPI_Get_count(&status, MPI_BYTE, &count), "get_count");
  ckks::Bytes b(static_cast<std::size_t>(count));
  check(MPI_Recv(b.data(), count, MPI_BYTE, status.MPI_SOURCE, status.MPI_TAG, MPI_COMM_WORLD, MPI_STATUS_IGNORE), "recv");
  b.resize(ckks::verify_trailer(b, "MPI message from rank " + std::to_string(status.MPI_SOURCE)).size());
  return b;
}

// Every message carries the checksum trailer of ckks/checksum.h.
void send_bytes(ckks::Bytes b, int dest, int tag) {
  ckks::append_trailer(b);
  if (b.size() > static_cast<std::size_t>(INT32_MAX)) throw std::runtime_error("MPI: message above 2 GB");
  check(MPI_Send(b.data(), static_cast<int>(b.size()), MPI_BYTE, dest, tag, MPI_COMM_WORLD), "send");
}

class MpiExecutor final : public Executor {
 public:
  explicit MpiExecutor(const MpiSession& session) : size_(session.size()) {
    if (session.rank() != 0) throw std::logic_error("the MPI executor runs on rank 0; other ranks serve tasks");
  }
  ~MpiExecutor() override {
    for (int r = 1; r < size_; ++r) MPI_Send(nullptr, 0, MPI_BYTE, r, kStopTag, MPI_COMM_WORLD);
  }
  std::string name() const override { return "mpi"; }
  std::size_t workers() const override { return size_ > 1 ? static_cast<std::size_t>(size_ - 1) : 1; }

  std::vector<ckks::Ciphertext> run(const TaskRings& rings, const TaskFunction& task,
                                    const std::vector<ckks::Ciphertext>& inputs, RunStats* stats,
                                    std::size_t first_task) override {
    if (size_ == 1) return make_sequential_executor()->run(rings, task, inputs, stats, first_task);  // no worker ranks
    const auto start = std::chrono::steady_clock::now();
    RunStats local;
    local.task_seconds.assign(inputs.size(), 0.0);
    std::vector<ckks::Ciphertext> out(inputs.size());
    std::deque<std::size_t> pending;
    for (std::size_t t = 0; t < inputs.size(); ++t) pending.push_back(t);
    const auto dispatch = [&](int rank) {
      if (pending.empty()) return false;
      const std::size_t t = pending.front();
      pending.pop_front();
      const auto t0 = std::chrono::steady_clock::now();
      ckks::ByteWriter w;
      w.put<std::uint64_t>(first_task + t);  // the workers' task function numbers tasks globally
      w.put_blob(ckks::save(rings.input, inputs[t]));
      send_bytes(w.bytes(), rank, kTaskTag);
      local.transfer_seconds += seconds_since(t0);
      local.transfer_bytes += w.bytes().size();
      return true;
    };
    std::size_t in_flight = 0;
    for (int r = 1; r < size_; ++r) in_flight += dispatch(r) ? 1 : 0;
    // A failed task stops the handing out, but every task in flight is still received:
    // a result left unreceived would block its rank (or be taken for one of the next run's).
    std::string error;
    while (in_flight > 0) {
      MPI_Status status;
      --in_flight;
      try {
        const ckks::Bytes msg = receive_bytes(MPI_ANY_SOURCE, kResultTag, status);  // consumed even when damaged
        receive_result(msg, status.MPI_SOURCE, first_task, rings, out, local);
      } catch (const std::exception& e) {
        if (error.empty()) error = e.what();
        pending.clear();
      }
      in_flight += dispatch(status.MPI_SOURCE) ? 1 : 0;
    }
    if (!error.empty()) throw std::runtime_error(error);
    local.seconds = seconds_since(start);
    if (stats) *stats = std::move(local);
    return out;
  }

 private:
  // One worker's answer into `out` and `local`; throws on a failed or unknown task.
  static void receive_result(const ckks::Bytes& msg, int rank, std::size_t first_task, const TaskRings& rings,
                             std::vector<ckks::Ciphertext>& out, RunStats& local) {
    const auto t0 = std::chrono::steady_clock::now();
    ckks::ByteReader r(msg);
    ResultHeader h{};
    h.task = r.get<std::uint64_t>("MPI result") - first_task;  // wraps to a huge value when below
    h.status = r.get<std::uint64_t>("MPI result");
    h.task_seconds = r.get<double>("MPI result");
    h.transfer_seconds = r.get<double>("MPI result");
    const auto payload = r.get_blob("MPI result");
    if (h.task >= out.size()) throw std::runtime_error("MPI: a worker answered an unknown task");
    if (h.status != 0)
      throw std::runtime_error("task " + std::to_string(first_task + h.task) + " failed on MPI rank " +
                               std::to_string(rank) + ": " + std::string(payload.begin(), payload.end()));
    out[h.task] = ckks::load_ciphertext(rings.output, payload);
    local.task_seconds[h.task] = h.task_seconds;
    local.transfer_seconds += seconds_since(t0) + h.transfer_seconds;
    local.transfer_bytes += msg.size();
  }

  int size_;
};

}  // namespace

MpiSession::MpiSession(int* argc, char*** argv) {
  int provided = 0;
  check(MPI_Init_thread(argc, argv, MPI_THREAD_FUNNELED, &provided), "init");
  MPI_Comm_rank(MPI_COMM_WORLD, &rank_);
  MPI_Comm_size(MPI_COMM_WORLD, &size_);
}

MpiSession::~MpiSession() { MPI_Finalize(); }

void MpiSession::abort(int code) const {
  MPI_Abort(MPI_COMM_WORLD, code);
  std::_Exit(code);  // MPI_Abort does not return; should it, this rank still ends
}

std::unique_ptr<Executor> make_mpi_executor(const MpiSession& session) {
  return std::make_unique<MpiExecutor>(session);
}

void serve_mpi_tasks(const MpiSession& session, const TaskRings& rings, const TaskFunction& task) {
  if (session.rank() == 0) throw std::logic_error("rank 0 coordinates; it does not serve tasks");
  for (;;) {
    MPI_Status status;
    wait_for_message(0, MPI_ANY_TAG, status);
    if (status.MPI_TAG == kStopTag) {
      MPI_Recv(nullptr, 0, MPI_BYTE, 0, kStopTag, MPI_COMM_WORLD, MPI_STATUS_IGNORE);
      return;
    }
    const ckks::Bytes msg = receive_bytes(0, kTaskTag, status);
    ckks::ByteWriter w;
    std::uint64_t t = 0;
    ckks::Bytes result;
    double task_s = 0, transfer_s = 0;
    std::uint64_t code = 0;
    try {
      ckks::ByteReader r(msg);
      t = r.get<std::uint64_t>("MPI task");
      auto t0 = std::chrono::steady_clock::now();
      const ckks::Ciphertext x = ckks::load_ciphertext(rings.input, r.get_blob("MPI task"));
      transfer_s = seconds_since(t0);
      t0 = std::chrono::steady_clock::now();
      const ckks::Ciphertext y = task(t, x);
      task_s = seconds_since(t0);
      t0 = std::chrono::steady_clock::now();
      result = ckks::save(rings.output, y);
      transfer_s += seconds_since(t0);
    } catch (const std::exception& e) {
      code = 1;
      const std::string m = e.what();
      result.assign(m.begin(), m.end());
    }
    w.put<std::uint64_t>(t);
    w.put<std::uint64_t>(code);
    w.put<double>(task_s);
    w.put<double>(transfer_s);
    w.put_blob(result);
    send_bytes(w.bytes(), 0, kResultTag);
  }
}

void announce_mpi_job(const MpiSession& session, const std::string& job) {
  if (session.rank() != 0) throw std::logic_error("rank 0 announces the jobs");
  for (int r = 1; r < session.size(); ++r) send_bytes(ckks::Bytes(job.begin(), job.end()), r, kJobTag);
}

std::string next_mpi_job(const MpiSession& session) {
  if (session.rank() == 0) throw std::logic_error("rank 0 announces the jobs; it does not wait for them");
  MPI_Status status;
  const ckks::Bytes job = receive_bytes(0, kJobTag, status);
  return std::string(job.begin(), job.end());
}

}  // namespace pfhe::runtime
