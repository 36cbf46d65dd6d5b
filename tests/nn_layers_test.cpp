// nn layers: plaintext references, HerPN fusion, slot layouts and linear-layer lowering,
// in the clear and encrypted.
#include <gtest/gtest.h>

#include <cmath>
#include <random>

#include "ckks/encryptor.h"
#include "ckks/keygen.h"
#include "nn/layers.h"
#include "nn/linear_map.h"
#include "nn/precision.h"
#include "test_util.h"

using namespace pfhe;
using namespace pfhe::nn;

namespace {
std::mt19937_64 rng(99);

std::vector<double> random_vec(std::size_t n, double lo, double hi) {
  std::uniform_real_distribution<double> d(lo, hi);
  std::vector<double> v(n);
  for (auto& x : v) x = d(rng);
  return v;
}

Tensor random_tensor(Shape s) {
  Tensor t(s);
  t.data = random_vec(s.size(), -1, 1);
  return t;
}

Conv2d random_conv(std::size_t cin, std::size_t cout, std::size_t k, std::size_t stride, std::size_t pad, bool bias) {
  Conv2d c{cin, cout, k, stride, pad, random_vec(cout * cin * k * k, -0.5, 0.5), {}};
  if (bias) c.bias = random_vec(cout, -0.2, 0.2);
  return c;
}

BatchNorm random_bn(std::size_t c, bool affine) {
  BatchNorm bn{random_vec(c, -0.5, 0.5), random_vec(c, 0.2, 2.0), {}, {}, 1e-5};
  if (affine) {
    bn.gamma = random_vec(c, 0.5, 1.5);
    bn.beta = random_vec(c, -0.3, 0.3);
  }
  return bn;
}

double max_diff(const Tensor& a, const Tensor& b) {
  EXPECT_EQ(a.shape, b.shape);
  double m = 0;
  for (std::size_t i = 0; i < a.data.size(); ++i) m = std::max(m, std::fabs(a.data[i] - b.data[i]));
  return m;
}
}  // namespace

TEST(NnLayers, HerpnFusionEqualsTrainingForm) {
  HerPN h{random_bn(8, false), random_bn(8, false), random_bn(8, false), random_vec(8, 0.5, 1.5), random_vec(8, -0.5, 0.5)};
  const Tensor x = random_tensor({8, 5, 5});
  EXPECT_LT(max_diff(h.forward(x), h.fuse().forward(x)), 1e-12);
  h.gamma.pop_back();
  EXPECT_THROW(h.fuse(), std::invalid_argument);
}

TEST(NnLayers, ConvPoolLinearShapesAndValues) {
  const Conv2d conv = random_conv(2, 3, 3, 2, 1, true);
  const Tensor x = random_tensor({2, 6, 6});
  const Tensor y = conv.forward(x);
  EXPECT_EQ(y.shape, (Shape{3, 3, 3}));
  // Hand-computed corner (padding on top/left).
  double acc = conv.bias[1];
  for (std::size_t c = 0; c < 2; ++c)
    for (std::size_t dy = 1; dy < 3; ++dy)
      for (std::size_t dx = 1; dx < 3; ++dx) acc += conv.w(1, c, dy, dx) * x.at(c, dy - 1, dx - 1);
  EXPECT_NEAR(y.at(1, 0, 0), acc, 1e-12);
  EXPECT_THROW(conv.forward(random_tensor({3, 6, 6})), std::invalid_argument);
  const Tensor p = AdaptiveAvgPool2d{2}.forward(x);
  EXPECT_EQ(p.shape, (Shape{2, 2, 2}));
  EXPECT_NEAR(p.at(1, 1, 0), (x.at(1, 3, 0) + x.at(1, 3, 1) + x.at(1, 3, 2) + x.at(1, 4, 0) + x.at(1, 4, 1) +
                               x.at(1, 4, 2) + x.at(1, 5, 0) + x.at(1, 5, 1) + x.at(1, 5, 2)) / 9, 1e-12);
  EXPECT_THROW(AdaptiveAvgPool2d{4}.forward(x), std::invalid_argument);
  Linear lin{8, 3, random_vec(24, -1, 1), random_vec(3, -1, 1)};
  const Tensor z = lin.forward(p);
  EXPECT_NEAR(z.data[2], [&] {
    double s = lin.bias[2];
    for (std::size_t i = 0; i < 8; ++i) s += lin.weight[16 + i] * p.data[i];
    return s;
  }(), 1e-12);
  const BatchNorm bn = random_bn(2, true);
  const Tensor b = bn.forward(x);
  EXPECT_NEAR(b.at(1, 2, 3), bn.gamma[1] * (x.at(1, 2, 3) - bn.mean[1]) / std::sqrt(bn.var[1] + bn.eps) + bn.beta[1], 1e-12);
}

