#include "bench.h"

#include <omp.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <filesystem>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <stdexcept>

#include "ckks/serialization.h"
#include "nn/graph_file.h"
#include "nn/model_file.h"
#include "runtime/client_server.h"
#include "runtime/process_stats.h"

namespace pfhe::app {

namespace fs = std::filesystem;
using runtime::Clock;
using runtime::seconds_since;

std::string BenchRun::label() const { return executor == "seq" ? "seq" : executor + " W=" + std::to_string(workers); }

std::vector<BenchRun> parse_bench_runs(const std::string& text) {
  std::vector<BenchRun> runs;
  std::size_t start = 0;
  while (start <= text.size()) {
    const std::size_t end = std::min(text.find(',', start), text.size());
    const std::string item = text.substr(start, end - start);
    const std::size_t colon = item.find(':');
    BenchRun run{item.substr(0, colon), 1};
    const bool known = run.executor == "seq" || run.executor == "threads" || run.executor == "fork" ||
                       run.executor == "recompile";
    bool valid = known && (run.executor == "seq") == (colon == std::string::npos);
    if (valid && colon != std::string::npos) {
      const std::string count = item.substr(colon + 1);
      valid = !count.empty() && count.size() <= 4 && count.find_first_not_of("0123456789") == std::string::npos &&
              std::stoul(count) >= 1;
      if (valid) run.workers = std::stoul(count);
    }
    if (!valid)
      throw std::invalid_argument("--runs: '" + item +
                                  "' is not one of seq, threads:W, fork:W, recompile:W (W from 1 to 9999)");
    runs.push_back(run);
    start = end + 1;
  }
  return runs;
}

namespace {

// The model file of a "recompile" run compiled per task as the served model was compiled
// (its input level and scale, lanes and ring switch); checked to be that model.
struct Recompiling {
  nn::Graph graph;
  nn::CompiledGraph per_task;

  Recompiling(const std::string& model_file, const runtime::ServedModel& served)
      : graph(nn::is_graph_model_file(model_file) ? nn::load_graph_file(model_file)
                                                  : nn::load_model_file(model_file).to_graph()),
        per_task(nn::CompiledGraph::compile(graph, served.encoder(), served.graph().input_level(),
                                            served.graph().input_scale(), 0, nn::Compilation::kPerTask, nullptr,
                                            nullptr, served.graph().input_layout().lanes, served.half_ring())) {
    if (per_task.rotation_levels() != served.rotation_levels() || per_task.inputs() != served.inputs())
      throw std::invalid_argument("--model-file " + model_file + " is not the model the served artefact was compiled from");
  }
};

struct RunResult {
  BenchRun run;
  bool ok = false;
  double infer_seconds = 0, executor_seconds = 0, transfer_seconds = 0, peak_rss_gb = 0;
  std::size_t transfer_bytes = 0;
  ckks::Bytes output;  // the serialized encrypted embedding
};

double peak_rss_with_children_gb() {
  rusage children{};
  getrusage(RUSAGE_CHILDREN, &children);
  return std::max(runtime::peak_rss_gb(), static_cast<double>(children.ru_maxrss) / (1024.0 * 1024.0));
}

// Inside the forked child: one run, its report written to `report_path`.
int run_child(const BenchRun& run, const runtime::Server& server, const runtime::CiphertextFile& inputs,
              const Recompiling* recompiling, const std::string& output_path, const std::string& report_path) {
  try {
    // Sequential runs use every core inside operations, thread workers one each; fork
    // workers need this process single-threaded, as the parent left it.
    if (run.executor == "seq" || run.executor == "threads") omp_set_num_threads(omp_get_num_procs());
    // "recompile" runs its recompiling tasks on fork workers.
    const auto executor = runtime::make_executor(run.executor == "recompile" ? "fork" : run.executor, run.workers);
    const runtime::TaskFunction tasks =
        run.executor == "recompile"
            ? runtime::compiling_graph_tasks(recompiling->graph, recompiling->per_task, server.evaluators().big(),
                                             server.evaluators().half_ring())
            : server.tasks();
    const auto start = Clock::now();
    runtime::RunStats stats;
    const runtime::CiphertextFile out = server.key_set().infer(inputs, *executor, tasks, &stats);
    const double seconds = seconds_since(start);
    runtime::write_ciphertexts(output_path, server.output_context(), out);
    const nlohmann::json report = {{"infer_seconds", seconds},
                                   {"executor_seconds", stats.seconds},
                                   {"transfer_seconds", stats.transfer_seconds},
                                   {"transfer_bytes", stats.transfer_bytes},
                                   {"peak_rss_gb", peak_rss_with_children_gb()}};
    ckks::write_text_file(report_path, report.dump());
    return 0;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "pfhe bench: %s failed: %s\n", run.label().c_str(), e.what());
    return 1;
  }
}

RunResult run_in_child(const BenchRun& run, const runtime::Server& server, const runtime::CiphertextFile& inputs,
                       const Recompiling* recompiling, const fs::path& dir, std::size_t index) {
  const std::string output_path = (dir / ("run-" + std::to_string(index) + ".ct")).string();
  const std::string report_path = (dir / ("run-" + std::to_string(index) + ".json")).string();
  std::fflush(nullptr);
  const pid_t pid = fork();
  if (pid < 0) throw std::runtime_error("pfhe bench: fork failed");
  if (pid == 0) {
    const int code = run_child(run, server, inputs, recompiling, output_path, report_path);
    std::fflush(nullptr);
    _exit(code);
  }
  int status = 0;
  while (waitpid(pid, &status, 0) < 0) {
    if (errno != EINTR) throw std::runtime_error("pfhe bench: waitpid failed");
  }
  RunResult result;
  result.run = run;
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
    if (WIFSIGNALED(status))
      std::fprintf(stderr, "pfhe bench: %s: the run's process died of signal %d\n", run.label().c_str(),
                   WTERMSIG(status));
    return result;
  }
  const auto report = nlohmann::json::parse(ckks::read_text_file(report_path));
  result.ok = true;
  result.infer_seconds = report.at("infer_seconds").get<double>();
  result.executor_seconds = report.at("executor_seconds").get<double>();
  result.transfer_seconds = report.at("transfer_seconds").get<double>();
  result.transfer_bytes = report.at("transfer_bytes").get<std::size_t>();
  result.peak_rss_gb = report.at("peak_rss_gb").get<double>();
  result.output = ckks::read_file(output_path);
  return result;
}

