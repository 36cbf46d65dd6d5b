// MPI placement of tasks (Open MPI, started with mpirun). Every rank loads the compiled
// model and evaluation keys itself; rank 0 runs the MPI executor, the other ranks serve
// tasks until rank 0's executor is destroyed. Ciphertexts travel serialized and are
// validated on arrival, as in the fork pool. Built as the separate library pfhe_mpi.
// A rank waiting for a message sleeps between polls instead of Open MPI's spinning wait:
// rank 0 waits through whole runs beside workers that need the cores (and a service's
// ranks wait between jobs).
#pragma once
#include <memory>
#include <string>

#include "runtime/executor.h"

namespace pfhe::runtime {

// MPI_Init_thread / MPI_Finalize for the lifetime of the object.
class MpiSession {
 public:
  MpiSession(int* argc, char*** argv);
  ~MpiSession();
  MpiSession(const MpiSession&) = delete;
  MpiSession& operator=(const MpiSession&) = delete;
  int rank() const { return rank_; }
  int size() const { return size_; }
  // MPI_Abort: ends every rank of the job (MPI_Finalize would wait for the others).
  [[noreturn]] void abort(int code) const;

 private:
  int rank_ = 0, size_ = 1;
};

// On rank 0: ranks 1..size-1 are the workers (tasks are handed out dynamically). With a
// single rank the tasks run locally, in order. Its destructor tells the workers to stop.
std::unique_ptr<Executor> make_mpi_executor(const MpiSession& session);

// On ranks other than 0: run tasks sent by rank 0 until it says stop.
void serve_mpi_tasks(const MpiSession& session, const TaskRings& rings, const TaskFunction& task);

// Runs of several jobs on one set of ranks (a service's, apps/pfhe/inference_process.h):
// rank 0 tells the others what the next job is (text of the caller's meaning, e.g. the
// key set to load) before making its executor for the job; "" ends their job loop.
void announce_mpi_job(const MpiSession& session, const std::string& job);
// On ranks other than 0: the next announce_mpi_job's text.
std::string next_mpi_job(const MpiSession& session);

}  // namespace pfhe::runtime
