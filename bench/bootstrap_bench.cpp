// One CKKS bootstrap at 128-bit security: key generation, set-up, time on 1 and 2 threads,
// precision (mean and worst bits over uniform random complex slots in [-1, 1]), key sizes
// and peak RSS. docs/BENCHMARKS.md gives the command behind each figure.
//   pfhe_bootstrap_bench [--help] [--log-n 16] [--log-slots 15] [--compute-levels 12]
//                        [--ephemeral-weight 32] [--jit] [--runs 2] [--log-message-ratio 10]
//                        [--cts-stages 3] [--stc-stages 3] [--k 16] [--double-angles 4]
//                        [--cosine-degree 30] [--arcsine-degree 0] [--digit-headroom 0] [--stc-first]
//                        [--chained] (chained giant steps in the DFT stages: fewer keys, what graphs use)
//                        [--baby-step-shift 0] (DFT baby steps divided by 2^shift: fewer keys, more rotations)
#include <CLI/CLI.hpp>
#include <omp.h>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <random>
#include <stdexcept>
#include <string>

#include "ckks/bootstrapping.h"
#include "ckks/encryptor.h"
#include "ckks/operation_counts.h"
#include "ckks/serialization.h"
#include "ring/poly.h"
#include "runtime/process_stats.h"

using namespace pfhe::ckks;
using pfhe::runtime::Clock;
using pfhe::runtime::cpu_seconds;
using pfhe::runtime::minor_page_faults;
using pfhe::runtime::peak_rss_gb;
using pfhe::runtime::seconds_since;

namespace {

// Bytes of the key files a client writes for these keys (ckks/serialization.h: switching
// keys stored seeded, so about half their size in memory), without holding the Galois set's
// bytes: its stored size is counted key by key.
std::size_t stored_key_bytes(const Context& ctx, const RelinKey& relin, const GaloisKeys& galois,
                             const EncapsulationKeys& encapsulation) {
  std::map<std::uint64_t, std::size_t> levels;
  for (const auto& [element, key] : galois.keys) levels[element] = key.max_level();
  std::size_t bytes = StreamedGaloisKeys{ctx, levels}.stored_size() + save(ctx, relin).size();
  if (!encapsulation.to_dense.b.empty()) {
    const Context sparse(encapsulation_parameters(ctx.params()));
    bytes += save_switching_key(ctx, encapsulation.to_dense).size() +
             save_switching_key(sparse, encapsulation.to_sparse).size();
  }
  return bytes;
}

// The bench's options (CLI11): an unknown or malformed option is an error, `--help` lists
// them, instead of a two-minute run with a typo silently ignored.
struct Options {
  BootstrapConfig config;
  int log_n = 16, compute_levels = 12, runs = 2, log_message_ratio = 10, digit_headroom = 0;
  bool jit = false, stc_first = false, chained = false;
};

Options parse(int argc, char** argv) {
  Options o;
  BootstrapConfig& c = o.config;
  // BootstrapConfig's defaults, except these (the measured set of docs/BENCHMARKS.md).
  c.log_slots = -1;  // N/2 unless given
  c.ephemeral_weight = 32;
  c.double_angles = 4;
  CLI::App app{"One CKKS bootstrap at 128-bit security: key generation, set-up, time on 1 and 2 threads, "
               "precision, key sizes, peak RSS"};
  app.add_option("--log-n", o.log_n, "ring degree 2^log-n")->capture_default_str();
  app.add_option("--log-slots", c.log_slots, "slots 2^log-slots (default: N/2)");
  app.add_option("--compute-levels", o.compute_levels, "levels left after a bootstrap")->capture_default_str();
  app.add_option("--runs", o.runs, "bootstraps per thread count")->capture_default_str()->check(CLI::Range(1, 100));
  app.add_option("--log-message-ratio", o.log_message_ratio, "q_0 / scale in bits")->capture_default_str();
  app.add_option("--digit-headroom", o.digit_headroom, "ParameterSpec::digit_headroom_bits")->capture_default_str();
  app.add_option("--cts-stages", c.cts_stages, "CoeffsToSlots stages")->capture_default_str();
  app.add_option("--stc-stages", c.stc_stages, "SlotsToCoeffs stages")->capture_default_str();
  app.add_option("--ephemeral-weight", c.ephemeral_weight, "encapsulation secret weight (0: none)")
      ->capture_default_str();
  app.add_option("--k", c.k_range, "EvalMod's range K")->capture_default_str();
  app.add_option("--double-angles", c.double_angles, "EvalMod's double angles")->capture_default_str();
  app.add_option("--cosine-degree", c.cosine_degree, "EvalMod's cosine degree")->capture_default_str();
  app.add_option("--arcsine-degree", c.arcsine_degree, "arcsine correction degree (0: none)")->capture_default_str();
  app.add_option("--baby-step-shift", c.baby_step_shift, "DFT baby steps divided by 2^shift: fewer keys, more rotations")
      ->capture_default_str();
  app.add_flag("--jit", o.jit, "DFT diagonals encoded just in time");
  app.add_flag("--stc-first", o.stc_first, "SlotsToCoeffs before ModRaise");
  app.add_flag("--chained", o.chained, "chained giant steps in the DFT stages: fewer keys, what graphs use");
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    std::exit(app.exit(e));
  }
  if (c.log_slots < 0) c.log_slots = o.log_n - 1;
  if (o.jit) c.storage = DiagonalStorage::kJustInTime;
  c.slots_to_coeffs_first = o.stc_first;
  if (o.chained) c.giant_steps = GiantSteps::kChained;
  return o;  // Bootstrapper and Parameters::create check the values
}

}  // namespace

