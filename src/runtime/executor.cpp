#include "runtime/executor.h"
#include "runtime/process_stats.h"

#include <omp.h>

#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <deque>
#include <exception>
#include <filesystem>
#include <mutex>
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

// W threads shared by every run in progress: runs that overlap (a service's jobs) queue
// their tasks in one FIFO, and each thread takes the next task of whichever run. The
// threads start with the first run and end with the last one in progress, so that none is
// left alive between runs (a fork pool needs a single-threaded parent).
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
    RunState state{task, inputs, first_task, std::vector<ckks::Ciphertext>(inputs.size()),
                   std::vector<double>(inputs.size(), 0.0), std::vector<std::exception_ptr>(inputs.size()),
                   inputs.size(), {}};
    begin(state);
    {
      std::unique_lock lock(mutex_);
      state.done.wait(lock, [&] { return state.left == 0; });
    }
    end();
    for (std::size_t t = 0; t < inputs.size(); ++t)
      if (state.errors[t]) {
        try {
          std::rethrow_exception(state.errors[t]);
        } catch (const std::exception& e) {
          throw std::runtime_error("task " + std::to_string(first_task + t) + " failed: " + e.what());
        }
      }
    if (stats) *stats = RunStats{seconds_since(start), 0, 0, std::move(state.times), {}};
    return std::move(state.out);
  }

 private:
  struct RunState {
    const TaskFunction& task;
    const std::vector<ckks::Ciphertext>& inputs;
    std::size_t first_task;
    std::vector<ckks::Ciphertext> out;
    std::vector<double> times;
    std::vector<std::exception_ptr> errors;
    std::size_t left;  // tasks not finished (under mutex_)
    std::condition_variable done;
  };
  struct Item {
    RunState* run;
    std::size_t task;
  };

  // Queues the run's tasks; starts the threads when no run was in progress.
  void begin(RunState& state) {
    const std::lock_guard life(lifecycle_);
    const std::lock_guard lock(mutex_);
    for (std::size_t t = 0; t < state.inputs.size(); ++t) queue_.push_back({&state, t});
    ++active_;
    if (threads_.empty()) {
      stopping_ = false;
      for (std::size_t w = 0; w < workers_; ++w) threads_.emplace_back([this] { work(); });
    }
    ready_.notify_all();
  }
  // The last run in progress ends the threads.
  void end() {
    const std::lock_guard life(lifecycle_);
    std::vector<std::thread> finished;
    {
      const std::lock_guard lock(mutex_);
      if (--active_ == 0) {
        stopping_ = true;
        finished.swap(threads_);
        ready_.notify_all();
      }
    }
    for (auto& th : finished) th.join();
  }
  void work() {
    omp_set_num_threads(1);  // the pool, not OpenMP, uses the cores
    for (;;) {
      Item item{};
      {
        std::unique_lock lock(mutex_);
        ready_.wait(lock, [&] { return stopping_ || !queue_.empty(); });
        if (queue_.empty()) return;
        item = queue_.front();
        queue_.pop_front();
      }
      RunState& run = *item.run;
      const auto t0 = std::chrono::steady_clock::now();
      try {
        run.out[item.task] = run.task(run.first_task + item.task, run.inputs[item.task]);
      } catch (...) {
        run.errors[item.task] = std::current_exception();
      }
      run.times[item.task] = seconds_since(t0);
      const std::lock_guard lock(mutex_);
      if (--run.left == 0) run.done.notify_all();
    }
  }

  std::size_t workers_;
  std::mutex lifecycle_;  // starting and ending the threads
  std::mutex mutex_;      // the queue and the runs' counts
  std::condition_variable ready_;
  std::deque<Item> queue_;
  std::vector<std::thread> threads_;
  std::size_t active_ = 0;
  bool stopping_ = false;
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
