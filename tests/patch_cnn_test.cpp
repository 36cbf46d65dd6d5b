// A reduced PatchCNN (2x2 grid of 8x8 patches) end to end: per-patch encrypted backbones
// with their head blocks, tree aggregation, polynomial L2 normalisation and encrypted
// matching, against the float64 pipeline.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdio>

#include "ckks/encryptor.h"
#include "ckks/keygen.h"
#include "ckks/serialization.h"
#include "nn/compiled_graph.h"
#include "nn/linear_map.h"
#include "nn/fit.h"
#include "nn/parameter_choice.h"
#include "nn/patch_cnn.h"
#include "nn/synthetic.h"
#include "nn_test_util.h"
#include "test_util.h"

using namespace pfhe;
using namespace pfhe::nn;


TEST(PatchCnn, PlaintextPieces) {
  const auto images = synthetic_images(128, {3, 16, 16}, 4);
  const PatchCNN model = make_synthetic_patch_cnn(test::reduced_backbone_shape(), 2, 8, 16, 9, images);
  // The head blocks with the folded BatchNorm sum to the full head + BatchNorm.
  Tensor sum({16, 1, 1});
  for (std::size_t p = 0; p < 4; ++p) {
    const Tensor h = model.head_block(p).forward(model.backbones[p].forward(model.patch(images[0], p)));
    for (std::size_t i = 0; i < 16; ++i) sum.data[i] += h.data[i];
  }
  const Tensor e = model.embedding(images[0]);
  for (std::size_t i = 0; i < 16; ++i) EXPECT_NEAR(sum.data[i], e.data[i], 1e-9);
  // The fitted polynomial normalises the bulk of the calibration embeddings to norm ~1
  // (it is fitted around the mean of y; the tails are approximated less well).
  std::vector<double> norms;
  for (std::size_t k = 0; k < 32; ++k) {
    const Tensor n = model.normalized(images[k]);
    double norm = 0;
    for (double v : n.data) norm += v * v;
    norms.push_back(std::sqrt(norm));
  }
  std::sort(norms.begin(), norms.end());
  EXPECT_NEAR(norms[16], 1.0, 0.25);
  EXPECT_THROW(model.patch(images[0], 4), std::invalid_argument);
}

// lanes = 1: one ciphertext per patch (four tasks); lanes = 4: the whole image in one
// ciphertext, the four backbones side by side in interleaved lanes.
class PatchCnnLanes : public ::testing::TestWithParam<std::size_t> {};