int main(int argc, char** argv) try {
  pfhe::ring::keep_freed_memory_for_reuse();  // as the pfhe programs do
  const Options o = parse(argc, argv);
  const BootstrapConfig& config = o.config;
  const int runs = o.runs;
  ParameterSpec spec = bootstrap_parameter_spec(o.log_n, o.compute_levels, config, 40, o.log_message_ratio);
  spec.digit_headroom_bits = o.digit_headroom;
  const Context ctx(Parameters::create(spec));
  std::printf("parameters: %s\n", ctx.params().describe().c_str());

  auto t = Clock::now();
  const Encoder encoder(ctx);
  const Bootstrapper boot(encoder, config);
  const double setup_s = seconds_since(t);
  t = Clock::now();
  const KeyGenerator keygen(ctx);
  const RelinKey relin = keygen.create_relin_key();
  const GaloisKeys galois = boot.create_galois_keys(keygen);
  EncapsulationKeys encapsulation;
  if (config.ephemeral_weight > 0) encapsulation = boot.create_encapsulation_keys(keygen);
  const double keygen_s = seconds_since(t);
  const double key_gb =
      static_cast<double>(relin.byte_size() + galois.byte_size() + encapsulation.byte_size()) / 1e9;
  std::printf("set-up (DFT diagonals) %.1f s, key generation %.1f s: %zu Galois keys, %.2f GB of keys in memory, "
              "%.2f GB as the client sends them (seeded)\n",
              setup_s, keygen_s, galois.keys.size(), key_gb,
              static_cast<double>(stored_key_bytes(ctx, relin, galois, encapsulation)) / 1e9);
  std::printf("levels: %zu consumed, output level %zu; rotations CtS %zu, StC %zu\n", boot.config().depth(),
              boot.output_level(), boot.cts_rotations(), boot.stc_rotations());
  OperationCounts counts;
  boot.count_operations(counts);
  std::printf("estimated on one thread (ckks/operation_counts.h): %.2f s\n", estimated_seconds(counts, ctx.params()));

  const Evaluator eval(ctx, &relin, &galois);
  const Encryptor encryptor(ctx, keygen.secret_key());
  const Decryptor decryptor(ctx, keygen.secret_key());
  std::mt19937_64 rng(1);
  std::uniform_real_distribution<double> uniform(-1, 1);
  std::vector<std::complex<double>> x(boot.slots());
  for (auto& v : x) v = {uniform(rng), uniform(rng)};
  const Ciphertext input = encryptor.encrypt(encoder.encode(x, boot.input_level(), ctx.params().default_scale()));
  const EncapsulationKeys* keys = config.ephemeral_weight > 0 ? &encapsulation : nullptr;
  for (int threads : {1, 2}) {
    omp_set_num_threads(threads);
    for (int r = 0; r < runs; ++r) {
      const long faults = minor_page_faults();
      const double system_s = cpu_seconds().system;
      t = Clock::now();
      Bootstrapper::StepSeconds steps;
      const Ciphertext out = boot.bootstrap(eval, input, keys, &steps);
      const double s = seconds_since(t);
      const long run_faults = minor_page_faults() - faults;
      const double run_system_s = cpu_seconds().system - system_s;
      const auto got = encoder.decode(decryptor.decrypt(out));
      double sum = 0, worst = 0;
      for (std::size_t i = 0; i < x.size(); ++i) {
        const double e = std::max(std::abs(got[i] - x[i]), 1e-300);
        sum += -std::log2(e);
        worst = std::max(worst, e);
      }
      std::printf("threads %d run %d: %.2f s (ModRaise %.2f, CoeffsToSlots %.2f, EvalMod %.2f, SlotsToCoeffs %.2f), "
                  "precision mean %.1f bits, worst %.1f bits; %ld page faults, %.2f s in the kernel\n",
                  threads, r, s, steps.mod_raise, steps.coeffs_to_slots, steps.eval_mod, steps.slots_to_coeffs,
                  sum / static_cast<double>(x.size()), -std::log2(worst), run_faults, run_system_s);
      std::fflush(stdout);
    }
  }
  std::printf("peak RSS %.2f GB\n", peak_rss_gb());
  return 0;
} catch (const std::exception& e) {
  std::fprintf(stderr, "pfhe_bootstrap_bench: %s\n", e.what());
  return 1;
}
