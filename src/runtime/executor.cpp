#include "runtime/executor.h"
#include "runtime/process_stats.h"

#include <omp.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <exception>
#include <filesystem>
#include <stdexcept>
#include <thread>

namespace pfhe::runtime {

namespace {

class SequentialExecutor final : public Executor {
 public:
  std::string name() const override { return "seq"; }
  std::size_t workers() const override { return 1; }
  std::vector<ckks::Ciphertext> run(const TaskRings&, const TaskFunction& task,
                                    const std::vector<ckks::Ciphertext>& inputs, RunStats* stats,
                                    std::size_t first_task) override {
    const auto start = std::chrono::steady_clock::now();
    std::vector<ckks::Ciphertext> out;
    std::vector<double> times;
    for (std::size_t t = 0; t < inputs.size(); ++t) {
      const auto t0 = std::chrono::steady_clock::now();
      out.push_back(task(first_task + t, inputs[t]));
      times.push_back(seconds_since(t0));
    }
    if (stats) *stats = RunStats{seconds_since(start), 0, 0, std::move(times), {}};
    return out;
  }
};

class ThreadExecutor final : public Executor {
 public:
  explicit ThreadExecutor(std::size_t workers) : workers_(workers) {
    if (workers == 0) throw std::invalid_argument("thread executor: needs at least one worker");
  }
  std::string name() const override { return "threads"; }
  std::size_t workers() const override { return workers_; }
  std::vector<ckks::Ciphertext> run(const TaskRings&, const TaskFunction& task,
                                    const std::vector<ckks::Ciphertext>& inputs, RunStats* stats,
                                    std::size_t first_task) override {
    const auto start = std::chrono::steady_clock::now();
    std::vector<ckks::Ciphertext> out(inputs.size());
    std::vector<double> times(inputs.size(), 0.0);
    std::vector<std::exception_ptr> errors(inputs.size());
    std::atomic<std::size_t> next{0};
    const auto work = [&] {
      omp_set_num_threads(1);  // the pool, not OpenMP, uses the cores
      for (std::size_t t = next++; t < inputs.size(); t = next++) {
        const auto t0 = std::chrono::steady_clock::now();
        try {
          out[t] = task(first_task + t, inputs[t]);
        } catch (...) {
          errors[t] = std::current_exception();
        }
        times[t] = seconds_since(t0);
      }
    };
    std::vector<std::thread> pool;
    for (std::size_t w = 0; w < std::min(workers_, inputs.size()); ++w) pool.emplace_back(work);
    for (auto& th : pool) th.join();
    for (std::size_t t = 0; t < inputs.size(); ++t)
      if (errors[t]) {
        try {
          std::rethrow_exception(errors[t]);
        } catch (const std::exception& e) {
          throw std::runtime_error("task " + std::to_string(first_task + t) + " failed: " + e.what());
        }
      }
    if (stats) *stats = RunStats{seconds_since(start), 0, 0, std::move(times), {}};
    return out;
  }

 private:
  std::size_t workers_;
};

}  // namespace

std::unique_ptr<Executor> make_sequential_executor() { return std::make_unique<SequentialExecutor>(); }
std::unique_ptr<Executor> make_thread_executor(std::size_t workers) { return std::make_unique<ThreadExecutor>(workers); }

std::unique_ptr<Executor> make_executor(const std::string& name, std::size_t workers, std::size_t retries) {
  if (workers == 0) throw std::invalid_argument("an executor needs at least 1 worker");
  if (name == "seq") return make_sequential_executor();
  if (name == "threads") return make_thread_executor(workers);
  if (name == "fork") return make_fork_executor(workers, retries);
  throw std::invalid_argument("unknown executor '" + name + "' (seq, threads, fork; mpi from the CLI under mpirun)");
}

std::vector<std::size_t> graph_task_offsets(const nn::CompiledGraph& graph) {
  std::vector<std::size_t> first{0};
  for (const auto& region : graph.parallel_regions()) first.push_back(first.back() + region.branches.size());
  return first;  // one more than the regions: the last is the task count
}

namespace {
// Task t's region and branch; throws for a task the graph does not have.
std::pair<std::size_t, std::size_t> region_and_branch(const std::vector<std::size_t>& first, std::size_t t) {
  if (t >= first.back())
    throw std::invalid_argument("task " + std::to_string(t) + " of a graph with " + std::to_string(first.back()) +
                                " branch tasks");
  const auto region = static_cast<std::size_t>(std::upper_bound(first.begin(), first.end(), t) - first.begin()) - 1;
  return {region, t - first[region]};
}
}  // namespace

TaskFunction graph_tasks(const nn::CompiledGraph& graph, const ckks::Evaluator& eval,
                         const nn::HalfRingEvaluation* half, const ckks::EncapsulationKeys* encapsulation) {
  return [&graph, &eval, half, encapsulation, first = graph_task_offsets(graph)](std::size_t t,
                                                                                  const ckks::Ciphertext& in) {
    const auto [region, branch] = region_and_branch(first, t);
    return graph.run_branch(eval, region, branch, in, nullptr, encapsulation, half);
  };
}

TaskFunction compiling_graph_tasks(const nn::Graph& model, const nn::CompiledGraph& per_task,
                                   const ckks::Evaluator& eval, const nn::HalfRingEvaluation* half) {
  if (!per_task.compiles_per_task())
    throw std::invalid_argument("compiling tasks need a graph compiled per task (nn::Compilation::kPerTask)");
  return [&model, &per_task, &eval, half, first = graph_task_offsets(per_task)](std::size_t t,
                                                                                const ckks::Ciphertext& in) {
    const auto [region, branch] = region_and_branch(first, t);
    // Compiled here, dropped on return: a worker holds one branch at a time.
    return per_task.compile_task(model, region, branch).run_branch(eval, region, branch, in, nullptr, nullptr, half);
  };
}

std::size_t live_thread_count() {
  std::size_t n = 0;
  for ([[maybe_unused]] const auto& entry : std::filesystem::directory_iterator("/proc/self/task")) ++n;
  return n;
}

}  // namespace pfhe::runtime