// Regression: the adaptive pool took its block width from the input height, so a
// non-square input (4 x 8 -> 2 x 2) averaged 2 x 2 blocks instead of 2 x 4.
TEST(NnLayers, AdaptivePoolOfNonSquareInputAveragesWholeBlocks) {
  const Tensor x = random_tensor({1, 4, 8});
  const Tensor p = AdaptiveAvgPool2d{2}.forward(x);
  ASSERT_EQ(p.shape, (Shape{1, 2, 2}));
  double block = 0;
  for (std::size_t y = 2; y < 4; ++y)
    for (std::size_t c = 4; c < 8; ++c) block += x.at(0, y, c);
  EXPECT_NEAR(p.at(0, 1, 1), block / 8, 1e-12);
}

TEST(NnLayout, MultiplexedSlotsAreDistinctAndInRange) {
  const Layout l{{8, 4, 4}, 2, 256};
  l.validate();
  std::vector<int> seen(l.slots, 0);
  for (std::size_t c = 0; c < 8; ++c)
    for (std::size_t y = 0; y < 4; ++y)
      for (std::size_t x = 0; x < 4; ++x) ++seen[l.slot(c, y, x)];
  for (std::size_t s = 0; s < l.span(); ++s) EXPECT_EQ(seen[s], 1) << "slot " << s;
  EXPECT_THROW((Layout{{64, 8, 8}, 1, 1024}.validate()), std::invalid_argument);
  const Tensor t = random_tensor({8, 4, 4});
  EXPECT_EQ(max_diff(unpack(pack(t, l), l), t), 0.0);
}

// A CryptoFace-like chain on a 16x16 input: conv s1, conv s2 (gap 1 -> 2), conv s1 at gap 2,
// conv s2 (gap 2 -> 4), 1x1 shortcut conv s2, channel affine, average pool, linear.
TEST(NnLowering, ChainMatchesPlaintextInTheClear) {
  const std::size_t slots = 4096;
  Layout l0{{3, 16, 16}, 1, slots};
  Tensor x = random_tensor(l0.shape);
  std::vector<double> v = pack(x, l0);
  const Conv2d convs[] = {random_conv(3, 4, 3, 1, 1, false), random_conv(4, 8, 3, 2, 1, true),
                          random_conv(8, 8, 3, 1, 1, false), random_conv(8, 16, 3, 2, 1, false)};
  Layout cur = l0;
  for (const Conv2d& c : convs) {
    const Layout out = conv_output_layout(c, cur);
    const SlotLinearMap m = lower_conv(c, cur, out);
    v = m.apply(v);
    x = c.forward(x);
    cur = out;
    EXPECT_LT(max_diff(unpack(v, cur), x), 1e-12) << "after conv to " << cur.shape.str() << " gap " << cur.gap;
  }
  EXPECT_EQ(cur.gap, 4u);
  const BatchNorm bn = random_bn(16, true);
  std::vector<double> scale, shift;
  bn.affine_form(scale, shift);
  v = lower_channel_affine(scale, shift, cur).apply(v);
  x = bn.forward(x);
  EXPECT_LT(max_diff(unpack(v, cur), x), 1e-12);
  const AvgPool2d pool{2, 2};
  const Layout pooled = pool_output_layout(pool, cur);
  v = lower_avg_pool(pool, cur, pooled).apply(v);
  x = pool.forward(x);
  EXPECT_LT(max_diff(unpack(v, pooled), x), 1e-12);
  const Linear lin{pooled.shape.size(), 10, random_vec(pooled.shape.size() * 10, -0.1, 0.1), random_vec(10, -1, 1)};
  v = lower_linear(lin, pooled, Layout{{10, 1, 1}, 1, slots}).apply(v);
  x = lin.forward(x);
  for (std::size_t f = 0; f < 10; ++f) EXPECT_NEAR(v[f], x.data[f], 1e-12);
}