void print_table(const std::vector<RunResult>& results, const RunResult* reference) {
  std::printf("| run | inference (s) | speedup | executor (s) | serialization (s) | serialization share | "
              "peak RSS (GB) | output |\n|---|---|---|---|---|---|---|---|\n");
  for (const RunResult& r : results) {
    if (!r.ok) {
      std::printf("| %s | failed | | | | | | |\n", r.run.label().c_str());
      continue;
    }
    const char* output = &r == reference ? "reference" : r.output == reference->output ? "byte-identical" : "DIFFERS";
    std::printf("| %s | %.1f | %.2fx | %.1f | %.3f | %.2f %% | %.1f | %s |\n", r.run.label().c_str(), r.infer_seconds,
                reference->infer_seconds / r.infer_seconds, r.executor_seconds, r.transfer_seconds,
                100.0 * r.transfer_seconds / r.infer_seconds, r.peak_rss_gb, output);
  }
}

}  // namespace

int run_bench(const BenchOptions& o) {
  const std::vector<BenchRun> runs = parse_bench_runs(o.runs);
  bool recompiles = false;
  for (const BenchRun& r : runs) recompiles |= r.executor == "recompile";
  if (recompiles && o.model_file.empty())
    throw std::invalid_argument("recompile runs need --model-file (the model weights to compile from)");
  // Forked workers need a single-threaded process: nothing here may start OpenMP threads.
  omp_set_num_threads(1);
  const auto start = Clock::now();
  std::fprintf(stderr, "[pfhe] bench: loading parameters, model and evaluation keys\n");
  const runtime::Server server(o.params, o.model, o.keys, o.lanes);
  const runtime::CiphertextFile inputs = runtime::read_ciphertexts(o.input, server.context());
  std::optional<Recompiling> recompiling;
  if (recompiles) recompiling.emplace(o.model_file, server.served());
  const double load_seconds = seconds_since(start);
  std::fprintf(stderr, "[pfhe] bench: loaded in %.1f s (model %.1f s, evaluation keys %.1f s; peak RSS %.1f GB)%s\n",
               load_seconds, server.load_seconds().model, server.load_seconds().keys, runtime::peak_rss_gb(),
               server.compiles_per_task() ? "; a model file: every task compiles its lane group" : "");

  const bool keep = !o.out_dir.empty();
  fs::path dir = keep ? fs::path(o.out_dir) : fs::temp_directory_path() / ("pfhe-bench-" + std::to_string(getpid()));
  fs::create_directories(dir);
  std::vector<RunResult> results;
  for (std::size_t i = 0; i < runs.size(); ++i) {
    std::fprintf(stderr, "[pfhe] bench: run %zu/%zu: %s\n", i + 1, runs.size(), runs[i].label().c_str());
    results.push_back(run_in_child(runs[i], server, inputs, recompiling ? &*recompiling : nullptr, dir, i));
    const RunResult& r = results.back();
    if (r.ok)
      std::fprintf(stderr, "[pfhe] bench: %s: %.1f s (serialization %.3f s), peak RSS %.1f GB\n",
                   r.run.label().c_str(), r.infer_seconds, r.transfer_seconds, r.peak_rss_gb);
  }
  if (!keep) fs::remove_all(dir);

  // The reference is the sequential run when there is one, else the first that succeeded.
  const RunResult* reference = nullptr;
  for (const RunResult& r : results)
    if (r.ok && (!reference || (r.run.executor == "seq" && reference->run.executor != "seq"))) reference = &r;
  bool all_good = reference != nullptr;
  nlohmann::json report = {{"load_seconds", load_seconds},
                           {"input_ciphertexts", server.served().inputs()},
                           {"tasks", server.served().tasks()},
                           {"compiled_per_task", server.compiles_per_task()},
                           {"runs", nlohmann::json::array()}};
  for (const RunResult& r : results) {
    const bool identical = reference && r.ok && r.output == reference->output;
    all_good &= r.ok && identical;
    report["runs"].push_back({{"run", r.run.label()},
                              {"executor", r.run.executor},
                              {"workers", r.run.workers},
                              {"ok", r.ok},
                              {"infer_seconds", r.infer_seconds},
                              {"executor_seconds", r.executor_seconds},
                              {"transfer_seconds", r.transfer_seconds},
                              {"transfer_bytes", r.transfer_bytes},
                              {"peak_rss_gb", r.peak_rss_gb},
                              {"byte_identical", identical}});
  }
  if (reference) print_table(results, reference);
  if (o.json == "-") std::printf("%s\n", report.dump(1).c_str());
  else if (!o.json.empty()) ckks::write_text_file(o.json, report.dump(1) + "\n");
  if (!all_good) std::fprintf(stderr, "pfhe bench: a run failed or gave different bytes\n");
  return all_good ? 0 : 1;
}

}  // namespace pfhe::app
