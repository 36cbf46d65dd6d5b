// The Fashion-MNIST table of docs/BENCHMARKS.md: the trained HerPN PatchCNN
// (tools/train_fashion_mnist.py; its model file tests/data/fashion_pcnn.pfhm, or with
// "onnx" the ONNX file torch wrote for it, tests/data/fashion_pcnn.onnx, imported) in
// float64 on all 10,000 test images, then encrypted on the first N (client encrypts, server
// infers, client decrypts) at 128-bit secure parameters chosen from its depth, W images at
// a time on W threads. Prints accuracies, label agreement, logit relative error, latency,
// peak RSS.
//   pfhe_fashion_mnist_bench [N=500] [W=2] [pfhm|onnx]
#include <omp.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdio>
#include <string>
#include <thread>

#include "fashion_mnist/encrypted_classifier.h"
#include "fashion_mnist/fashion_mnist.h"
#include "ring/poly.h"

using namespace pfhe;
using runtime::seconds_since;
using test::argmax;

int main(int argc, char** argv) {
  const std::size_t count = argc > 1 ? std::stoul(argv[1]) : 500;
  const std::size_t workers = argc > 2 ? std::stoul(argv[2]) : 2;
  const std::string source = argc > 3 ? argv[3] : "pfhm";
  if (source != "pfhm" && source != "onnx") {
    std::fprintf(stderr, "usage: pfhe_fashion_mnist_bench [N=500] [W=2] [pfhm|onnx]\n");
    return 2;
  }
  ring::keep_freed_memory_for_reuse();
  const test::FashionMnist all = test::load_fashion_mnist_test(10000);
  // The ONNX model's output range is measured on the last 32 test images (not among the N).
  const std::vector<nn::Tensor> calibration(all.images.end() - 32, all.images.end());
  const test::EncryptedClassifier c(source == "onnx" ? test::fashion_model_from_onnx(calibration)
                                                     : test::fashion_model_from_file());
  const nn::Graph& model = c.graph;
  std::printf("model: %s\n", source == "onnx" ? test::kFashionOnnxFile : test::kFashionModelFile);
  std::size_t correct = 0;
  std::vector<std::size_t> plain_label(all.images.size());
  for (std::size_t i = 0; i < all.images.size(); ++i) {
    plain_label[i] = argmax(model.forward(all.images[i]).data);
    correct += plain_label[i] == static_cast<std::size_t>(all.labels[i]);
  }
  std::printf("plaintext (float64) accuracy, 10000 test images: %.4f\n", correct / 10000.0);

  std::printf("parameters: %s\n", c.ctx.params().describe().c_str());
  std::printf("compile (as a graph): %.1f s (%zu lanes, %zu input ciphertext(s))\n", c.compile_seconds,
              c.compiled.input_layout().lanes, c.compiled.inputs());
  std::printf("keygen: %.1f s\n", c.keygen_seconds);

  std::vector<double> rel_err(count), latency(count);
  std::vector<std::size_t> enc_label(count);
  std::atomic<std::size_t> next{0};
  const auto t = runtime::Clock::now();
  const auto work = [&] {
    omp_set_num_threads(1);
    for (std::size_t i = next++; i < count; i = next++) {
      const auto t0 = runtime::Clock::now();
      const nn::Tensor got = c.logits(all.images[i]);  // client encrypts, server evaluates, client decrypts
      latency[i] = seconds_since(t0);
      rel_err[i] = nn::precision_of(got, model.forward(all.images[i])).relative;
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
  std::printf("encrypted, first %zu test images on %zu threads: accuracy %.4f (plaintext on the same images %.4f), "
              "label agreement %zu/%zu, logit relative error max %.3e mean %.3e, latency per image %.2f s "
              "(one thread), throughput %.2f s per image, peak RSS %.2f GB\n",
              count, workers, static_cast<double>(enc_correct) / static_cast<double>(count),
              static_cast<double>(plain_correct) / static_cast<double>(count), agree, count,
              *std::max_element(rel_err.begin(), rel_err.end()), mean_err, mean_latency,
              total / static_cast<double>(count), runtime::peak_rss_gb());
  return agree == count ? 0 : 1;
}