TEST(NnLowering, DiagonalsReproduceTheMapAndStayFewWithGaps) {
  const Layout in{{8, 8, 8}, 1, 1024};
  const Conv2d c = random_conv(8, 8, 3, 2, 1, false);
  const Layout out = conv_output_layout(c, in);
  const SlotLinearMap m = lower_conv(c, in, out);
  const auto diags = m.diagonals();
  // With the gapped output layout every (input, output) channel pair and kernel tap is one
  // diagonal whatever the position, so the count does not grow with the image: the same
  // convolution on a 16x16 input has exactly as many diagonals as on 8x8.
  const Layout big{{8, 16, 16}, 1, 4096};
  EXPECT_EQ(lower_conv(c, big, conv_output_layout(c, big)).diagonals().size(), diags.size());
  EXPECT_LE(diags.size(), 8u * 8u * 9u);
  const auto x = random_vec(1024, -1, 1);
  std::vector<double> y(1024, 0.0);
  for (const auto& [k, d] : diags)
    for (std::size_t i = 0; i < 1024; ++i) y[i] += d[i].real() * x[(i + static_cast<std::size_t>(k)) % 1024];
  const auto want = m.apply(x);
  for (std::size_t i = 0; i < 1024; ++i) ASSERT_NEAR(y[i], want[i], 1e-12);
}

TEST(NnLowering, EncryptedConvolutionMatchesPlaintext) {
  ckks::Context ctx(test::small_params(11, 3));
  ckks::Encoder enc(ctx);
  ckks::KeyGenerator kg(ctx);
  const std::size_t slots = ctx.n() / 2;
  const Layout in{{4, 8, 8}, 1, slots};
  const Conv2d conv = random_conv(4, 4, 3, 2, 1, true);
  const Layout out = conv_output_layout(conv, in);
  const SlotLinearMap map = lower_conv(conv, in, out);
  const ckks::LinearTransform lt(enc, map.diagonals(), slots, 3);
  const ckks::GaloisKeys gk = kg.create_galois_keys(lt.rotation_steps());
  const ckks::Evaluator eval(ctx, nullptr, &gk);
  const ckks::Encryptor encryptor(ctx, kg.secret_key());
  const ckks::Decryptor decryptor(ctx, kg.secret_key());
  const Tensor x = random_tensor(in.shape);
  ckks::Ciphertext c = lt.apply(eval, encryptor.encrypt(enc.encode(pack(x, in), 3, ctx.params().default_scale())));
  eval.rescale_inplace(c);
  eval.add_plain_inplace(c, enc.encode(map.bias, c.level(), c.scale));
  const Tensor got = unpack(enc.decode_real(decryptor.decrypt(c)), out);
  EXPECT_LT(max_diff(got, conv.forward(x)), 1e-5);
}

// Fully replicated (cyclic) layouts: every output replica is right, and a stride-1
// convolution needs C channel offsets instead of 2C - 1.
TEST(NnLowering, ReplicatedLayoutsAreCyclicAndNeedFewerDiagonals) {
  const std::size_t slots = 2048;
  Layout cur = with_full_replication(Layout{{4, 8, 8}, 1, slots});
  EXPECT_EQ(cur.replicas, 8u);
  EXPECT_TRUE(cur.cyclic());
  Tensor x = random_tensor(cur.shape);
  std::vector<double> v = pack(x, cur);
  for (const Conv2d& c : {random_conv(4, 4, 3, 1, 1, true), random_conv(4, 8, 3, 2, 1, false),
                          random_conv(8, 8, 3, 1, 1, false)}) {
    const Layout out = conv_output_layout(c, cur);
    EXPECT_TRUE(out.cyclic());
    v = lower_conv(c, cur, out).apply(v);
    x = c.forward(x);
    cur = out;
    for (std::size_t r = 0; r < cur.replicas; ++r) {
      std::vector<double> copy(slots, 0.0);
      for (std::size_t s = 0; s < cur.span(); ++s) copy[s] = v[r * cur.span() + s];
      ASSERT_LT(max_diff(unpack(copy, Layout{cur.shape, cur.gap, slots}), x), 1e-12) << "replica " << r;
    }
  }
  const Conv2d c16 = random_conv(16, 16, 3, 1, 1, false);
  const Layout plain{{16, 16, 16}, 1, 8192};
  const Layout cyclic = with_full_replication(plain);
  const std::size_t d_plain = lower_conv(c16, plain, conv_output_layout(c16, plain)).diagonals().size();
  const std::size_t d_cyclic = lower_conv(c16, cyclic, conv_output_layout(c16, cyclic)).diagonals().size();
  EXPECT_EQ(d_plain, 31u * 9u);
  EXPECT_EQ(d_cyclic, 16u * 9u);
}

