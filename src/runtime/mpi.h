// MPI placement of tasks (Open MPI, started with mpirun). Every rank loads the compiled
// model and evaluation keys itself; rank 0 runs the MPI executor, the other ranks serve
// tasks until rank 0's executor is destroyed. Ciphertexts travel serialized and are
// validated on arrival, as in the fork pool. Built as the separate library pfhe_mpi.
#pragma once
#include <memory>

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

 private:
  int rank_ = 0, size_ = 1;
};

// On rank 0: ranks 1..size-1 are the workers (tasks are handed out dynamically). With a
// single rank the tasks run locally, in order. Its destructor tells the workers to stop.
std::unique_ptr<Executor> make_mpi_executor(const MpiSession& session);

// On ranks other than 0: run tasks sent by rank 0 until it says stop.
void serve_mpi_tasks(const MpiSession& session, const TaskRings& rings, const TaskFunction& task);

}  // namespace pfhe::runtime
