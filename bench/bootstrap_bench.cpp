// One CKKS bootstrap at 128-bit security: key generation, set-up, time on 1 and 2 threads,
// precision (mean and worst bits over uniform random complex slots in [-1, 1]), key sizes
// and peak RSS. docs/BENCHMARKS.md gives the command behind each figure.
//   pfhe_bootstrap_bench [--log-n 16] [--log-slots 15] [--compute-levels 12]
//                        [--ephemeral-weight 32] [--jit] [--runs 2] [--log-message-ratio 10]
//                        [--cts-stages 3] [--stc-stages 3] [--k 16] [--double-angles 4]
//                        [--cosine-degree 30] [--arcsine-degree 0] [--digit-headroom 0] [--stc-first]
//                        [--chained] (chained giant steps in the DFT stages: fewer keys, what graphs use)
//                        [--baby-step-shift 0] (DFT baby steps divided by 2^shift: fewer keys, more rotations)
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
#include "ring/poly.h"
#include "runtime/process_stats.h"

using namespace pfhe::ckks;
using pfhe::runtime::Clock;
using pfhe::runtime::peak_rss_gb;
using pfhe::runtime::seconds_since;

namespace {

int int_arg(int argc, char** argv, const std::string& name, int fallback) {
  for (int i = 1; i + 1 < argc; ++i)
    if (argv[i] == name) return std::stoi(argv[i + 1]);
  return fallback;
}

bool flag(int argc, char** argv, const std::string& name) {
  for (int i = 1; i < argc; ++i)
    if (argv[i] == name) return true;
  return false;
}

}  // namespace

int main(int argc, char** argv) try {
  pfhe::ring::keep_freed_memory_for_reuse();  // as the pfhe programs do
  BootstrapConfig config;
  const int log_n = int_arg(argc, argv, "--log-n", 16);
  config.log_slots = int_arg(argc, argv, "--log-slots", log_n - 1);
  config.cts_stages = int_arg(argc, argv, "--cts-stages", 3);
  config.stc_stages = int_arg(argc, argv, "--stc-stages", 3);
  config.ephemeral_weight = int_arg(argc, argv, "--ephemeral-weight", 32);
  config.k_range = int_arg(argc, argv, "--k", 16);
  config.double_angles = int_arg(argc, argv, "--double-angles", 4);
  config.cosine_degree = int_arg(argc, argv, "--cosine-degree", 30);
  if (flag(argc, argv, "--jit")) config.storage = DiagonalStorage::kJustInTime;
  config.slots_to_coeffs_first = flag(argc, argv, "--stc-first");
  if (flag(argc, argv, "--chained")) config.giant_steps = GiantSteps::kChained;
  config.baby_step_shift = int_arg(argc, argv, "--baby-step-shift", 0);
  const int compute_levels = int_arg(argc, argv, "--compute-levels", 12);
  const int runs = int_arg(argc, argv, "--runs", 2);

  config.arcsine_degree = int_arg(argc, argv, "--arcsine-degree", 0);
  ParameterSpec spec = bootstrap_parameter_spec(log_n, compute_levels, config, 40,
                                                int_arg(argc, argv, "--log-message-ratio", 10));
  spec.digit_headroom_bits = int_arg(argc, argv, "--digit-headroom", 0);
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
  std::printf("set-up (DFT diagonals) %.1f s, key generation %.1f s: %zu Galois keys, %.2f GB of keys in memory\n",
              setup_s, keygen_s, galois.keys.size(), key_gb);
  std::printf("levels: %zu consumed, output level %zu; rotations CtS %zu, StC %zu\n", boot.config().depth(),
              boot.output_level(), boot.cts_rotations(), boot.stc_rotations());

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
      t = Clock::now();
      Bootstrapper::StepSeconds steps;
      const Ciphertext out = boot.bootstrap(eval, input, keys, &steps);
      const double s = seconds_since(t);
      const auto got = encoder.decode(decryptor.decrypt(out));
      double sum = 0, worst = 0;
      for (std::size_t i = 0; i < x.size(); ++i) {
        const double e = std::max(std::abs(got[i] - x[i]), 1e-300);
        sum += -std::log2(e);
        worst = std::max(worst, e);
      }
      std::printf("threads %d run %d: %.2f s (ModRaise %.2f, CoeffsToSlots %.2f, EvalMod %.2f, SlotsToCoeffs %.2f), "
                  "precision mean %.1f bits, worst %.1f bits\n",
                  threads, r, s, steps.mod_raise, steps.coeffs_to_slots, steps.eval_mod, steps.slots_to_coeffs,
                  sum / static_cast<double>(x.size()), -std::log2(worst));
      std::fflush(stdout);
    }
  }
  std::printf("peak RSS %.2f GB\n", peak_rss_gb());
  return 0;
} catch (const std::exception& e) {
  std::fprintf(stderr, "pfhe_bootstrap_bench: %s\n", e.what());
  return 1;
}
