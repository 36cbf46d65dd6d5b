// A reduced CryptoFace backbone: calibrated synthetic weights, plaintext reference, and the
// compiled encrypted evaluation (as a graph: the backbone and a head) on a small test ring.
#include <gtest/gtest.h>

#include <cstdio>

#include "ckks/encryptor.h"
#include "ckks/keygen.h"
#include "nn/compiled_graph.h"
#include "nn/linear_map.h"
#include "nn/synthetic.h"
#include "nn_test_util.h"
#include "test_util.h"

using namespace pfhe;
using namespace pfhe::nn;

namespace {

Linear random_head(std::size_t in, std::size_t out, std::uint64_t seed) {
  const auto w = test::random_real(in * out, seed, 1.0 / std::sqrt(static_cast<double>(in)));
  return Linear{in, out, w, test::random_real(out, seed + 1, 0.1)};
}

}  // namespace

TEST(Backbone, CalibratedStatisticsNormaliseActivations) {
  const Shape patch{3, 8, 8};
  const auto images = synthetic_images(128, patch, 1);
  const Backbone b = make_synthetic_backbone(test::reduced_backbone_shape(), 7, images);
  EXPECT_EQ(b.feature_shape(patch), (Shape{64, 1, 1}));
  // After calibration the BatchNorm1d output has mean ~0 and variance ~gamma^2 per feature.
  double mean = 0;
  for (const auto& img : images)
    for (double v : b.forward(img).data) mean += v;
  mean /= 128.0 * 64.0;
  EXPECT_NEAR(mean, 0.0, 0.1);
  // The constant Hermite term is calibrated to mean 1, variance 0 (it contributes nothing);
  // the first block's input statistics are those measured on conv0's outputs.
  EXPECT_EQ(b.blocks[0].herpn1.bn0.mean[0], 1.0);
  EXPECT_EQ(b.blocks[0].herpn1.bn0.var[0], 0.0);
  double m = 0;
  for (const auto& img : images) {
    const Tensor x = b.conv0.forward(img);
    for (std::size_t i = 0; i < 64; ++i) m += x.data[i];  // channel 0
  }
  EXPECT_NEAR(b.blocks[0].herpn1.bn1.mean[0], m / (128.0 * 64.0), 1e-12);
}

TEST(Backbone, EncryptedReducedBackboneMatchesPlaintext) {
  const Shape patch{3, 8, 8};
  const Backbone model = make_synthetic_backbone(test::reduced_backbone_shape(), 11, synthetic_images(128, patch, 2));
  const Linear head = random_head(64, 16, 5);
  ckks::Context ctx(test::small_params(12, 24));
  ckks::Encoder enc(ctx);
  const double scale = ctx.params().default_scale();
  Graph graph(patch);
  graph.add("head", head, model.append_to(graph, "net", 0));
  const auto compile = [&](std::size_t budget) {
    return CompiledGraph::compile(graph, enc, 24, scale, budget);
  };
  const CompiledGraph compiled = compile(SIZE_MAX);
  EXPECT_EQ(compiled.depth(), 23u);
  const test::ModelKeys keys(ctx, compiled.rotation_levels());
  const ckks::Evaluator& eval = keys.eval;
  const ckks::Encryptor& encryptor = keys.encryptor;
  const ckks::Decryptor& decryptor = keys.decryptor;
  // All diagonals encoded just in time (budget 0): bit-identical results.
  const CompiledGraph jit = compile(0);
  EXPECT_LT(jit.plaintext_bytes(), compiled.plaintext_bytes());
  for (const Tensor& image : synthetic_images(2, patch, 3)) {
    const ckks::Ciphertext in = encryptor.encrypt(enc.encode(compiled.pack_inputs(image).front(), 24, scale));
    const ckks::Ciphertext out = compiled.run(eval, {in});
    EXPECT_EQ(out.level(), 1u);
    const ckks::Ciphertext out_jit = jit.run(eval, {in});
    EXPECT_TRUE(std::equal(out.polys[0].words().begin(), out.polys[0].words().end(), out_jit.polys[0].words().begin()));
    const Tensor got = compiled.unpack_output(enc.decode_real(decryptor.decrypt(out)));
    const Tensor want = head.forward(model.forward(image));
    double err = 0, norm = 0;
    for (std::size_t i = 0; i < want.data.size(); ++i) {
      err = std::max(err, std::fabs(got.data[i] - want.data[i]));
      norm = std::max(norm, std::fabs(want.data[i]));
    }
    EXPECT_LT(err / norm, 1e-4) << "max abs error " << err << ", max |value| " << norm;
    std::printf("reduced backbone: max abs error %.3e, max |value| %.3e\n", err, norm);
  }
}