// Regression: a cyclic layout with exactly one replica (span = slots) lost its cyclic
// property at the next strided convolution, whose output was then left unreplicated.
TEST(NnLowering, CyclicSingleReplicaStaysCyclicThroughStride) {
  const Layout in = with_full_replication(Layout{{4, 8, 8}, 1, 256});
  ASSERT_EQ(in.replicas, 1u);
  ASSERT_TRUE(in.cyclic());
  const Conv2d c = random_conv(4, 8, 3, 2, 1, false);
  const Layout out = conv_output_layout(c, in);
  EXPECT_TRUE(out.cyclic());
  EXPECT_EQ(out.replicas, 2u);
  const Tensor x = random_tensor(in.shape);
  const auto y = lower_conv(c, in, out).apply(pack(x, in));
  EXPECT_LT(max_diff(unpack(y, out), c.forward(x)), 1e-12);
}

// Rotated copies: a convolution writes them (from a plain input, strided or not), the next
// one splits its channel offsets over them and rotate-and-sums, needing 1/replicas of the
// diagonals. Checked on two lanes, every copy of every slot, biases and per-channel affine
// maps included.
TEST(NnLowering, RotatedCopiesSplitTheNextConvolution) {
  const std::size_t slots = 2048, lanes = 2;
  const Layout in = with_full_replication(Layout{{8, 8, 8}, 1, slots, 1, lanes});
  ASSERT_EQ(in.replicas, 2u);
  const std::vector<Conv2d> strided{random_conv(8, 16, 3, 2, 1, true), random_conv(8, 16, 3, 2, 1, true)};
  const Layout rotated = with_rotated_replicas(conv_output_layout(strided[0], in));
  ASSERT_TRUE(rotated.rotated);
  ASSERT_EQ(rotated.replicas, 4u);
  const std::vector<Conv2d> same{random_conv(16, 16, 3, 1, 1, true), random_conv(16, 16, 3, 1, 1, true)};
  const Layout plain = conv_output_layout(same[0], rotated);
  EXPECT_FALSE(plain.rotated);
  const std::vector<Tensor> x{random_tensor(in.shape), random_tensor(in.shape)};
  // Every copy k of every lane holds the tensor as replica_slot places it.
  const auto expect_packed = [&](const std::vector<double>& v, const std::vector<Tensor>& want, const Layout& layout) {
    ASSERT_EQ(v.size(), slots);
    const std::vector<double> packed = pack_lanes(want, layout);
    for (std::size_t s = 0; s < slots; ++s) ASSERT_NEAR(v[s], packed[s], 1e-12) << "slot " << s;
  };
  const SlotLinearMap first = lower_conv(strided, in, rotated);
  EXPECT_TRUE(first.post_sum_steps.empty());
  const std::vector<double> h = first.apply(pack_lanes(x, in));
  const std::vector<Tensor> h_want{strided[0].forward(x[0]), strided[1].forward(x[1])};
  expect_packed(h, h_want, rotated);
  for (std::size_t l = 0; l < lanes; ++l) EXPECT_LT(max_diff(unpack(h, rotated, l), h_want[l]), 1e-12);

  const SlotLinearMap split = lower_conv(same, rotated, plain);
  EXPECT_EQ(split.post_sum_steps.size(), 2u);  // log2(4 copies)
  expect_packed(split.apply(h), {same[0].forward(h_want[0]), same[1].forward(h_want[1])}, plain);
  const Layout unrotated = conv_output_layout(strided[0], in);
  const std::size_t full = lower_conv(same, unrotated, plain).diagonals().size();
  EXPECT_EQ(split.diagonals().size() * rotated.replicas, full);

  // A per-channel affine map keeps rotated copies rotated with a single diagonal.
  const ChannelAffine affine{random_vec(16, 0.5, 1.5), random_vec(16, -0.2, 0.2)};
  const SlotLinearMap scale = lower_channel_affine({affine, affine}, rotated);
  EXPECT_EQ(scale.diagonals().size(), 1u);
  std::vector<Tensor> scaled = h_want;
  const std::size_t plane = rotated.shape.height * rotated.shape.width;
  for (auto& t : scaled)
    for (std::size_t c = 0; c < 16; ++c)
      for (std::size_t i = 0; i < plane; ++i)
        t.data[c * plane + i] = affine.scale[c] * t.data[c * plane + i] + affine.shift[c];
  expect_packed(scale.apply(h), scaled, rotated);
}

