// A lane group of CryptoFaceNet backbones (32x32 patches, channels 16-16-32-32-64-64),
// each with its head block (a dense 256x256 linear layer fused with pooling and
// BatchNorm1d, as in a PatchCNN), on N = 2^16: synthetic weights calibrated on 128 images,
// compile and key generation (both cores), encrypted evaluation on one core with per-step
// times, precision against float64, peak RSS. --lanes 2 (default) puts two patches in one
// ciphertext, the most CryptoFace's 16x32x32 stem output leaves room for; --lanes 1 is
// one backbone alone.
//   pfhe_backbone_bench [--dry-run] [--budget-gb G] [--lanes L] [--special-primes K]
//                       [--ring-switch-after B [--half-special-primes K']]
// Parameters: those `pfhe compile` chooses for CryptoFaceNet (depth 28); --special-primes
// replaces the special-prime count (50-bit primes) to compare key-switching costs.
// --ring-switch-after B runs the blocks after block B (1-5) in the half ring N = 2^15 with
// K' (default 4) of the special primes (nn/half_ring.h; `pfhe compile` switches after block 3
// with 4).
// --dry-run stops after compiling and prints the key set it would generate.
#include <omp.h>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <optional>
#include <random>
#include <string>

#include "ckks/encryptor.h"
#include "ring/poly.h"
#include "nn/compiled_backbone.h"
#include "nn/half_ring.h"
#include "nn/linear_map.h"
#include "nn/parameter_choice.h"
#include "nn/precision.h"
#include "nn/synthetic.h"
#include "runtime/client_server.h"
#include "runtime/process_stats.h"

#include "report_errors.h"

using namespace pfhe;

namespace {
using runtime::cpu_seconds;
using runtime::peak_rss_gb;
using runtime::seconds_since;
}  // namespace

