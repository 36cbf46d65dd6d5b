// Inference in processes of their own, for `pfhe serve --executor fork` (docs/CLI.md,
// "Service"). The fork pool (runtime/executor.h) forks its workers from a parent with no
// other thread alive, and a server has its HTTP and job threads; so each job slot of the
// server owns an inference process, started with posix_spawn (safe from a threaded
// parent) as the hidden command `pfhe inference-process`. It loads the model itself (a
// compiled artefact is mapped: its pages are the page cache's, shared with the server),
// keeps one OpenMP thread, and runs each job on a fork pool whose dead workers' tasks are
// run again (`retries`). A job travels as one frame (runtime/transport.h): the path of the
// key set's key cache and the encrypted input; the answer is the encrypted result or the
// error. The process keeps the last key set mapped. It exits when the server goes (end of
// its socket, or the kernel's parent-death signal); a process that dies while it runs a job
// is started again and the job run once more on the new one.
//
// `pfhe serve --executor mpi`: each job slot owns an MPI job instead, started as
// `mpirun -np W+1 pfhe inference-process --executor mpi --socket PATH` (mpi_inference_process.cpp).
// Rank 0 connects to the server on a Unix socket in a private directory (mpirun does not
// pass descriptors on to its ranks), is that slot's inference process and runs each job on
// the MPI executor; ranks 1..W map the job's key set and run its branch tasks. A rank that
// dies ends its MPI job (mpirun stops the others): the server starts a new one and runs the
// job once more, as for a dead inference process. When the server goes, rank 0 sees the end
// of its socket once it is idle and ends every rank.
#pragma once
#include <sys/types.h>

#include <condition_variable>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <span>
#include <string>
#include <vector>

#include "ckks/byte_stream.h"

namespace pfhe::app {

class PendingConnection;  // mpi_inference_process.cpp

struct InferenceProcessOptions {
  std::string params, model;
  std::string executor = "fork";  // or "mpi"
  std::size_t workers = 2;        // fork workers (MPI worker ranks) per job
  std::size_t retries = 1;        // fork: runs of a task again after its worker died
  std::string mpirun = "mpirun";  // mpi: the launcher
};

class InferenceProcesses {
 public:
  // Starts `count` processes (one per job that may run at once).
  InferenceProcesses(InferenceProcessOptions options, std::size_t count);
  ~InferenceProcesses();
  InferenceProcesses(const InferenceProcesses&) = delete;
  InferenceProcesses& operator=(const InferenceProcesses&) = delete;

  // The serialized result of `input` under the key set whose cache is `key_cache`, from an
  // idle process (waits for one). Throws std::runtime_error with the process's error, or
  // when a process died twice on this job.
  ckks::Bytes infer(const std::string& key_cache, std::span<const std::uint8_t> input);
  // Every process started (for logs and tests).
  std::vector<pid_t> pids() const;

 private:
  struct Process {
    pid_t pid = -1;
    int fd = -1;
    // mpi: rank 0 has not connected yet (the server does not wait for mpirun to start).
    std::shared_ptr<PendingConnection> pending;
  };
  Process spawn() const;
  Process spawn_mpi_job() const;
  // Takes rank 0's connection when it is still pending (waits for it); throws when mpirun
  // ended first or rank 0 did not connect in time (the process is left for stop()).
  void connect(Process& p) const;
  // Ends a process that failed (an MPI job through mpirun, which ends its ranks); its status.
  int stop(const Process& p) const;

  InferenceProcessOptions options_;
  mutable std::mutex mutex_;
  std::condition_variable idle_changed_;
  std::vector<Process> idle_;
  std::vector<pid_t> all_;
};

// `pfhe inference-process`: serves jobs arriving on socket `fd` until it closes.
int run_inference_process(const InferenceProcessOptions& options, int fd);
// `pfhe inference-process --executor mpi` on every rank of the MPI job (rank 0 connects to
// `socket_path`). MPI_Init takes argc and argv.
int run_mpi_inference_process(const InferenceProcessOptions& options, const std::string& socket_path, int* argc,
                              char*** argv);

// For both kinds: a job as it travels to an inference process, and the loop that answers
// each job (its result, or its error as the answer) until the socket closes.
struct JobRequest {
  std::string key_cache;
  std::span<const std::uint8_t> input;
};
void answer_jobs(int fd, const std::function<ckks::Bytes(const JobRequest&)>& run);
// posix_spawnp of args (args[0] the program) with no signal blocked, input from /dev/null and,
// when child_socket >= 0, that descriptor as the child's 3.
pid_t spawn_process(const std::vector<std::string>& args, int child_socket);
// `pfhe inference-process` with the options (this executable).
std::vector<std::string> inference_process_arguments(const InferenceProcessOptions& options);

}  // namespace pfhe::app