// A plan lowers maps to their diagonal indices only (Lowered::kDiagonalIndices): the same
// indices and rotate-and-sum steps as the whole map, for every way copies share a map
// (plain copies, cyclic copies, the hybrid split of a strided layer, rotated copies split
// by the next convolution), pooling, linear heads and per-channel affine maps.
TEST(NnLowering, DiagonalIndicesOnlyMatchTheWholeMap) {
  const auto same_plan = [](const auto& lower, const char* what) {
    const SlotLinearMap whole = lower(Lowered::kEntries), planned = lower(Lowered::kDiagonalIndices);
    EXPECT_TRUE(planned.entries.empty()) << what;
    EXPECT_FALSE(whole.entries.empty()) << what;
    EXPECT_EQ(planned.diagonal_indices(), whole.diagonal_indices()) << what;
    EXPECT_EQ(planned.post_sum_steps, whole.post_sum_steps) << what;
    return whole.post_sum_steps.size();
    EXPECT_THROW(planned.diagonals(), std::logic_error) << what;
    EXPECT_THROW(planned.apply(std::vector<double>(planned.slots, 0.0)), std::logic_error) << what;
  };
  const std::size_t slots = 2048, lanes = 2;
  const Layout plain{{8, 8, 8}, 1, slots, 1, lanes};
  const Layout in = with_full_replication(plain);
  const std::vector<Conv2d> strided{random_conv(8, 16, 3, 2, 1, true), random_conv(8, 16, 3, 2, 1, true)};
  const std::vector<Conv2d> same8{random_conv(8, 8, 3, 1, 1, true), random_conv(8, 8, 3, 1, 1, true)};
  const Layout rotated = with_rotated_replicas(conv_output_layout(strided[0], in));
  const std::vector<Conv2d> same16{random_conv(16, 16, 3, 1, 1, true), random_conv(16, 16, 3, 1, 1, true)};
  same_plan([&](Lowered w) { return lower_conv(same8, plain, conv_output_layout(same8[0], plain), w); }, "plain");
  same_plan([&](Lowered w) { return lower_conv(same8, in, conv_output_layout(same8[0], in), w); }, "cyclic");
  EXPECT_EQ(same_plan([&](Lowered w) { return lower_conv(strided, in, conv_output_layout(strided[0], in), w); }, "hybrid"),
            1u);
  same_plan([&](Lowered w) { return lower_conv(strided, in, rotated, w); }, "to rotated copies");
  EXPECT_EQ(same_plan([&](Lowered w) { return lower_conv(same16, rotated, conv_output_layout(same16[0], rotated), w); },
                      "rotated copies split"),
            2u);
  const AvgPool2d pool{2, 2};
  EXPECT_EQ(same_plan([&](Lowered w) { return lower_avg_pool(pool, in, pool_output_layout(pool, in), w); }, "pooling"),
            2u);
  const Linear head{8 * 8 * 8, 10, random_vec(8 * 8 * 8 * 10, -0.1, 0.1), random_vec(10, -1, 1)};
  const Layout one_lane = with_full_replication(Layout{{8, 8, 8}, 1, slots});
  same_plan([&](Lowered w) { return lower_linear({head}, one_lane, Layout{{10, 1, 1}, 1, slots}, w); }, "linear");
  const ChannelAffine affine{random_vec(16, 0.5, 1.5), random_vec(16, -0.2, 0.2)};
  same_plan([&](Lowered w) { return lower_channel_affine({affine, affine}, rotated, w); }, "affine");
}