namespace {
int run(int argc, char** argv) {
  bool dry_run = false;
  double budget_gb = 4;
  std::size_t lanes = 2;
  std::size_t special_primes = 0;  // 0: what pfhe compile chooses for CryptoFaceNet (nn::choose_parameters)
  std::size_t switch_after = 0, half_special_primes = 4;  // 0: no ring switch
  for (int i = 1; i < argc; ++i) {
    if (!std::strcmp(argv[i], "--dry-run")) dry_run = true;
    else if (!std::strcmp(argv[i], "--budget-gb") && i + 1 < argc) budget_gb = std::stod(argv[++i]);
    else if (!std::strcmp(argv[i], "--lanes") && i + 1 < argc) lanes = std::stoul(argv[++i]);
    else if (!std::strcmp(argv[i], "--special-primes") && i + 1 < argc && std::atoi(argv[i + 1]) > 0)
      special_primes = static_cast<std::size_t>(std::atoi(argv[++i]));  // Parameters::create checks the rest
    else if (!std::strcmp(argv[i], "--ring-switch-after") && i + 1 < argc && std::atoi(argv[i + 1]) >= 1 &&
             std::atoi(argv[i + 1]) <= 5)
      switch_after = static_cast<std::size_t>(std::atoi(argv[++i]));
    else if (!std::strcmp(argv[i], "--half-special-primes") && i + 1 < argc && std::atoi(argv[i + 1]) > 0)
      half_special_primes = static_cast<std::size_t>(std::atoi(argv[++i]));
    else {
      std::fprintf(stderr, "usage: pfhe_backbone_bench [--dry-run] [--budget-gb G] [--lanes 1|2] [--special-primes K] "
                           "[--ring-switch-after 1-5 [--half-special-primes K]]\n");
      return 2;
    }
  }
  ring::keep_freed_memory_for_reuse();
  auto t = std::chrono::steady_clock::now();
  const nn::Shape patch{3, 32, 32};
  std::vector<nn::Backbone> models;
  std::vector<nn::Linear> heads;
  std::mt19937_64 rng(7);
  std::normal_distribution<double> gauss(0.0, 1.0 / 16.0);  // the 1/sqrt(fan-in) scale of a trained layer
  for (std::size_t l = 0; l < lanes; ++l) {
    models.push_back(nn::make_synthetic_backbone(nn::BackboneShape{}, 2025 + l, nn::synthetic_images(128, patch, 1 + l)));
    heads.push_back({256, 256, std::vector<double>(256 * 256), std::vector<double>(256, 0.0)});
    for (double& w : heads.back().weight) w = gauss(rng);
  }
  std::printf("%zu synthetic backbone(s) calibrated on 128 images each: %.1f s\n", lanes, seconds_since(t));

  // The parameters of a whole CryptoFaceNet inference (depth 28: backbone 23, then
  // normalisation and matching), as `pfhe compile` chooses them.
  ckks::ParameterSpec spec = nn::choose_parameters(28);
  if (special_primes) spec.p_bits.assign(special_primes, 50);
  const ckks::Context ctx(ckks::Parameters::create(spec));
  std::printf("parameters: %s\n", ctx.params().describe().c_str());
  const ckks::Encoder enc(ctx);
  const double scale = ctx.params().default_scale();
  t = std::chrono::steady_clock::now();
  const auto budget = static_cast<std::size_t>(budget_gb * (1ULL << 30));
  std::vector<const nn::Backbone*> model_ptrs;
  std::vector<const nn::Linear*> head_ptrs;
  for (std::size_t l = 0; l < lanes; ++l) {
    model_ptrs.push_back(&models[l]);
    head_ptrs.push_back(&heads[l]);
  }
  // The half ring starts at the switch block's output level: conv0 takes one level, each
  // block four.
  std::shared_ptr<const nn::HalfRing> half_ring;
  if (switch_after) {
    half_ring = nn::HalfRing::make(ctx.params(), {switch_after - 1, 27 - 4 * switch_after, half_special_primes});
    std::printf("half ring after block %zu: %s\n", switch_after, half_ring->context.params().describe().c_str());
  }
  const nn::CompiledBackbone compiled = nn::CompiledBackbone::compile(model_ptrs, enc, patch, 28, scale, head_ptrs, lanes,
                                                                      budget, nn::Compilation::kFull,
                                                                      half_ring ? &half_ring->plan : nullptr);
  std::printf("compile: %.1f s, depth %zu, diagonals held %.2f GB (budget %.1f GB)\n", seconds_since(t),
              compiled.depth(), compiled.plaintext_bytes() / 1e9, budget_gb);
  const auto levels = compiled.rotation_levels();
  double key_bytes = 0;
  for (const auto& [step, level] : levels)
    key_bytes += static_cast<double>(ctx.params().digits_at(level)) * 2 * (level + 1 + ctx.ring_p().size()) * ctx.n() * 8;
  std::printf("rotation keys: %zu steps, %.2f GB in memory at their levels\n", levels.size(), key_bytes / 1e9);
  const auto half_levels = compiled.half_ring_rotation_levels();
  if (half_ring) std::printf("half-ring rotation keys: %zu steps\n", half_levels.size());
  if (dry_run) {
    // The artefact round trip is measured here only: holding a second copy next to the
    // evaluation keys would not fit the 24 GB machine.
    t = std::chrono::steady_clock::now();
    ckks::ByteWriter w;
    compiled.save(w);
    const double save_s = seconds_since(t);
    t = std::chrono::steady_clock::now();
    ckks::ByteReader r(w.bytes());
    const nn::CompiledBackbone reloaded = nn::CompiledBackbone::load(enc, r);
    std::printf("compiled artefact: %.2f GB, serialize %.1f s, load %.1f s\n", w.bytes().size() / 1e9, save_s,
                seconds_since(t));
    return 0;
  }

  // Keys as a client makes them: with a ring switch, the half ring's secret and keys and
  // the switch key too.
  t = std::chrono::steady_clock::now();
  const runtime::SecretKeyFile secret = runtime::new_secret_keys(ctx, half_ring.get());
  const runtime::EvaluationKeys keys = runtime::make_evaluation_keys(ctx, half_ring.get(), secret, {levels, half_levels});
  std::printf("keygen: %.1f s, evaluation keys %.2f GB", seconds_since(t),
              (keys.galois.byte_size() + keys.relin.byte_size()) / 1e9);
  if (keys.half)
    std::printf(" + half ring %.2f GB + switch key %.2f GB",
                (keys.half->galois.byte_size() + keys.half->relin.byte_size()) / 1e9,
                keys.half->switch_key.byte_size() / 1e9);
  std::printf("\n");
  const runtime::Evaluators evaluators(ctx, half_ring.get(), keys);
  const ckks::Encryptor encryptor(ctx, secret.key);
  const ckks::Decryptor decryptor(evaluators.output().context(), half_ring ? *secret.half_key : secret.key);
  const ckks::Encoder& out_enc = half_ring ? half_ring->encoder : enc;
  const std::vector<nn::Tensor> images = nn::synthetic_images(lanes, patch, 77);
  const ckks::Ciphertext in = encryptor.encrypt(enc.encode(nn::pack_lanes(images, compiled.input_layout()), 28, scale));
  omp_set_num_threads(1);  // the backbone figure is for one core; compile and keygen use both
  t = std::chrono::steady_clock::now();
  const runtime::CpuSeconds cpu_before = cpu_seconds();
  std::vector<nn::CompiledBackbone::StepTiming> steps;
  const ckks::Ciphertext out = compiled.run(evaluators.big(), in, &steps, evaluators.half_ring());
  const double run_s = seconds_since(t);
  const runtime::CpuSeconds cpu_after = cpu_seconds();
  std::printf("  %-16s %5s %8s %9s %6s %6s %4s\n", "step", "level", "seconds", "diagonals", "baby", "giant", "sum");
  for (const auto& s : steps)
    std::printf("  %-16s %5zu %8.2f %9zu %6zu %6zu %4zu\n", s.name.c_str(), s.level, s.seconds, s.diagonals,
                s.baby_rotations, s.giant_rotations, s.sum_rotations);
  const nn::Tensor got = nn::unpack(out_enc.decode_real(decryptor.decrypt(out)), compiled.output_layout());
  nn::Tensor want = heads[0].forward(models[0].forward(images[0]));  // the lanes' head outputs, summed
  for (std::size_t l = 1; l < lanes; ++l) {
    const nn::Tensor h = heads[l].forward(models[l].forward(images[l]));
    for (std::size_t i = 0; i < want.data.size(); ++i) want.data[i] += h.data[i];
  }
  const nn::Precision precision = nn::precision_of(got, want);
  std::printf("encrypted lane group of %zu backbone(s) on 1 core: %.1f s (%.1f s per patch), output level %zu, "
              "max abs error %.3e (relative %.3e)\n",
              lanes, run_s, run_s / static_cast<double>(lanes), out.level(), precision.max_abs, precision.relative);
  std::printf("encrypted run CPU time: user %.1f s, system %.1f s\n", cpu_after.user - cpu_before.user,
              cpu_after.system - cpu_before.system);
  std::printf("peak RSS: %.2f GB\n", peak_rss_gb());
  return 0;
}
}  // namespace

int main(int argc, char** argv) { return pfhe::bench::run_reporting_errors("pfhe_backbone_bench", run, argc, argv); }
