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

// The PatchCNN as a graph (PatchCNN::to_graph) through the one compiler: the same plaintext
// function; the patches in lane groups (branch tasks) with the rotation keys, depth and
// diagonals the PatchCNN-specific compiler it replaced had (session 17 compared the two
// exactly; the counts below are theirs); the encrypted embedding as close to float64, the
// stored form byte-identical, matching decisions equal to float64's.
class PatchCnnGraph : public ::testing::TestWithParam<std::size_t> {};

TEST_P(PatchCnnGraph, CompilesToItsLaneGroupsAndMatchesFloat64) {
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
  // A budget that holds some layers: each lane group (branch task) gets an equal share.
  const std::size_t budget = std::size_t{3} << 20;
  const CompiledGraph compiled = CompiledGraph::compile(graph, enc, 28, scale, budget, Compilation::kFull, nullptr,
                                                        nullptr, lanes);
  EXPECT_EQ(compiled.depth(), 27u);  // the backbone's 23 levels, normalisation 4 (matching: one more)
  EXPECT_EQ(compiled.grid(), 2u);
  EXPECT_EQ(compiled.input_layout().lanes, lanes);
  EXPECT_EQ(compiled.input_layout().shape, (Shape{3, 8, 8}));
  EXPECT_EQ(compiled.inputs(), 4 / lanes);
  EXPECT_EQ(compiled.rotation_levels().size(), lanes == 2 ? 42u : 37u);
  EXPECT_EQ(compiled.plaintext_bytes(), lanes == 2 ? 21168128u : 12402688u);
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
  if (lanes == 4) {
    // Encrypted matching: a slightly perturbed face and another face against an enrolled
    // one, decided as float64 decides.
    Tensor a_noisy = images[0];
    for (std::size_t i = 0; i < a_noisy.data.size(); ++i) a_noisy.data[i] += 0.01 * std::sin(static_cast<double>(i));
    const auto embed = [&](const Tensor& image) {
      std::vector<ckks::Ciphertext> in;
      for (const auto& slots : compiled.pack_inputs(image)) in.push_back(keys.encryptor.encrypt(enc.encode(slots, 28, scale)));
      return compiled.run(keys.eval, in);
    };
    const Tensor e_ref = model.normalized(images[0]);
    const double same = match_score(model.normalized(a_noisy), e_ref, 0.0);
    const double other = match_score(model.normalized(images[1]), e_ref, 0.0);
    ASSERT_LT(same, other);
    const double threshold = 0.5 * (same + other);
    const ckks::Ciphertext enrolled = embed(images[0]);
    const Tensor* probes[] = {&a_noisy, &images[1]};
    for (const Tensor* probe : probes) {
      const ckks::Ciphertext score = compiled.match(keys.eval, embed(*probe), enrolled, threshold);
      const double got = enc.decode_real(keys.decryptor.decrypt(score))[0];
      const double want = match_score(model.normalized(*probe), e_ref, threshold);
      EXPECT_EQ(got < 0, want < 0) << "encrypted score " << got << ", plaintext " << want;
      EXPECT_NEAR(got, want, 1e-3 * std::max(1.0, std::fabs(want)));
    }
  }
  if (lanes == 2) {
    // Compiled per task (a server given the model file): each branch task compiles its lane
    // group alone and computes the same bytes; the steps outside are compiled up front.
    const CompiledGraph per_task = CompiledGraph::compile(graph, enc, 28, scale, SIZE_MAX, Compilation::kPerTask,
                                                          nullptr, nullptr, lanes);
    EXPECT_EQ(per_task.rotation_levels(), compiled.rotation_levels());
    EXPECT_EQ(per_task.parallel_regions().size(), 1u);
    std::vector<ckks::Ciphertext> in;
    for (const auto& slots : compiled.pack_inputs(images[3])) in.push_back(keys.encryptor.encrypt(enc.encode(slots, 28, scale)));
    EXPECT_THROW(per_task.run(keys.eval, in), std::logic_error);  // its branches need compile_task
    EXPECT_THROW(per_task.save(), std::logic_error);
    const auto runner = [&](std::size_t region, const std::vector<ckks::Ciphertext>& entries) {
      std::vector<ckks::Ciphertext> exits;
      for (std::size_t b = 0; b < entries.size(); ++b) {
        const CompiledGraph task = per_task.compile_task(graph, region, b);
        EXPECT_LT(task.plaintext_bytes(), compiled.plaintext_bytes());  // one group's diagonals
        EXPECT_THROW(task.run_branch(keys.eval, region, (b + 1) % entries.size(), entries[b]), std::logic_error);
        exits.push_back(task.run_branch(keys.eval, region, b, entries[b]));
        // The same branch for a batch (this entry and another group's): the same bytes.
        const std::vector<ckks::Ciphertext> batch =
            task.run_branch(keys.eval, region, b, std::vector<ckks::Ciphertext>{entries[b], entries[1 - b]});
        EXPECT_EQ(ckks::save(ctx, batch.at(0)), ckks::save(ctx, exits.back()));
        EXPECT_EQ(batch.size(), 2u);
      }
      return exits;
    };
    EXPECT_EQ(ckks::save(ctx, per_task.run(keys.eval, in, nullptr, nullptr, runner)),
              ckks::save(ctx, compiled.run(keys.eval, in)));
    // Another model (a narrower embedding) is not the one it was compiled from.
    const Graph other = make_synthetic_patch_cnn(test::reduced_backbone_shape(), 2, 8, 8, 13, images).to_graph();
    EXPECT_THROW(per_task.compile_task(other, 0, 0), std::invalid_argument);
    EXPECT_THROW(per_task.compile_task(graph, 0, 2), std::out_of_range);
    EXPECT_THROW(compiled.compile_task(graph, 0, 0), std::logic_error);
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
    const CompiledGraph plan = CompiledGraph::compile(model.to_graph(), enc, target.level, target.scale, 0,
                                                      Compilation::kPlanOnly);
    EXPECT_EQ(plan.grid(), kind.grid) << name;
    // CryptoFace's backbone: 16 x 32 x 32 after the stem, so two patches fit 2^15 slots.
    if (kind.patch == 32) {
      EXPECT_EQ(plan.input_layout().lanes, 2u) << name;
    }
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