// Regression: a tensor smaller than its copy count (span 16, 64 copies in a lane) asked
// for rotated copies, whose rotation step would be zero positions; compiling the
// reduced demo model failed with "rotated copies need at least 2 replicas dividing the
// span". Such layouts keep plain copies, and convolutions on them stay exact.
TEST(NnLowering, TinyTensorsKeepPlainCopies) {
  const Layout in = with_full_replication(Layout{{4, 2, 2}, 1, 2048});
  ASSERT_EQ(in.span(), 16u);
  ASSERT_EQ(in.replicas, 128u);
  const Conv2d c = random_conv(4, 4, 3, 1, 1, false);
  const Layout out = with_rotated_replicas(conv_output_layout(c, in));
  EXPECT_FALSE(out.rotated);
  const Tensor x = random_tensor(in.shape);
  EXPECT_LT(max_diff(unpack(lower_conv(c, in, out).apply(pack(x, in)), out), c.forward(x)), 1e-12);
  const Layout split = with_rotated_replicas(with_full_replication(Layout{{16, 4, 4}, 1, 2048}));
  EXPECT_TRUE(split.rotated);  // span 256 >= 4 copies
}

TEST(NnLowering, EncryptedReplicatedConvolution) {
  ckks::Context ctx(test::small_params(11, 2));
  ckks::Encoder enc(ctx);
  ckks::KeyGenerator kg(ctx);
  const std::size_t slots = ctx.n() / 2;
  const Layout in = with_full_replication(Layout{{4, 8, 8}, 1, slots});
  const Conv2d conv = random_conv(4, 4, 3, 1, 1, false);
  const Layout out = conv_output_layout(conv, in);
  const SlotLinearMap map = lower_conv(conv, in, out);
  const ckks::LinearTransform lt(enc, map.diagonals(), slots, 2);
  const ckks::GaloisKeys gk = kg.create_galois_keys(lt.rotation_steps());
  const ckks::Evaluator eval(ctx, nullptr, &gk);
  const ckks::Encryptor encryptor(ctx, kg.secret_key());
  const ckks::Decryptor decryptor(ctx, kg.secret_key());
  const Tensor x = random_tensor(in.shape);
  ckks::Ciphertext c = lt.apply(eval, encryptor.encrypt(enc.encode(pack(x, in), 2, ctx.params().default_scale())));
  eval.rescale_inplace(c);
  const auto got = enc.decode_real(decryptor.decrypt(c));
  const auto want = pack(conv.forward(x), out);
  for (std::size_t s = 0; s < slots; ++s) ASSERT_NEAR(got[s], want[s], 1e-5) << "slot " << s;
}

// The precision report: max and mean absolute error, relative to the largest reference
// magnitude, in bits; a size mismatch or a non-finite reference is an error, never a pass
// (a NaN error would compare false against every bound).
TEST(NnPrecision, ReportsErrorsAndRefusesNonFiniteReferences) {
  Tensor want({4, 1, 1}), got({4, 1, 1});
  want.data = {1.0, -4.0, 2.0, 0.5};
  got.data = {1.0, -4.0 + 1e-3, 2.0 - 3e-3, 0.5};
  const Precision p = precision_of(got, want);
  EXPECT_NEAR(p.max_abs, 3e-3, 1e-15);
  EXPECT_NEAR(p.mean_abs, 1e-3, 1e-15);
  EXPECT_NEAR(p.relative, 3e-3 / 4.0, 1e-15);
  EXPECT_NEAR(p.bits(), -std::log2(3e-3 / 4.0), 1e-9);
  EXPECT_THROW(precision_of(Tensor({3, 1, 1}), want), std::invalid_argument);
  want.data[2] = std::nan("");
  EXPECT_THROW(precision_of(got, want), std::invalid_argument);
  want.data[2] = INFINITY;
  EXPECT_THROW(precision_of(got, want), std::invalid_argument);
}