TEST_P(PatchCnnLanes, EncryptedPipelineMatchesPlaintextAndDecisions) {
  const auto images = synthetic_images(128, {3, 16, 16}, 5);
  const PatchCNN model = make_synthetic_patch_cnn(test::reduced_backbone_shape(), 2, 8, 16, 13, images);
  ckks::Context ctx(test::small_params(11, 28));
  ckks::Encoder enc(ctx);
  const double scale = ctx.params().default_scale();
  const CompiledPatchCNN compiled = CompiledPatchCNN::compile(model, enc, 28, scale, SIZE_MAX, GetParam());
  EXPECT_EQ(compiled.depth(), 28u);
  EXPECT_EQ(compiled.lanes(), GetParam());
  EXPECT_EQ(compiled.groups(), 4 / GetParam());
  const test::ModelKeys keys(ctx, compiled.rotation_levels());
  const ckks::Evaluator& eval = keys.eval;
  const ckks::Encryptor& encryptor = keys.encryptor;
  const ckks::Decryptor& decryptor = keys.decryptor;

  const auto encrypt_groups = [&](const Tensor& image) {
    std::vector<Tensor> patches;
    for (std::size_t p = 0; p < compiled.patches(); ++p) patches.push_back(model.patch(image, p));
    std::vector<ckks::Ciphertext> out;
    for (const auto& slots : pack_patch_groups(patches, compiled.input_layout()))
      out.push_back(encryptor.encrypt(enc.encode(slots, 28, scale)));
    return out;
  };
  const auto encrypt_image = [&](const Tensor& image) {
    std::vector<ckks::Ciphertext> heads;
    const auto groups = encrypt_groups(image);
    for (std::size_t g = 0; g < compiled.groups(); ++g) heads.push_back(compiled.group(g).run(eval, groups[g]));
    return compiled.normalize(eval, compiled.aggregate(eval, std::move(heads)));
  };
  // The compiled artefact round-trips through its file format and computes the same bytes.
  const ckks::Bytes artefact = compiled.save();
  const CompiledPatchCNN loaded = CompiledPatchCNN::load(enc, artefact);
  {
    const ckks::Ciphertext in = encrypt_groups(images[2]).front();
    const ckks::Ciphertext x = compiled.group(0).run(eval, in), y = loaded.group(0).run(eval, in);
    EXPECT_TRUE(std::equal(x.polys[0].words().begin(), x.polys[0].words().end(), y.polys[0].words().begin()));
  }
  EXPECT_EQ(loaded.save(), artefact);
  ckks::Bytes bad = artefact;
  bad[0] = 'X';
  EXPECT_THROW(CompiledPatchCNN::load(enc, bad), ckks::SerializationError);
  bad = artefact;
  bad.resize(bad.size() / 2);
  EXPECT_THROW(CompiledPatchCNN::load(enc, bad), ckks::SerializationError);
  ckks::Context other_params(test::small_params(11, 27));
  ckks::Encoder other_encoder(other_params);
  EXPECT_THROW(CompiledPatchCNN::load(other_encoder, artefact), ckks::SerializationError);

  const Tensor a = images[0];
  const Tensor b = images[1];
  Tensor a_noisy = a;  // the same "face" with a small perturbation
  for (std::size_t i = 0; i < a_noisy.data.size(); ++i) a_noisy.data[i] += 0.01 * std::sin(static_cast<double>(i));
  const ckks::Ciphertext enrolled = encrypt_image(a);
  const Tensor e_enc = unpack(enc.decode_real(decryptor.decrypt(enrolled)), compiled.embedding_layout());
  const Tensor e_ref = model.normalized(a);
  double err = 0, norm = 0;
  for (std::size_t i = 0; i < 16; ++i) {
    err = std::max(err, std::fabs(e_enc.data[i] - e_ref.data[i]));
    norm = std::max(norm, std::fabs(e_ref.data[i]));
  }
  std::printf("reduced PatchCNN embedding: max abs error %.3e, relative %.3e\n", err, err / norm);
  EXPECT_LT(err / norm, 1e-3);

  const double same = match_score(model.normalized(a_noisy), e_ref, 0.0);
  const double other = match_score(model.normalized(b), e_ref, 0.0);
  ASSERT_LT(same, other);
  const double threshold = 0.5 * (same + other);
  const Tensor* probes[] = {&a_noisy, &b};
  for (const Tensor* probe : probes) {
    const ckks::Ciphertext score = compiled.match(eval, encrypt_image(*probe), enrolled, threshold);
    const double got = enc.decode_real(decryptor.decrypt(score))[0];
    const double want = match_score(model.normalized(*probe), e_ref, threshold);
    EXPECT_EQ(got < 0, want < 0) << "encrypted score " << got << ", plaintext " << want;
    EXPECT_NEAR(got, want, 1e-3 * std::max(1.0, std::fabs(want)));
  }
}

INSTANTIATE_TEST_SUITE_P(Lanes, PatchCnnLanes, ::testing::Values(1, 4));

// The PatchCNN as a graph (PatchCNN::to_graph) through the one graph compiler: the same
// plaintext function, the patches in the same lane groups, the same rotation keys and
// depth (without the matching level) as the PatchCNN compiler, and the encrypted
// embedding as close to float64.
class PatchCnnGraph : public ::testing::TestWithParam<std::size_t> {};

