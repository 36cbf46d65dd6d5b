// The deep-network acceptance run of the bootstrapping issue: the ResNet-20 style HerPN
// network of tools/train_resnet20_fashion.py (a pfhe graph model file), compiled for
// N = 2^16 at 128-bit security with bootstraps placed by the graph compiler, then
// encrypted inference on the first test images of Fashion-MNIST (Debian's
// dataset-fashion-mnist) against the float64 forward: labels, logits' relative error,
// bootstraps, latency per image on the machine's threads, key sizes, peak RSS.
//   pfhe_resnet20_bench MODEL.pfhm [IMAGES=2] [--key-budget-gb 14] [--first K] [--bootstrap-levels L]
// (--first K evaluates test images K .. K+IMAGES-1, so that a long run cut off can be
// continued with the same model, keys chosen the same way and the same images after it)
// (exits 3 without making keys when the rotation keys alone would exceed the budget)
#include <CLI/CLI.hpp>
#include <omp.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <map>
#include <string>

#include "ckks/bootstrapping.h"
#include "ckks/encryptor.h"
#include "fashion_mnist/fashion_mnist.h"
#include "nn/compiled_graph.h"
#include "nn/fit.h"
#include "nn/graph_file.h"
#include "nn/parameter_choice.h"
#include "nn/precision.h"
#include "ring/poly.h"
#include "runtime/process_stats.h"

using namespace pfhe;
using pfhe::runtime::Clock;
using pfhe::runtime::peak_rss_gb;
using pfhe::runtime::seconds_since;

namespace {

std::size_t argmax(const std::vector<double>& v) {
  return static_cast<std::size_t>(std::max_element(v.begin(), v.end()) - v.begin());
}

// The loader's images repeat the grey channel three times; the model reads one.
nn::Tensor grey(const nn::Tensor& rgb) {
  nn::Tensor t({1, rgb.shape.height, rgb.shape.width});
  std::copy(rgb.data.begin(), rgb.data.begin() + static_cast<std::ptrdiff_t>(t.data.size()), t.data.begin());
  return t;
}

}  // namespace

