// Real data: the HerPN PatchCNN trained on Fashion-MNIST by tools/train_fashion_mnist.py
// (weights in tests/data/fashion_pcnn.pfhm) classifies test images encrypted at 128-bit
// secure parameters chosen from its depth; the encrypted labels must equal the plaintext
// ones on every image and the logits must agree within a relative 1e-3.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>

#include "ckks/keygen.h"
#include "ckks/serialization.h"
#include "fashion_mnist.h"
#include "nn/model_file.h"
#include "nn/parameter_choice.h"
#include "runtime/client_server.h"

using namespace pfhe;

namespace {
std::size_t argmax(const std::vector<double>& v) {
  return static_cast<std::size_t>(std::max_element(v.begin(), v.end()) - v.begin());
}
}  // namespace

TEST(FashionMnist, PlaintextModelClassifies) {
  const nn::PatchCNN model = nn::load_model_file(PFHE_SOURCE_DIR "/tests/data/fashion_pcnn.pfhm");
  ASSERT_TRUE(model.classifier);
  const test::FashionMnist data = test::load_fashion_mnist_test(500);
  std::size_t correct = 0;
  for (std::size_t i = 0; i < data.images.size(); ++i)
    correct += argmax(model.embedding(data.images[i]).data) == static_cast<std::size_t>(data.labels[i]);
  const double accuracy = static_cast<double>(correct) / static_cast<double>(data.images.size());
  std::printf("plaintext (float64) accuracy on the first 500 test images: %.3f\n", accuracy);
  EXPECT_GT(accuracy, 0.8);
}

TEST(FashionMnist, EncryptedLabelsEqualPlaintextOnes) {
  const nn::PatchCNN model = nn::load_model_file(PFHE_SOURCE_DIR "/tests/data/fashion_pcnn.pfhm");
  const ckks::Context ctx(ckks::Parameters::create(nn::choose_parameters(nn::required_levels(model))));
  ASSERT_FALSE(ctx.params().insecure());
  std::printf("parameters: %s\n", ctx.params().describe().c_str());
  const ckks::Encoder enc(ctx);
  const nn::CompiledPatchCNN compiled =
      nn::CompiledPatchCNN::compile(model, enc, nn::required_levels(model), ctx.params().default_scale(), SIZE_MAX);
  const runtime::ClientSpec spec = runtime::ClientSpec::of(compiled, ctx.params());
  auto [secret, keys] = runtime::generate_keys(ctx, spec);
  const runtime::Client client(ctx, spec, std::move(secret));
  const ckks::Evaluator eval(ctx, &keys.relin, &keys.galois);
  const auto tasks = runtime::backbone_tasks(compiled, eval);

  const test::FashionMnist data = test::load_fashion_mnist_test(20);
  double worst = 0;
  for (std::size_t i = 0; i < data.images.size(); ++i) {
    runtime::CiphertextFile patches{keys.key_set, {}};
    for (const auto& o : client.encrypt_image(data.images[i]).objects)
      patches.ciphertexts.push_back(ckks::expand_seeded(ctx, ckks::load_seeded_ciphertext(ctx, o)));
    std::vector<ckks::Ciphertext> heads;
    for (std::size_t g = 0; g < compiled.groups(); ++g) heads.push_back(tasks(g, patches.ciphertexts[g]));
    const nn::Tensor got = client.decrypt_embedding({keys.key_set, {compiled.aggregate(eval, heads)}});
    const nn::Tensor want = model.embedding(data.images[i]);
    double err = 0, scale = 0;
    for (std::size_t k = 0; k < want.data.size(); ++k) {
      err = std::max(err, std::fabs(got.data[k] - want.data[k]));
      scale = std::max(scale, std::fabs(want.data[k]));
    }
    worst = std::max(worst, err / scale);
    EXPECT_EQ(argmax(got.data), argmax(want.data)) << "image " << i;
  }
  std::printf("20 encrypted test images: labels equal, max relative logit error %.3e\n", worst);
  EXPECT_LE(worst, 1e-3);
}