TEST_P(PatchCnnGraph, CompilesLikeThePatchCompilerAndMatchesFloat64) {
  const std::size_t lanes = GetParam();
  const auto images = synthetic_images(128, {3, 16, 16}, 5);
  const PatchCNN model = make_synthetic_patch_cnn(test::reduced_backbone_shape(), 2, 8, 16, 13, images);
  const Graph graph = model.to_graph();
  for (const std::size_t k : {0, 7}) {
    const Tensor want = model.normalized(images[k]), got = graph.forward(images[k]);
    ASSERT_EQ(got.shape, want.shape);
    for (std::size_t i = 0; i < want.data.size(); ++i) EXPECT_NEAR(got.data[i], want.data[i], 1e-12);
  }
  ckks::Context ctx(test::small_params(11, 28));
  ckks::Encoder enc(ctx);
  const double scale = ctx.params().default_scale();
  // A budget that holds some layers: each lane group (branch task) gets an equal share in
  // both compilers, so the same diagonals are pre-encoded.
  const std::size_t budget = std::size_t{3} << 20;
  const CompiledGraph compiled = CompiledGraph::compile(graph, enc, 28, scale, budget, Compilation::kFull, nullptr,
                                                        nullptr, lanes);
  const CompiledPatchCNN patch = CompiledPatchCNN::compile(model, enc, 28, scale, budget, lanes);
  // The patch compiler counts normalisation and matching as 5 levels; the graph's output is
  // the normalised embedding (4).
  EXPECT_EQ(compiled.depth() + 1, patch.depth());
  EXPECT_EQ(compiled.grid(), 2u);
  EXPECT_EQ(compiled.input_layout(), patch.input_layout());
  EXPECT_EQ(compiled.inputs(), patch.groups());
  EXPECT_EQ(compiled.rotation_levels(), patch.rotation_levels());
  EXPECT_EQ(compiled.plaintext_bytes(), patch.plaintext_bytes());
  // The lane groups are parallel branches (one ciphertext each); one group has none.
  EXPECT_EQ(compiled.parallel_regions().size(), lanes == 4 ? 0u : 1u);
  if (lanes < 4) {
    EXPECT_EQ(compiled.parallel_regions()[0].branches.size(), 4 / lanes);
  }

  const test::ModelKeys keys(ctx, compiled.rotation_levels());
  const CompiledGraph loaded = CompiledGraph::load(enc, compiled.save());
  for (const std::size_t k : {0, 1}) {
    std::vector<ckks::Ciphertext> in;
    for (const auto& slots : compiled.pack_inputs(images[k])) in.push_back(keys.encryptor.encrypt(enc.encode(slots, 28, scale)));
    const ckks::Ciphertext out = compiled.run(keys.eval, in);
    EXPECT_EQ(ckks::save(ctx, out), ckks::save(ctx, loaded.run(keys.eval, in)));
    const Tensor got = compiled.unpack_output(enc.decode_real(keys.decryptor.decrypt(out)));
    const Tensor want = model.normalized(images[k]);
    double err = 0, norm = 0;
    for (std::size_t i = 0; i < want.data.size(); ++i) {
      err = std::max(err, std::fabs(got.data[i] - want.data[i]));
      norm = std::max(norm, std::fabs(want.data[i]));
    }
    std::printf("PatchCNN graph, %zu lanes: embedding relative error %.3e\n", lanes, err / norm);
    EXPECT_LT(err / norm, 1e-3);
  }
  // More lanes than the layers leave room for, or lanes for branches that differ: refused.
  EXPECT_THROW(CompiledGraph::compile(graph, enc, 28, scale, SIZE_MAX, Compilation::kPlanOnly, nullptr, nullptr, 3),
               std::invalid_argument);
}

// (1 lane: covered by the two-lane groups' code paths, and four times slower)
INSTANTIATE_TEST_SUITE_P(Lanes, PatchCnnGraph, ::testing::Values(2, 4));

