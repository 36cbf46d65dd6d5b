// The Fashion-MNIST table of docs/BENCHMARKS.md: the trained HerPN PatchCNN
// (tests/data/fashion_pcnn.pfhm, tools/train_fashion_mnist.py) in float64 on all 10,000
// test images, then encrypted on the first N (client encrypts, server infers, client
// decrypts) at 128-bit secure parameters chosen from its depth, W images at a time on W
// threads. Prints accuracies, label agreement, logit relative error, latency, peak RSS.
//   pfhe_fashion_mnist_bench [N=500] [W=2]
#include <omp.h>
#include <sys/resource.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <string>
#include <thread>

#include "ckks/serialization.h"
#include "fashion_mnist/fashion_mnist.h"
#include "nn/model_file.h"
#include "nn/parameter_choice.h"
#include "ring/poly.h"
#include "runtime/client_server.h"

using namespace pfhe;

namespace {
std::size_t argmax(const std::vector<double>& v) {
  return static_cast<std::size_t>(std::max_element(v.begin(), v.end()) - v.begin());
}
double seconds_since(std::chrono::steady_clock::time_point t) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t).count();
}
}  // namespace

int main(int argc, char** argv) {
  const std::size_t count = argc > 1 ? std::stoul(argv[1]) : 500;
  const std::size_t workers = argc > 2 ? std::stoul(argv[2]) : 2;
  ring::keep_freed_memory_for_reuse();
  const nn::PatchCNN model = nn::load_model_file(PFHE_SOURCE_DIR "/tests/data/fashion_pcnn.pfhm");
  const test::FashionMnist all = test::load_fashion_mnist_test(10000);
  std::size_t correct = 0;
  std::vector<std::size_t> plain_label(all.images.size());
  for (std::size_t i = 0; i < all.images.size(); ++i) {
    plain_label[i] = argmax(model.embedding(all.images[i]).data);
    correct += plain_label[i] == static_cast<std::size_t>(all.labels[i]);
  }
  std::printf("plaintext (float64) accuracy, 10000 test images: %.4f\n", correct / 10000.0);

  const ckks::Context ctx(ckks::Parameters::create(nn::choose_parameters(nn::required_levels(model))));
  std::printf("parameters: %s\n", ctx.params().describe().c_str());
  const ckks::Encoder enc(ctx);
  auto t = std::chrono::steady_clock::now();
  const nn::CompiledPatchCNN compiled =
      nn::CompiledPatchCNN::compile(model, enc, nn::required_levels(model), ctx.params().default_scale());
  std::printf("compile: %.1f s (%zu lanes, %zu group)\n", seconds_since(t), compiled.lanes(), compiled.groups());
  const runtime::ClientSpec spec = runtime::ClientSpec::of(compiled, ctx.params());
  t = std::chrono::steady_clock::now();
  auto [secret, keys] = runtime::generate_keys(ctx, spec);
  std::printf("keygen: %.1f s\n", seconds_since(t));
  const runtime::Client client(ctx, spec, std::move(secret));
  const ckks::Evaluator eval(ctx, &keys.relin, &keys.galois);
  const auto tasks = runtime::backbone_tasks(compiled, eval);

  std::vector<double> rel_err(count), latency(count);
  std::vector<std::size_t> enc_label(count);
  std::atomic<std::size_t> next{0};
  t = std::chrono::steady_clock::now();
  const auto work = [&] {
    omp_set_num_threads(1);
    for (std::size_t i = next++; i < count; i = next++) {
      const auto t0 = std::chrono::steady_clock::now();
      std::vector<ckks::Ciphertext> heads;  // client encrypts, server runs the groups
      const runtime::Bundle patches = client.encrypt_image(all.images[i]);
      for (std::size_t g = 0; g < compiled.groups(); ++g)
        heads.push_back(tasks(g, ckks::expand_seeded(ctx, ckks::load_seeded_ciphertext(ctx, patches.objects[g]))));
      const nn::Tensor got = client.decrypt_embedding({keys.key_set, {compiled.aggregate(eval, heads)}});
      latency[i] = seconds_since(t0);
      const nn::Tensor want = model.embedding(all.images[i]);
      double err = 0, scale = 0;
      for (std::size_t k = 0; k < want.data.size(); ++k) {
        err = std::max(err, std::fabs(got.data[k] - want.data[k]));
        scale = std::max(scale, std::fabs(want.data[k]));
      }
      rel_err[i] = err / scale;
      enc_label[i] = argmax(got.data);
    }
  };
  std::vector<std::thread> pool;
  for (std::size_t w = 0; w < workers; ++w) pool.emplace_back(work);
  for (auto& th : pool) th.join();
  const double total = seconds_since(t);
  std::size_t agree = 0, enc_correct = 0, plain_correct = 0;
  double mean_err = 0, mean_latency = 0;
  for (std::size_t i = 0; i < count; ++i) {
    agree += enc_label[i] == plain_label[i];
    enc_correct += enc_label[i] == static_cast<std::size_t>(all.labels[i]);
    plain_correct += plain_label[i] == static_cast<std::size_t>(all.labels[i]);
    mean_err += rel_err[i] / static_cast<double>(count);
    mean_latency += latency[i] / static_cast<double>(count);
  }
  rusage u{};
  getrusage(RUSAGE_SELF, &u);
  std::printf("encrypted, first %zu test images on %zu threads: accuracy %.4f (plaintext on the same images %.4f), "
              "label agreement %zu/%zu, logit relative error max %.3e mean %.3e, latency per image %.2f s "
              "(one thread), throughput %.2f s per image, peak RSS %.2f GB\n",
              count, workers, static_cast<double>(enc_correct) / static_cast<double>(count),
              static_cast<double>(plain_correct) / static_cast<double>(count), agree, count,
              *std::max_element(rel_err.begin(), rel_err.end()), mean_err, mean_latency,
              total / static_cast<double>(count), static_cast<double>(u.ru_maxrss) / (1024.0 * 1024.0));
  return agree == count ? 0 : 1;
}
