// `pfhe bench`: the executor comparison of docs/BENCHMARKS.md in one command. The server
// state (parameters, compiled model, evaluation keys) is loaded once by a single-threaded
// parent; every run forks a fresh child that inherits it, runs one executor configuration
// on the same encrypted patches and reports its time, transfer cost and peak memory, so
// runs do not disturb each other's figures. Outputs are compared byte for byte.
#pragma once
#include <cstddef>
#include <string>
#include <vector>

namespace pfhe::app {

// One configuration: "seq", "threads:W", "fork:W" or "recompile:W" (a fork pool whose
// workers compile the groups they run from the model file instead of inheriting them).
struct BenchRun {
  std::string executor;
  std::size_t workers = 1;
  std::string label() const;
};
// Comma-separated configurations; throws std::invalid_argument on a malformed entry.
std::vector<BenchRun> parse_bench_runs(const std::string& text);

struct BenchOptions {
  std::string params, model, keys, input;
  std::string model_file;  // the model weights, needed by recompile runs
  std::string runs = "seq,threads:2,threads:4,fork:2,fork:4,recompile:2";
  std::string json;     // report path ("-": stdout)
  std::string out_dir;  // where each run's output ciphertext is kept (default: not kept)
  std::size_t lanes = 0;  // with a model file as --model (compiled per task)
};

// Returns 0 when every run succeeded and all outputs are byte-identical, 1 otherwise.
int run_bench(const BenchOptions& options);

}  // namespace pfhe::app
