// `pfhe serve --executor mpi` (inference_process.h): the server's side starts an MPI job
// per job slot through mpirun and takes rank 0's connection; the ranks' side runs the jobs.
#include <omp.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <memory>
#include <stdexcept>

#include "inference_process.h"
#include "runtime/client_server.h"
#ifdef PFHE_HAVE_MPI
#include "runtime/mpi.h"
#endif

namespace pfhe::app {

namespace {

// Ranks load the model before they take a job; rank 0 connects first, so this is only
// mpirun's start (about a second), with room for a loaded machine.
constexpr int kConnectSeconds = 120;

sockaddr_un socket_address(const std::string& path) {
  sockaddr_un address{};
  address.sun_family = AF_UNIX;
  if (path.size() >= sizeof address.sun_path)
    throw std::runtime_error("MPI inference process: socket path too long (set TMPDIR to a shorter directory): " +
                             path);
  std::memcpy(address.sun_path, path.c_str(), path.size() + 1);
  return address;
}

}  // namespace

// A listening Unix socket in a directory only this user can enter, removed with the object:
// where rank 0 of an MPI job connects.
class PendingConnection {
 public:
  PendingConnection() {
    const char* tmp = std::getenv("TMPDIR");
    std::string dir = std::string(tmp && *tmp ? tmp : "/tmp") + "/pfhe-mpi-XXXXXX";
    if (mkdtemp(dir.data()) == nullptr)
      throw std::runtime_error("MPI inference process: cannot make a directory in " + dir + ": " + std::strerror(errno));
    dir_ = dir;
    path_ = dir_ + "/rank0";
    const sockaddr_un address = socket_address(path_);
    fd_ = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd_ < 0 || bind(fd_, reinterpret_cast<const sockaddr*>(&address), sizeof address) != 0 || listen(fd_, 1) != 0) {
      const std::string reason = std::strerror(errno);
      release();  // (no destructor runs for an object that was not made)
      throw std::runtime_error("MPI inference process: cannot listen on " + path_ + ": " + reason);
    }
  }
  ~PendingConnection() { release(); }
  PendingConnection(const PendingConnection&) = delete;
  PendingConnection& operator=(const PendingConnection&) = delete;
  const std::string& path() const { return path_; }
  int fd() const { return fd_; }

 private:
  void release() {
    if (fd_ >= 0) close(fd_);
    fd_ = -1;
    std::error_code ignored;
    std::filesystem::remove_all(dir_, ignored);
  }
  std::string dir_, path_;
  int fd_ = -1;
};

InferenceProcesses::Process InferenceProcesses::spawn_mpi_job() const {
  auto listener = std::make_shared<PendingConnection>();
  // --oversubscribe: rank 0 mostly waits (without spinning: runtime/mpi.h), so W workers
  // and it fit W cores. Open MPI refuses root unless told; a server run as root is the
  // operator's decision, already made.
  std::vector<std::string> args = {options_.mpirun, "-np", std::to_string(options_.workers + 1), "--oversubscribe"};
  if (geteuid() == 0) args.push_back("--allow-run-as-root");
  const std::vector<std::string> rank_args = inference_process_arguments(options_);
  args.insert(args.end(), rank_args.begin(), rank_args.end());
  args.insert(args.end(), {"--socket", listener->path()});
  return {spawn_process(args, -1), -1, std::move(listener)};
}

void InferenceProcesses::connect(Process& p) const {
  if (!p.pending) return;
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(kConnectSeconds);
  for (;;) {
    pollfd ready{p.pending->fd(), POLLIN, 0};
    if (poll(&ready, 1, 200) == 1) {
      p.fd = accept4(p.pending->fd(), nullptr, nullptr, SOCK_CLOEXEC);
      if (p.fd >= 0) {
        p.pending.reset();  // the socket's directory goes
        return;
      }
    }
    siginfo_t info{};  // (WNOWAIT: stop() reaps it and reports how it ended)
    if (waitid(P_PID, static_cast<id_t>(p.pid), &info, WEXITED | WNOHANG | WNOWAIT) == 0 && info.si_pid == p.pid)
      throw std::runtime_error(options_.mpirun + " ended before rank 0 connected (its messages are in the server's log)");
    if (std::chrono::steady_clock::now() > deadline)
      throw std::runtime_error("rank 0 of " + options_.mpirun + " did not connect within " +
                               std::to_string(kConnectSeconds) + " s");
  }
}

#ifdef PFHE_HAVE_MPI

namespace {

int connect_to(const std::string& path) {
  const sockaddr_un address = socket_address(path);
  const int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0 || connect(fd, reinterpret_cast<const sockaddr*>(&address), sizeof address) != 0)
    throw std::runtime_error("MPI inference process: cannot connect to the server at " + path + ": " +
                             std::strerror(errno));
  return fd;
}

// The ranks of one MPI job: rank 0 answers the server's jobs, the others run their tasks.
void run_ranks(const runtime::MpiSession& mpi, const InferenceProcessOptions& o, const std::string& socket_path) {
  const int fd = mpi.rank() == 0 ? connect_to(socket_path) : -1;  // first: the server waits for it
  const runtime::ServedModel model(o.params, o.model);
  runtime::LastKeySet keys(model);
  if (mpi.rank() != 0) {
    // A key set rank 0 has just loaded and checked; should it fail here, the exception ends
    // the MPI job (run_mpi_inference_process) and the server runs the job on a new one.
    for (std::string path; !(path = runtime::next_mpi_job(mpi)).empty();) {
      const runtime::KeySet& set = keys.get(path);
      runtime::serve_mpi_tasks(mpi, set.rings(), set.tasks());
    }
    return;
  }
  answer_jobs(fd, [&](const JobRequest& job) {
    const runtime::KeySet& set = keys.get(job.key_cache);
    const runtime::CiphertextFile in = runtime::parse_ciphertext_file(job.input, model.context(), "the encrypted input");
    runtime::announce_mpi_job(mpi, job.key_cache);
    const auto executor = runtime::make_mpi_executor(mpi);  // tells the ranks the job is over when it goes
    return runtime::ciphertext_file_bytes(set.output_context(), set.infer(in, *executor));
  });
  runtime::announce_mpi_job(mpi, "");  // the server has gone: every rank ends
  close(fd);
}

}  // namespace

int run_mpi_inference_process(const InferenceProcessOptions& o, const std::string& socket_path, int* argc,
                              char*** argv) {
  runtime::MpiSession mpi(argc, argv);
  omp_set_num_threads(1);  // a rank per core
  try {
    run_ranks(mpi, o, socket_path);
  } catch (const std::exception& e) {
    // MPI_Finalize would wait for the other ranks: this rank's failure ends the MPI job.
    std::fprintf(stderr, "pfhe inference-process (MPI rank %d): %s\n", mpi.rank(), e.what());
    mpi.abort(1);
  }
  return 0;
}

#else

int run_mpi_inference_process(const InferenceProcessOptions&, const std::string&, int*, char***) {
  throw std::invalid_argument("this pfhe was built without MPI (install libopenmpi-dev and rebuild)");
}

#endif

}  // namespace pfhe::app
