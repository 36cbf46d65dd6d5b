// The element-wise algebra the ONNX importer follows (nn/onnx_elementwise.h): ONNX
// broadcasting of constants, per-channel constants against a value's shape, and channel
// polynomials, checked on torch's way of writing a HerPN.
#include <gtest/gtest.h>

#include <cmath>
#include <numbers>

#include "nn/onnx_elementwise.h"

using namespace pfhe::nn;
using namespace pfhe::nn::onnx_detail;

TEST(OnnxElementwise, ConstantsBroadcastLikeNumpy) {
  const Constant column{{2, 1}, {1, 2}}, row{{3}, {10, 20, 30}};
  const Constant sum = broadcast(column, row, std::plus<>());
  EXPECT_EQ(sum.dims, (std::vector<std::int64_t>{2, 3}));
  EXPECT_EQ(sum.values, (std::vector<double>{11, 21, 31, 12, 22, 32}));
  const Constant scalar{{}, {2}};
  EXPECT_EQ(broadcast(row, scalar, std::multiplies<>()).values, (std::vector<double>{20, 40, 60}));
  EXPECT_THROW(broadcast(row, Constant{{2}, {1, 2}}, std::plus<>()), std::invalid_argument);
}

TEST(OnnxElementwise, PerChannelConstantsAgainstTheValueShape) {
  const std::vector<std::size_t> image{1, 3, 2, 2}, flat{1, 3};
  EXPECT_EQ(per_channel(Constant{{}, {0.5}}, image), (Coefficient{0.5}));
  EXPECT_EQ(per_channel(Constant{{1, 3, 1, 1}, {1, 2, 3}}, image), (Coefficient{1, 2, 3}));
  EXPECT_EQ(per_channel(Constant{{3, 1, 1}, {1, 2, 3}}, image), (Coefficient{1, 2, 3}));
  EXPECT_EQ(per_channel(Constant{{3}, {1, 2, 3}}, flat), (Coefficient{1, 2, 3}));
  // The same value everywhere (torch's ones_like, a full tensor) is one value.
  EXPECT_EQ(per_channel(Constant{{1, 3, 2, 2}, std::vector<double>(12, 1.0)}, image), (Coefficient{1.0}));
  Constant per_channel_planes{{1, 3, 2, 2}, {}};
  for (int c = 0; c < 3; ++c) per_channel_planes.values.insert(per_channel_planes.values.end(), 4, c + 1.0);
  EXPECT_EQ(per_channel(per_channel_planes, image), (Coefficient{1, 2, 3}));
  // Along the width, not the channels (a [3] against (1, 3, 2, 2) broadcasts over W = 2: no).
  EXPECT_THROW(per_channel(Constant{{3}, {1, 2, 3}}, image), std::invalid_argument);
  // Varying inside a channel.
  EXPECT_THROW(per_channel(Constant{{1, 1, 2, 2}, {1, 2, 3, 4}}, image), std::invalid_argument);
  EXPECT_THROW(per_channel(Constant{{1, 1, 1, 3, 1, 1}, {1, 2, 3}}, image), std::invalid_argument);
}

// torch's HerPN: gamma * [BN0(1)/sqrt(2 pi) + BN1(x)/2 + BN2((x*x - 1)/sqrt 2)/sqrt(4 pi)] +
// beta, followed step by step as the importer does, is HerPN::fuse's quadratic.
TEST(OnnxElementwise, TorchsHerPNFoldsToItsFusedQuadratic) {
  const auto bn = [](std::vector<double> mean, std::vector<double> var) {
    return BatchNorm{std::move(mean), std::move(var), {}, {}, 1e-5};
  };
  const HerPN h{bn({0.1, -0.2}, {0.9, 1.3}), bn({0.3, 0.05}, {1.1, 0.7}), bn({-0.4, 0.2}, {2.0, 0.6}), {0.8, 1.2},
                {0.1, -0.3}};
  const auto affine = [](const BatchNorm& b, const ChannelPoly& p) {
    std::vector<double> scale, shift;
    b.affine_form(scale, shift);
    return p.times(scale).plus(shift);
  };
  const Constant ones{{1, 2, 3, 3}, std::vector<double>(18, 1.0)};
  const Constant h0 = broadcast(batch_norm_of(ones, h.bn0), Constant{{}, {std::sqrt(2 * std::numbers::pi)}},
                                std::divides<>());
  const ChannelPoly x = ChannelPoly::identity();
  const ChannelPoly square = x.times(x).plus(Coefficient{-1.0}).times(Coefficient{1 / std::numbers::sqrt2});
  const ChannelPoly y = affine(h.bn1, x)
                            .times(Coefficient{0.5})
                            .plus(affine(h.bn2, square).times(Coefficient{1 / std::sqrt(4 * std::numbers::pi)}), 1.0)
                            .plus(per_channel(h0, {1, 2, 3, 3}))
                            .times(h.gamma)
                            .plus(h.beta);
  const Quadratic want = h.fuse();
  ASSERT_EQ(y.degree(), 2u);
  EXPECT_FALSE(y.uniform());
  for (std::size_t c = 0; c < 2; ++c) {
    EXPECT_NEAR(y.expanded(2, 2)[c], want.w2[c], 1e-14);
    EXPECT_NEAR(y.expanded(1, 2)[c], want.w1[c], 1e-14);
    EXPECT_NEAR(y.expanded(0, 2)[c], want.w0[c], 1e-14);
  }
}

TEST(OnnxElementwise, ChannelPolynomialsStayCompact) {
  const ChannelPoly x = ChannelPoly::identity();
  // x*x - x*x + 2x: the square cancels, one value per coefficient.
  const ChannelPoly p = x.times(x).plus(x.times(x), -1.0).plus(x.times(Coefficient{2.0}), 1.0);
  EXPECT_EQ(p.degree(), 1u);
  EXPECT_TRUE(p.uniform());
  EXPECT_EQ(p.coeffs[1], (Coefficient{2.0}));
  // Per-channel factors that are equal collapse to one value.
  EXPECT_TRUE(x.times(Coefficient{3.0, 3.0}).uniform());
  EXPECT_THROW(x.times(Coefficient{1, 2}).times(Coefficient{1, 2, 3}), std::invalid_argument);
  EXPECT_THROW(x.times(Coefficient{1, 2}).expanded(1, 3), std::invalid_argument);
}
