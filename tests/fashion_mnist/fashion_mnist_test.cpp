// Real data: the HerPN PatchCNN trained on Fashion-MNIST by tools/train_fashion_mnist.py
// (weights in tests/data/fashion_pcnn.pfhm, and the same model as torch exported it in
// tests/data/fashion_pcnn.onnx) classifies test images encrypted at 128-bit secure
// parameters chosen from its depth; the encrypted labels must equal the plaintext ones on
// every image and the logits must agree within a relative 1e-3.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include <cstdio>
#include <fstream>

#include "encrypted_classifier.h"
#include "fashion_mnist.h"
#include "nn/graph_file.h"

using namespace pfhe;

TEST(FashionMnist, PlaintextModelClassifies) {
  const nn::PatchCNN model = test::load_fashion_model();
  ASSERT_TRUE(model.classifier);
  const test::FashionMnist data = test::load_fashion_mnist_test(500);
  std::size_t correct = 0;
  for (std::size_t i = 0; i < data.images.size(); ++i)
    correct += test::argmax(model.embedding(data.images[i]).data) == static_cast<std::size_t>(data.labels[i]);
  const double accuracy = static_cast<double>(correct) / static_cast<double>(data.images.size());
  std::printf("plaintext (float64) accuracy on the first 500 test images: %.3f\n", accuracy);
  EXPECT_GT(accuracy, 0.8);
}

namespace {

// `count` test images encrypted through `c`: the labels equal its float64 graph's, the
// logits within a relative 1e-3.
void expect_encrypted_labels_equal_plaintext(const test::EncryptedClassifier& c, std::size_t count) {
  ASSERT_FALSE(c.ctx.params().insecure());
  std::printf("parameters: %s\n", c.ctx.params().describe().c_str());
  const test::FashionMnist data = test::load_fashion_mnist_test(count);
  double worst = 0;
  for (std::size_t i = 0; i < data.images.size(); ++i) {
    const nn::Tensor got = c.logits(data.images[i]);
    const nn::Tensor want = c.graph.forward(data.images[i]);
    worst = std::max(worst, nn::precision_of(got, want).relative);
    EXPECT_EQ(test::argmax(got.data), test::argmax(want.data)) << "image " << i;
  }
  std::printf("%zu encrypted test images: labels equal, max relative logit error %.3e\n", count, worst);
  EXPECT_LE(worst, 1e-3);
}

}  // namespace

TEST(FashionMnist, EncryptedLabelsEqualPlaintextOnes) {
  expect_encrypted_labels_equal_plaintext(test::EncryptedClassifier(test::fashion_model_from_file()), 20);
}

// The ONNX file torch wrote for the same trained model (tools/train_fashion_mnist.py)
// imports as the same classifier: its HerPNs (BatchNorms of 1, x and x^2, scaled per
// channel) one per-channel quadratic each, the float64 labels of the model file on 500
// test images, and encrypted (5 images) from parameters chosen for the imported graph.
TEST(FashionMnist, OnnxExportImportsAsTheSameClassifier) {
  const nn::Graph imported = nn::import_onnx_file(test::kFashionOnnxFile);
  const nn::Graph shipped = test::load_fashion_model().to_graph();
  const auto count = [](const nn::Graph& g, std::size_t op) {
    return std::count_if(g.nodes().begin(), g.nodes().end(), [&](const nn::GraphNode& n) { return n.op.index() == op; });
  };
  const std::size_t quadratic = nn::GraphOp(nn::Quadratic{}).index();
  EXPECT_EQ(count(imported, quadratic), 4 * 7);  // 4 patches x (3 blocks x 2 + the pooling HerPN)
  EXPECT_EQ(count(imported, quadratic), count(shipped, quadratic));
  const test::FashionMnist data = test::load_fashion_mnist_test(532);
  double worst = 0;
  for (std::size_t i = 0; i < 500; ++i) {
    const nn::Tensor got = imported.forward(data.images[i]), want = shipped.forward(data.images[i]);
    worst = std::max(worst, nn::precision_of(got, want).relative);
    EXPECT_EQ(test::argmax(got.data), test::argmax(want.data)) << "image " << i;
  }
  std::printf("500 test images: imported ONNX graph and model file agree on every label, max relative logit "
              "difference %.2e (the export folds convolutions' BatchNorms in float32)\n", worst);
  EXPECT_LT(worst, 1e-4);
  const std::vector<nn::Tensor> calibration(data.images.begin() + 500, data.images.end());
  // 5 images here (the 500 encrypted are the benchmark's, docs/BENCHMARKS.md).
  expect_encrypted_labels_equal_plaintext(test::EncryptedClassifier(test::fashion_model_from_onnx(calibration)), 5);
}

// The shipped ResNet-20 (tests/data/resnet20_fashion.pfhm, tools/train_resnet20_fashion.py):
// pfhe's float64 forward reproduces the logits torch wrote next to it for the first test
// images, and it classifies like its recorded accuracy.
TEST(FashionMnist, ShippedResNet20MatchesTorchAndClassifies) {
  const std::string dir = std::string(PFHE_SOURCE_DIR) + "/tests/data/";
  const nn::Graph g = nn::load_graph_file(dir + "resnet20_fashion.pfhm");
  std::ifstream report_file(dir + "resnet20_fashion.json");
  const nlohmann::json report = nlohmann::json::parse(report_file);
  const auto& torch_logits = report.at("first_test_logits");
  const test::FashionMnist data = test::load_fashion_mnist_test(200);
  const auto grey = [](const nn::Tensor& rgb) {
    nn::Tensor t({1, rgb.shape.height, rgb.shape.width});
    std::copy(rgb.data.begin(), rgb.data.begin() + static_cast<std::ptrdiff_t>(t.data.size()), t.data.begin());
    return t;
  };
  ASSERT_GE(torch_logits.size(), 4u);
  for (std::size_t i = 0; i < torch_logits.size(); ++i) {
    const nn::Tensor got = g.forward(grey(data.images[i]));
    nn::Tensor want(got.shape);
    want.data = torch_logits[i].get<std::vector<double>>();
    EXPECT_LT(nn::precision_of(got, want).relative, 1e-5) << "image " << i;
  }
  std::size_t correct = 0;
  for (std::size_t i = 0; i < data.images.size(); ++i)
    correct += test::argmax(g.forward(grey(data.images[i])).data) == static_cast<std::size_t>(data.labels[i]);
  const double accuracy = static_cast<double>(correct) / static_cast<double>(data.images.size());
  std::printf("ResNet-20 float64 accuracy on the first 200 test images: %.3f (recorded on 10,000: %.4f)\n", accuracy,
              report.at("plaintext_test_accuracy").get<double>());
  EXPECT_GT(accuracy, 0.85);
}