// Patches fill the lanes of consecutive groups; a last, partial group has zero lanes.
// Every model the CLI can make lays out at the parameters the CLI would choose (a plan:
// the full lowering, no encoding). Regression: the reduced demo model failed to compile
// at N = 2^16 with rotated copies of a tensor smaller than its copy count.
TEST(PatchCnn, EveryModelKindPlansAtItsSecureParameters) {
  for (const char* name : {"tiny", "reduced", "cryptofacenet4"}) {
    const SyntheticKind kind = synthetic_kind(name);
    const std::size_t side = kind.grid * kind.patch;
    const PatchCNN model = make_synthetic_patch_cnn(kind.shape, kind.grid, kind.patch, kind.embedding, 3,
                                                    synthetic_images(8, {3, side, side}, 4));
    const ckks::Context ctx(ckks::Parameters::create(parameters_for(model)));
    const ckks::Encoder enc(ctx);
    const CompileTarget target = compile_target(model, ctx.params());
    EXPECT_EQ(target.level, required_levels(model)) << name;
    EXPECT_EQ(target.scale, ctx.params().default_scale()) << name;
    const CompiledPatchCNN plan = CompiledPatchCNN::plan(model, enc, target.level, target.scale);
    EXPECT_EQ(plan.patches(), kind.grid * kind.grid) << name;
    EXPECT_FALSE(plan.rotation_levels().empty()) << name;
    // Parameters of a shallower model: refused with the depth the model needs.
    const ckks::Parameters shallow = ckks::Parameters::create(choose_parameters(target.level - 1));
    EXPECT_THROW(compile_target(model, shallow), std::invalid_argument) << name;
  }  // The 8x8 grid (bench/scaling.sh) has the CryptoFace backbone on 256x256 images.
  EXPECT_EQ(synthetic_kind("cryptofacenet64").grid, 8u);
  EXPECT_EQ(synthetic_kind("cryptofacenet64").patch, 32u);
}

TEST(PatchCnn, PatchGroupsAndLaneLimits) {
  const Layout in = with_full_replication(Layout{{3, 4, 4}, 1, 256, 1, 2});
  std::vector<Tensor> patches;
  for (int p = 0; p < 3; ++p) {
    Tensor t({3, 4, 4});
    for (double& v : t.data) v = p + 1;
    patches.push_back(t);
  }
  const auto groups = pack_patch_groups(patches, in);
  ASSERT_EQ(groups.size(), 2u);
  EXPECT_EQ(unpack(groups[0], in, 1).data[5], 2.0);
  EXPECT_EQ(unpack(groups[1], in, 0).data[5], 3.0);
  EXPECT_EQ(unpack(groups[1], in, 1).data[5], 0.0);
  for (std::size_t s = 0; s < 256; s += 2) EXPECT_EQ(groups[0][s], groups[0][s % in.period()]);
  // CryptoFace's backbone: 16 x 32 x 32 after the stem, so two lanes fit 2^15 slots.
  const Backbone b = make_synthetic_backbone(BackboneShape{}, 1, synthetic_images(128, {3, 32, 32}, 1));
  EXPECT_EQ(max_lanes(b, {3, 32, 32}, 32768), 2u);
  EXPECT_EQ(max_lanes(b, {3, 32, 32}, 16384), 1u);
}

TEST(PatchCnn, FitRecordsRangesAndChecksHeadroom) {
  const auto images = synthetic_images(128, {3, 16, 16}, 8);
  PatchCNN model = make_synthetic_patch_cnn(test::reduced_backbone_shape(), 2, 8, 16, 17, images);
  const FitReport report = fit(model, images, 1e6);
  // Every backbone's conv, 5 blocks x 5 points, the pooling HerPN's input and output, then
  // the two embeddings.
  EXPECT_EQ(report.ranges.size(), 4u * (1 + 5 * 5 + 2) + 2);
  EXPECT_EQ(report.ranges.front().name, "nets.0.conv output");
  EXPECT_GT(report.max_abs(), 0.0);
  EXPECT_GT(report.l2_domain_hi, report.l2_domain_lo);
  EXPECT_LE(report.y_min, report.l2_domain_hi);
  EXPECT_GE(report.fraction_outside, 0.0);
  EXPECT_LE(report.fraction_outside, 1.0);
  // A limit below the observed values is refused with the numbers in the message.
  EXPECT_THROW(fit(model, images, report.max_abs()), std::invalid_argument);
}
