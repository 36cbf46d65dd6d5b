// Real data: the HerPN PatchCNN trained on Fashion-MNIST by tools/train_fashion_mnist.py
// (weights in tests/data/fashion_pcnn.pfhm) classifies test images encrypted at 128-bit
// secure parameters chosen from its depth; the encrypted labels must equal the plaintext
// ones on every image and the logits must agree within a relative 1e-3.
#include <gtest/gtest.h>

#include <cstdio>

#include "encrypted_classifier.h"
#include "fashion_mnist.h"

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

TEST(FashionMnist, EncryptedLabelsEqualPlaintextOnes) {
  const test::EncryptedClassifier c;
  ASSERT_FALSE(c.ctx.params().insecure());
  std::printf("parameters: %s\n", c.ctx.params().describe().c_str());
  const test::FashionMnist data = test::load_fashion_mnist_test(20);
  double worst = 0;
  for (std::size_t i = 0; i < data.images.size(); ++i) {
    const nn::Tensor got = c.logits(data.images[i]);
    const nn::Tensor want = c.model.embedding(data.images[i]);
    worst = std::max(worst, nn::precision_of(got, want).relative);
    EXPECT_EQ(test::argmax(got.data), test::argmax(want.data)) << "image " << i;
  }
  std::printf("20 encrypted test images: labels equal, max relative logit error %.3e\n", worst);
  EXPECT_LE(worst, 1e-3);
}