int main(int argc, char** argv) try {
  std::string model;
  std::size_t count = 2, first = 0;
  double key_budget_gb = 14;
  CLI::App app{"ResNet-20 (Fashion-MNIST) encrypted with placed bootstraps, against float64"};
  app.add_option("model", model, "the graph model file (tools/train_resnet20_fashion.py)")->required();
  app.add_option("images", count, "test images to evaluate")->capture_default_str()->check(CLI::Range(1, 1000));
  app.add_option("--key-budget-gb", key_budget_gb, "exit 3 without making keys when the rotation keys exceed it")
      ->capture_default_str();
  app.add_option("--first", first, "the first test image (continues a run cut off)")->capture_default_str();
  int bootstrap_levels = 0;
  app.add_option("--bootstrap-levels", bootstrap_levels,
                 "this many levels between bootstraps (0: the count with the least estimated latency)")
      ->capture_default_str();
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  }
  ring::keep_freed_memory_for_reuse();
  std::setvbuf(stdout, nullptr, _IOLBF, 0);  // progress lines as they come
  // Images 1000..1063 calibrate the ranges; the evaluated ones must stay below them.
  if (first + count > 1000) throw std::runtime_error("--first + IMAGES must be at most 1000 (1000..1063 calibrate)");

  const nn::Graph g = nn::load_graph_file(model);
  const test::FashionMnist data = test::load_fashion_mnist_test(1064);
  std::vector<nn::Tensor> calibration;
  for (std::size_t i = 1000; i < 1064; ++i) calibration.push_back(grey(data.images[i]));
  const nn::FitReport ranges = nn::fit(g, calibration, 1e6);
  std::printf("fitted ranges on 64 test images beyond the evaluated ones: max |value| %.2f\n", ranges.max_abs());

  // The parameters, bootstrapping and placement `pfhe compile` chooses (nn/parameter_choice.h).
  auto t = Clock::now();
  std::vector<nn::LevelsEstimate> estimates;
  const nn::GraphParameters chosen =
      nn::graph_parameters_for_compile(g, ranges, nn::kDefaultScaleBits, false, bootstrap_levels, &estimates);
  if (!chosen.bootstrapping) throw std::runtime_error("the model fits without bootstrapping");
  if (!estimates.empty())
    std::printf("levels between bootstraps by estimated latency on one thread (%.1f s): %s\n", seconds_since(t),
                nn::estimates_text(estimates).c_str());
  const ckks::Context ctx(ckks::Parameters::create(chosen.spec));
  std::printf("parameters: %s (graph depth %zu, %zu levels between bootstraps)\n", ctx.params().describe().c_str(),
              chosen.graph_levels, chosen.compute_levels);
  const ckks::Encoder enc(ctx);
  const double scale = ctx.params().default_scale();
  const nn::CompiledGraph compiled =
      nn::compile_graph(g, enc, nn::kDefaultPlaintextBudget, false, chosen.bootstrapping, &ranges);
  const ckks::Bootstrapper& boot = *compiled.bootstrapper();
  const std::size_t top = compiled.input_level();
  std::printf("compile %.1f s (bootstrapper set-up included): %zu bootstraps placed, %.2f GB of diagonals\n",
              seconds_since(t), compiled.bootstraps(), static_cast<double>(compiled.plaintext_bytes()) / 1e9);
  std::printf("input level %zu (a bootstrap gives %zu)\n", top, boot.output_level());
  for (const auto& b : compiled.placed_bootstraps())
    std::printf("  %s: level %zu -> %zu\n", b.name.c_str(), b.input_level, b.output_level);

  // The key set before it is made: it is what decides memory (the machine has 24 GB).
  std::map<long, std::size_t> all_steps = compiled.rotation_levels();
  for (const auto& [step, level] : boot.rotation_levels()) all_steps[step] = std::max(all_steps[step], level);
  double key_gb = 0;
  for (const auto& [element, level] : ckks::galois_element_levels(ctx, all_steps))
    key_gb += 2.0 * static_cast<double>(ctx.params().digits_at(level) * (level + 1 + ctx.params().p().size()) *
                                        ctx.n() * sizeof(std::uint64_t)) / 1e9;
  std::printf("rotation keys needed: %zu (model %zu, bootstrapping %zu), %.2f GB\n", all_steps.size(),
              compiled.rotation_levels().size(), boot.rotation_levels().size(), key_gb);
  if (key_gb > key_budget_gb) {
    std::printf("refused: the rotation keys alone exceed --key-budget-gb %.1f\n", key_budget_gb);
    return 3;
  }
  t = Clock::now();
  const ckks::KeyGenerator keygen(ctx);
  const ckks::RelinKey relin = keygen.create_relin_key();
  const ckks::GaloisKeys galois = boot.create_galois_keys(keygen, compiled.rotation_levels());
  const ckks::EncapsulationKeys encapsulation = boot.create_encapsulation_keys(keygen);
  std::printf("key generation %.1f s: %zu Galois keys, %.2f GB of evaluation keys\n", seconds_since(t),
              galois.keys.size(),
              static_cast<double>(relin.byte_size() + galois.byte_size() + encapsulation.byte_size()) / 1e9);
  const ckks::Evaluator eval(ctx, &relin, &galois);
  const ckks::Encryptor encryptor(ctx, keygen.secret_key());
  const ckks::Decryptor decryptor(ctx, keygen.secret_key());

  std::size_t agree = 0, correct = 0, plain_correct = 0;
  double worst = 0;
  for (std::size_t i = first; i < first + count; ++i) {
    const nn::Tensor x = grey(data.images[i]);
    const nn::Tensor want = g.forward(x);
    t = Clock::now();
    const ckks::Ciphertext in = encryptor.encrypt(enc.encode(compiled.pack_inputs(x)[0], top, scale));
    std::vector<nn::CompiledGraph::StepTiming> steps;
    const ckks::Ciphertext out = compiled.run(eval, {in}, &steps, &encapsulation);
    const nn::Tensor got = compiled.unpack_output(enc.decode_real(decryptor.decrypt(out)));
    const double seconds = seconds_since(t);
    double in_bootstraps = 0;
    for (const auto& s : steps)
      if (s.name.find(".bootstrap") != std::string::npos && s.name.find(".to_bootstrap") == std::string::npos)
        in_bootstraps += s.seconds;
    const double relative = nn::precision_of(got, want).relative;
    worst = std::max(worst, relative);
    agree += argmax(got.data) == argmax(want.data);
    correct += argmax(got.data) == static_cast<std::size_t>(data.labels[i]);
    plain_correct += argmax(want.data) == static_cast<std::size_t>(data.labels[i]);
    std::printf("image %zu: %.1f s (%.1f s in bootstraps), logits relative error %.2e, label %zu (float64 %zu, true %d)\n",
                i, seconds, in_bootstraps, relative, argmax(got.data), argmax(want.data), data.labels[i]);
    std::fflush(stdout);
  }
  std::printf("%zu images from %zu: labels equal to float64 %zu/%zu, encrypted accuracy %zu/%zu (float64 %zu/%zu), worst "
              "relative error %.2e, %d threads, peak RSS %.2f GB\n",
              count, first, agree, count, correct, count, plain_correct, count, worst, omp_get_max_threads(), peak_rss_gb());
  return agree == count ? 0 : 1;
} catch (const std::exception& e) {
  std::fprintf(stderr, "pfhe_resnet20_bench: %s\n", e.what());
  return 1;
}
