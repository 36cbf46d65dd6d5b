// Where independent tasks run (the patch backbones of a PatchCNN, the branches of a
// graph's parallel regions): sequentially, on a pool of threads, in forked worker processes (which inherit the compiled model and keys
// copy-on-write and exchange serialized ciphertexts), or on MPI ranks (runtime/mpi.h).
// An executor only places work: every task runs the same deterministic evaluation code on
// the same input, so all executors give byte-identical outputs. What joins the tasks
// (aggregation, normalisation, matching, a graph's other steps) stays with the caller,
// encrypted.
// Layer: src/runtime may depend on ckks and nn; nothing below includes it.
#pragma once
#include <cstddef>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "ckks/ciphertext.h"
#include "ckks/context.h"
#include "ckks/evaluator.h"
#include "nn/compiled_graph.h"

namespace pfhe::runtime {

// Task t maps input t to output t (for a PatchCNN: backbone t with its head block).
using TaskFunction = std::function<ckks::Ciphertext(std::size_t task, const ckks::Ciphertext& input)>;

// The rings of a task's input and of its output (they differ when the backbones switch to
// the half ring): what serialized ciphertexts are validated against on arrival.
struct TaskRings {
  const ckks::Context& input;
  const ckks::Context& output;
};

struct RunStats {
  double seconds = 0;            // wall time of the whole run
  double transfer_seconds = 0;   // serializing, moving and validating ciphertexts (fork / MPI)
  std::size_t transfer_bytes = 0;
  std::vector<double> task_seconds;  // per task, measured where it ran
  // A graph's steps run in place (outside its parallel regions), in order; empty for a
  // PatchCNN. Filled by KeySet::infer.
  std::vector<nn::CompiledGraph::StepTiming> steps;
};

class Executor {
 public:
  virtual ~Executor() = default;
  virtual std::string name() const = 0;
  virtual std::size_t workers() const = 0;
  // Runs every task; outputs in task order. Input t is task first_task + t: a model whose
  // branches run in several rounds (the regions of a graph) numbers its tasks across
  // rounds, so that a worker serving a fixed task function (an MPI rank) knows which one
  // it is given. Throws std::runtime_error naming the task when one fails (a worker's
  // exception, a crashed or killed worker process).
  virtual std::vector<ckks::Ciphertext> run(const TaskRings& rings, const TaskFunction& task,
                                            const std::vector<ckks::Ciphertext>& inputs, RunStats* stats = nullptr,
                                            std::size_t first_task = 0) = 0;
};

std::unique_ptr<Executor> make_sequential_executor();
// W threads share the caller's model and keys; each task runs with one OpenMP thread.
// Thread-safe: runs that overlap (a service's jobs, from their own threads) share the W
// threads, their tasks taken first come, first served; no thread is alive between runs.
std::unique_ptr<Executor> make_thread_executor(std::size_t workers);
// Forks W single-threaded workers per run (the parent must have no other thread alive:
// it checks and refuses otherwise). Ciphertexts travel serialized over socket pairs and
// are validated on arrival. A worker that dies is reported within about a second, the
// others are killed and every child is reaped; with `retries` > 0 its task is first run
// again on a new worker, up to `retries` times per task (a note goes to stderr; a task
// that throws is not retried: it would throw again).
std::unique_ptr<Executor> make_fork_executor(std::size_t workers, std::size_t retries = 0);
// One of the above by name: "seq", "threads" or "fork" (`retries` for fork only). Throws
// std::invalid_argument for another name or no workers. MPI executors are made from an
// initialised MPI session (runtime/mpi.h).
std::unique_ptr<Executor> make_executor(const std::string& name, std::size_t workers, std::size_t retries = 0);

// The task function of a compiled graph: task t is branch b of region r, numbered across
// regions in order (graph_task_offsets gives each region's first task). `half` is required
// exactly when a branch runs steps in the half ring.
TaskFunction graph_tasks(const nn::CompiledGraph& graph, const ckks::Evaluator& eval,
                         const nn::HalfRingEvaluation* half = nullptr,
                         const ckks::EncapsulationKeys* encapsulation = nullptr);
std::vector<std::size_t> graph_task_offsets(const nn::CompiledGraph& graph);

// Tasks that compile their branch from the model when they run (nn::CompiledGraph::
// compile_task, diagonals encoded just in time) and drop it on return, so a worker holds one
// branch at a time: the server's mode for models whose compiled artefact would not fit (an
// 8x8 grid), and the "recompile in every worker" baseline (what the Orion prototype's
// workers did). `per_task` is `model` compiled with nn::Compilation::kPerTask (both must
// outlive the function); outputs equal graph_tasks' on the fully compiled model.
TaskFunction compiling_graph_tasks(const nn::Graph& model, const nn::CompiledGraph& per_task,
                                   const ckks::Evaluator& eval, const nn::HalfRingEvaluation* half = nullptr);

// Thread count of this process (from /proc/self/task).
std::size_t live_thread_count();

}  // namespace pfhe::runtime
