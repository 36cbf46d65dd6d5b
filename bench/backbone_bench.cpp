// One lane group of CryptoFaceNet4 (32x32 patches, channels 16-16-32-32-64-64), each patch's
// backbone with its head block (a dense linear layer fused with pooling and BatchNorm1d),
// on N = 2^16: a synthetic CryptoFaceNet4 calibrated on 128 images, compiled per task
// (nn::Compilation::kPerTask, then the group's branch with CompiledGraph::compile_task, as
// a worker does), key generation (both cores), the branch's encrypted evaluation on one
// core with per-step times, precision against float64, peak RSS. --lanes 2 (default) puts
// two patches in one ciphertext, the most CryptoFace's 16x32x32 stem output leaves room
// for; --lanes 1 is one backbone alone.
//   pfhe_backbone_bench [--dry-run] [--budget-gb G] [--lanes L] [--special-primes K]
//                       [--ring-switch-after B [--half-special-primes K']] [--batch I]
// Parameters: those `pfhe compile` chooses for CryptoFaceNet (depth 28); --special-primes
// replaces the special-prime count (50-bit primes) to compare key-switching costs.
// --ring-switch-after B runs the blocks after block B (1-5) in the half ring N = 2^15 with
// K' (default 4) of the special primes (nn/half_ring.h; `pfhe compile` switches after block 3
// with 4).
// --dry-run stops after compiling and prints the key set it would generate.
// --batch I runs the lane group of I images at once (CompiledGraph::run_branch of a batch:
// each just-in-time diagonal encoded once for all of them) after running the first image
// alone, checks that every image's output is byte-identical to its own run, and reports the
// time per image of both.
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
#include "ckks/serialization.h"
#include "ring/poly.h"
#include "nn/compiled_graph.h"
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
  std::size_t batch = 1;
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
    else if (!std::strcmp(argv[i], "--batch") && i + 1 < argc && std::atoi(argv[i + 1]) >= 1 &&
             std::atoi(argv[i + 1]) <= 8)
      batch = static_cast<std::size_t>(std::atoi(argv[++i]));
    else {
      std::fprintf(stderr, "usage: pfhe_backbone_bench [--dry-run] [--budget-gb G] [--lanes 1|2] [--special-primes K] "
                           "[--ring-switch-after 1-5 [--half-special-primes K]] [--batch 1-8]\n");
      return 2;
    }
  }
  ring::keep_freed_memory_for_reuse();
  auto t = std::chrono::steady_clock::now();
  const nn::SyntheticKind kind = nn::synthetic_kind("cryptofacenet4");
  const std::size_t side = kind.grid * kind.patch;
  const nn::PatchCNN model = nn::make_synthetic_patch_cnn(kind.shape, kind.grid, kind.patch, kind.embedding, 2025,
                                                          nn::synthetic_images(128, {3, side, side}, 1));
  const nn::Graph graph = model.to_graph();
  std::printf("synthetic CryptoFaceNet4 calibrated on 128 images: %.1f s\n", seconds_since(t));

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
  // The half ring starts at the switch block's output level: conv0 takes one level, each
  // block four.
  std::shared_ptr<const nn::HalfRing> half_ring;
  if (switch_after) {
    half_ring = nn::HalfRing::make(ctx.params(), {27 - 4 * switch_after, half_special_primes});
    std::printf("half ring after block %zu: %s\n", switch_after, half_ring->context.params().describe().c_str());
  }
  const nn::CompiledGraph per_task = nn::CompiledGraph::compile(graph, enc, 28, scale, 0, nn::Compilation::kPerTask,
                                                                nullptr, nullptr, lanes, half_ring);
  std::printf("plan of the whole model (per task): %.1f s\n", seconds_since(t));
  // The group holding patch 0: the branch entered from input ciphertext 0.
  const auto& branches = per_task.parallel_regions().at(0).branches;
  const std::size_t branch = static_cast<std::size_t>(
      std::find_if(branches.begin(), branches.end(), [](const auto& b) { return b.entry == 0; }) - branches.begin());
  t = std::chrono::steady_clock::now();
  const nn::CompiledGraph compiled = per_task.compile_task(graph, 0, branch, budget);
  std::printf("compile of the lane group: %.1f s, diagonals held %.2f GB (budget %.1f GB)\n", seconds_since(t),
              compiled.plaintext_bytes() / 1e9, budget_gb);
  const auto levels = per_task.rotation_levels();
  double key_bytes = 0;
  for (const auto& [step, level] : levels)
    key_bytes += static_cast<double>(ctx.params().digits_at(level)) * 2 * (level + 1 + ctx.ring_p().size()) * ctx.n() * 8;
  std::printf("rotation keys: %zu steps, %.2f GB in memory at their levels\n", levels.size(), key_bytes / 1e9);
  const auto half_levels = per_task.half_ring_rotation_levels();
  if (half_ring) std::printf("half-ring rotation keys: %zu steps\n", half_levels.size());
  if (dry_run) return 0;

  // Keys as a client makes them: with a ring switch, the half ring's secret and keys and
  // the switch key too.
  t = std::chrono::steady_clock::now();
  const runtime::SecretKeyFile secret = runtime::new_secret_keys(ctx, half_ring.get());
  const runtime::EvaluationKeys keys =
      runtime::make_evaluation_keys(ctx, half_ring.get(), secret, {levels, half_levels, std::nullopt, 0});
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
  const nn::Tensor image = nn::synthetic_images(1, {3, side, side}, 77)[0];
  const ckks::Ciphertext in = encryptor.encrypt(enc.encode(compiled.pack_inputs(image).front(), 28, scale));
  omp_set_num_threads(1);  // the backbone figure is for one core; compile and keygen use both
  t = std::chrono::steady_clock::now();
  const runtime::CpuSeconds cpu_before = cpu_seconds();
  std::vector<nn::CompiledGraph::StepTiming> steps;
  const ckks::Ciphertext out =
      compiled.run_branch(evaluators.big(), 0, branch, in, &steps, nullptr, evaluators.half_ring());
  const double run_s = seconds_since(t);
  const runtime::CpuSeconds cpu_after = cpu_seconds();
  std::printf("  %-24s %5s %8s\n", "step", "level", "seconds");
  for (const auto& s : steps) std::printf("  %-24s %5zu %8.2f\n", s.name.c_str(), s.level, s.seconds);
  // The group's exit: its patches' head blocks summed (an embedding of the group's layout).
  const nn::Layout& exit_layout = compiled.output_layout();
  const nn::Tensor got = nn::unpack(out_enc.decode_real(decryptor.decrypt(out)), exit_layout);
  nn::Tensor want = model.head_block(0).forward(model.backbones[0].forward(model.patch(image, 0)));
  for (std::size_t p = 1; p < lanes; ++p) {
    const nn::Tensor h = model.head_block(p).forward(model.backbones[p].forward(model.patch(image, p)));
    for (std::size_t i = 0; i < want.data.size(); ++i) want.data[i] += h.data[i];
  }
  const nn::Precision precision = nn::precision_of(got, want);
  std::printf("encrypted lane group of %zu backbone(s) on 1 core: %.1f s (%.1f s per patch), output level %zu, "
              "max abs error %.3e (relative %.3e)\n",
              lanes, run_s, run_s / static_cast<double>(lanes), out.level(), precision.max_abs, precision.relative);
  std::printf("encrypted run CPU time: user %.1f s, system %.1f s\n", cpu_after.user - cpu_before.user,
              cpu_after.system - cpu_before.system);
  if (batch > 1) {
    std::vector<ckks::Ciphertext> ins = {in};
    const std::vector<nn::Tensor> images = nn::synthetic_images(batch - 1, {3, side, side}, 78);
    for (const nn::Tensor& other : images)
      ins.push_back(encryptor.encrypt(enc.encode(compiled.pack_inputs(other).front(), 28, scale)));
    t = std::chrono::steady_clock::now();
    const std::vector<ckks::Ciphertext> outs =
        compiled.run_branch(evaluators.big(), 0, branch, ins, nullptr, nullptr, evaluators.half_ring());
    const double batch_s = seconds_since(t);
    const auto bytes = [&](const ckks::Ciphertext& c) { return ckks::save(evaluators.output().context(), c); };
    const bool same = bytes(outs.front()) == bytes(out);
    std::printf("batch of %zu images on 1 core: %.1f s, %.1f s per image (alone: %.1f s); first output %s its own run\n",
                batch, batch_s, batch_s / static_cast<double>(batch), run_s, same ? "byte-identical to" : "DIFFERS from");
    if (!same) return 1;
  }
  std::printf("peak RSS: %.2f GB\n", peak_rss_gb());
  return 0;
}
}  // namespace

int main(int argc, char** argv) { return pfhe::bench::run_reporting_errors("pfhe_backbone_bench", run, argc, argv); }
