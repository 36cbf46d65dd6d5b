// Ring switching N -> N/2 (ckks/ring_switch.h): slots, scale and precision survive, the
// parameters are checked, bad inputs are refused, and a compiled lane group can run its
// last blocks in the half ring.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>

#include "ckks/byte_stream.h"
#include "ckks/encoder.h"
#include "ckks/encryptor.h"
#include "ckks/keygen.h"
#include "ckks/ring_switch.h"
#include "ckks/serialization.h"
#include "nn/compiled_backbone.h"
#include "nn/parameter_choice.h"
#include "nn/compiled_graph.h"
#include "nn/patch_cnn.h"
#include "nn/precision.h"
#include "nn/synthetic.h"
#include "nn_test_util.h"
#include "test_util.h"

using namespace pfhe;
using namespace pfhe::ckks;

namespace {

// A test ring N = 2^12 with `levels` levels, and its half ring from `switch_level` with both
// special primes, as a model switching after `after_block` compiles against.
struct TwoRings {
  TwoRings(int levels, std::size_t switch_level, std::size_t after_block)
      : big(test::small_params(12, levels)),
        enc(big),
        half_ring(nn::HalfRing::make(big.params(), {after_block, switch_level, 2})),
        half(half_ring->context),
        switch_ctx(half_ring->switch_context),
        half_enc(half_ring->encoder),
        plan(half_ring->plan) {}
  Context big;
  Encoder enc;
  std::shared_ptr<const nn::HalfRing> half_ring;
  const Context &half, &switch_ctx;
  const Encoder& half_enc;
  const nn::RingSwitchPlan& plan;
};

// Fresh keys of both rings for a compiled program, the switch key and the evaluation that
// carries them.
struct TwoRingKeys {
  TwoRingKeys(const TwoRings& rings, const std::map<long, std::size_t>& big_levels,
              const std::map<long, std::size_t>& half_levels)
      : big(rings.big, big_levels),
        half(rings.half, half_levels),
        switch_key(create_ring_switch_key(rings.switch_ctx, big.keygen.secret_key(), rings.half,
                                          half.keygen.secret_key())),
        evaluation{rings.switch_ctx, switch_key, half.eval} {}
  test::ModelKeys big, half;
  SwitchingKey switch_key;
  nn::HalfRingEvaluation evaluation;
};

}  // namespace

TEST(RingSwitch, HalfRingCiphertextDecryptsToTheSameSlots) {
  const Context big(test::small_params(12, 6));
  const std::size_t level = 3;
  // Both special primes: with one (60 bits, no larger than the 60-bit q_0 digit) the
  // key's error times digit / P reaches ~1e-7 (measured 4e-8 to 1.9e-7 over 12 runs).
  const Context half(half_ring_parameters(big.params(), level, 2));
  const Context switch_ctx(switch_key_parameters(big.params(), level, 2));
  EXPECT_EQ(half.n(), big.n() / 2);
  EXPECT_TRUE(half.params().insecure());
  const KeyGenerator big_keys(big), half_keys(half);
  const SwitchingKey key = create_ring_switch_key(switch_ctx, big_keys.secret_key(), half, half_keys.secret_key());

  // Slots repeating with period N/4 (what a layout with two replicas of a half-ring span is).
  const std::size_t quarter = big.n() / 4;
  std::vector<double> values(big.n() / 2);
  for (std::size_t i = 0; i < values.size(); ++i) values[i] = std::sin(0.37 * static_cast<double>(i % quarter));
  const Encoder big_enc(big), half_enc(half);
  const double scale = big.params().default_scale();
  const Ciphertext ct = Encryptor(big, big_keys.secret_key()).encrypt(big_enc.encode(values, 5, scale));
  const Ciphertext switched = switch_to_half_ring(switch_ctx, half, key, ct);
  EXPECT_EQ(switched.level(), level);
  EXPECT_EQ(switched.polys[0].n(), half.n());
  EXPECT_DOUBLE_EQ(switched.scale, scale);
  const std::vector<double> got = half_enc.decode_real(Decryptor(half, half_keys.secret_key()).decrypt(switched));
  ASSERT_EQ(got.size(), quarter);
  double err = 0;
  for (std::size_t i = 0; i < quarter; ++i) err = std::max(err, std::fabs(got[i] - values[i]));
  std::printf("max error after the switch: %.3e\n", err);
  EXPECT_LT(err, 1e-8);

  // Refused: a ciphertext below the switch level, a key of another level, mismatched contexts.
  const Ciphertext low = Encryptor(big, big_keys.secret_key()).encrypt(big_enc.encode(values, 2, scale));
  EXPECT_THROW(switch_to_half_ring(switch_ctx, half, key, low), std::invalid_argument);
  const Context other_half(half_ring_parameters(big.params(), level - 1, 2));
  EXPECT_THROW(switch_to_half_ring(switch_ctx, other_half, key, ct), std::invalid_argument);
  EXPECT_THROW(create_ring_switch_key(switch_ctx, big_keys.secret_key(), other_half, half_keys.secret_key()),
               std::invalid_argument);
  EXPECT_THROW(half_ring_parameters(big.params(), 7, 1), std::invalid_argument);
  EXPECT_THROW(half_ring_parameters(big.params(), 3, 3), std::invalid_argument);
}

TEST(RingSwitch, SecureSetsKeepTheHalfRingBound) {
  // CryptoFaceNet4's parameters (N = 2^16, 50 + 28 x 40 bits, 9 special primes): below
  // level 15 the half ring with 4 special primes holds 650 + 200 bits <= 881.
  ParameterSpec spec;
  spec.log_n = 16;
  spec.q_bits.push_back(50);
  spec.q_bits.insert(spec.q_bits.end(), 28, 40);
  spec.p_bits.assign(9, 50);
  const Parameters big = Parameters::create(spec);
  const Parameters half = half_ring_parameters(big, 15, 4);
  EXPECT_EQ(half.log_n(), 15);
  EXPECT_FALSE(half.insecure());
  EXPECT_NO_THROW(switch_key_parameters(big, 15, 4));
  // Level 17 leaves no room for 4 special primes at N = 2^15.
  EXPECT_THROW(half_ring_parameters(big, 17, 4), std::invalid_argument);
}

// A reduced lane group that leaves N = 2^12 for 2^11 after block 3 (of 5) computes the
// head outputs of its four patches as float64 does; its keys split by ring.
TEST(RingSwitch, LaneGroupSwitchingAfterBlockThreeMatchesFloat64) {
  const nn::Shape patch{3, 8, 8};
  std::vector<nn::Backbone> models;
  std::vector<nn::Linear> heads;
  for (std::size_t l = 0; l < 4; ++l) {
    models.push_back(nn::make_synthetic_backbone(test::reduced_backbone_shape(), 40 + l, nn::synthetic_images(64, patch, l)));
    nn::Linear head{64, 16, std::vector<double>(64 * 16), std::vector<double>(16, 0.1)};
    for (std::size_t i = 0; i < head.weight.size(); ++i) head.weight[i] = std::sin(0.1 * static_cast<double>(i + l));
    heads.push_back(head);
  }
  std::vector<const nn::Backbone*> model_ptrs;
  std::vector<const nn::Linear*> head_ptrs;
  for (std::size_t l = 0; l < 4; ++l) {
    model_ptrs.push_back(&models[l]);
    head_ptrs.push_back(&heads[l]);
  }
  // conv0 takes level 24 -> 23, each block four levels: block 3 ends at level 11.
  const TwoRings rings(24, 11, 2);
  const double scale = rings.big.params().default_scale();
  const nn::CompiledBackbone compiled = nn::CompiledBackbone::compile(
      model_ptrs, rings.enc, patch, 24, scale, head_ptrs, 4, SIZE_MAX, nn::Compilation::kFull, &rings.plan);
  ASSERT_TRUE(compiled.switches_ring());
  EXPECT_EQ(compiled.output_layout().slots, rings.half.n() / 2);
  for (const auto& [step, level] : compiled.half_ring_rotation_levels()) EXPECT_LE(level, 11u);
  for (const auto& [step, level] : compiled.rotation_levels()) EXPECT_GT(level, 11u);

  const TwoRingKeys keys(rings, compiled.rotation_levels(), compiled.half_ring_rotation_levels());
  const auto images = nn::synthetic_images(4, patch, 9);
  const Ciphertext in =
      keys.big.encryptor.encrypt(rings.enc.encode(nn::pack_lanes(images, compiled.input_layout()), 24, scale));
  EXPECT_THROW(compiled.run(keys.big.eval, in), std::invalid_argument);  // the half ring's keys are needed
  std::vector<nn::CompiledBackbone::StepTiming> steps;
  const Ciphertext out = compiled.run(keys.big.eval, in, &steps, &keys.evaluation);
  EXPECT_TRUE(std::any_of(steps.begin(), steps.end(), [](const auto& s) { return s.name == "ring switch"; }));
  const nn::Tensor got =
      nn::unpack(rings.half_enc.decode_real(keys.half.decryptor.decrypt(out)), compiled.output_layout());
  nn::Tensor want = heads[0].forward(models[0].forward(images[0]));
  for (std::size_t l = 1; l < 4; ++l) {
    const nn::Tensor h = heads[l].forward(models[l].forward(images[l]));
    for (std::size_t i = 0; i < want.data.size(); ++i) want.data[i] += h.data[i];
  }
  EXPECT_LT(nn::precision_of(got, want).relative, 1e-5);
}

// The whole reduced PatchCNN (four patches in one lane group) switching after block 3:
// aggregation, normalisation and matching run in the half ring with its own keys, and the
// normalised embedding and a match score agree with float64; the saved artefact keeps the
// switch (same outputs once loaded) and its stored switch is validated.
TEST(RingSwitch, PatchCnnNormalisesAndMatchesInTheHalfRing) {
  const auto images = nn::synthetic_images(128, {3, 16, 16}, 5);
  const nn::PatchCNN model = nn::make_synthetic_patch_cnn(test::reduced_backbone_shape(), 2, 8, 16, 13, images);
  const TwoRings rings(28, 15, 2);
  const double scale = rings.big.params().default_scale();
  // Diagonals of the first layers pre-encoded, the rest just in time: both kinds in both rings.
  const nn::CompiledPatchCNN compiled =
      nn::CompiledPatchCNN::compile(model, rings.enc, 28, scale, std::size_t{8} << 20, 4, rings.half_ring);
  ASSERT_TRUE(compiled.switches_ring());
  // A half ring derived from other parameters is refused.
  const Context other(test::small_params(12, 29));
  EXPECT_THROW(nn::CompiledPatchCNN::plan(model, rings.enc, 28, scale, 4, nn::HalfRing::make(other.params(), {2, 15, 2})),
               std::invalid_argument);
  const auto half_levels = compiled.half_ring_rotation_levels();
  EXPECT_TRUE(half_levels.count(1));  // the embedding's slot sums happen in the half ring
  const TwoRingKeys keys(rings, compiled.rotation_levels(), half_levels);
  const auto embed = [&](const nn::Tensor& image) {
    std::vector<nn::Tensor> patches;
    for (std::size_t p = 0; p < compiled.patches(); ++p) patches.push_back(model.patch(image, p));
    const auto slots = nn::pack_patch_groups(patches, compiled.input_layout()).front();
    const Ciphertext in = keys.big.encryptor.encrypt(rings.enc.encode(slots, 28, scale));
    const Ciphertext head = compiled.group(0).run(keys.big.eval, in, nullptr, &keys.evaluation);
    return compiled.normalize(keys.half.eval, compiled.aggregate(keys.half.eval, {head}));
  };
  const Ciphertext a = embed(images[0]), b = embed(images[1]);
  const nn::Tensor got =
      nn::unpack(rings.half_enc.decode_real(keys.half.decryptor.decrypt(a)), compiled.embedding_layout());
  EXPECT_LT(nn::precision_of(got, model.normalized(images[0])).relative, 1e-5);
  const double want = nn::match_score(model.normalized(images[1]), model.normalized(images[0]), 0.5);
  const double score =
      rings.half_enc.decode_real(keys.half.decryptor.decrypt(compiled.match(keys.half.eval, b, a, 0.5)))[0];
  EXPECT_NEAR(score, want, 1e-4 * std::max(1.0, std::fabs(want)));

  // The artefact keeps the switch: loaded, the group gives the same ciphertext bytes.
  const ckks::Bytes stored = compiled.save();
  const nn::CompiledPatchCNN loaded = nn::CompiledPatchCNN::load(rings.enc, stored);
  ASSERT_TRUE(loaded.switches_ring());
  EXPECT_EQ(loaded.half_ring()->choice, rings.half_ring->choice);
  EXPECT_EQ(loaded.rotation_levels(), compiled.rotation_levels());
  EXPECT_EQ(loaded.half_ring_rotation_levels(), half_levels);
  EXPECT_EQ(loaded.embedding_layout().slots, compiled.embedding_layout().slots);
  const Ciphertext in = keys.big.encryptor.encrypt(rings.enc.encode(
      nn::pack_patch_groups({model.patch(images[2], 0), model.patch(images[2], 1), model.patch(images[2], 2),
                             model.patch(images[2], 3)},
                            compiled.input_layout())
          .front(),
      28, scale));
  EXPECT_EQ(save(rings.half, compiled.group(0).run(keys.big.eval, in, nullptr, &keys.evaluation)),
            save(rings.half, loaded.group(0).run(keys.big.eval, in, nullptr, &keys.evaluation)));
  // A half-ring fingerprint that does not match the stored switch is refused.
  ckks::Bytes bad = stored;
  bad[4 + 4 + 8 + 8 + 3 * 8] ^= 1;
  EXPECT_THROW(nn::CompiledPatchCNN::load(rings.enc, bad), ckks::SerializationError);
  // So is a switch level the big ring cannot start a half ring at.
  bad = stored;
  bad[4 + 4 + 8 + 8 + 8] ^= 4;
  EXPECT_THROW(nn::CompiledPatchCNN::load(rings.enc, bad), ckks::SerializationError);
}

// The automatic choice at the parameters `pfhe compile` picks for a 28-level PatchCNN:
// after block 3 with 4 special primes. Block 1 ends at level 23, where no half ring is
// secure; block 2 at level 19 leaves one special prime and 20 digits, whose key switches
// cost more than the big ring's.
TEST(RingSwitch, ChoiceAtCryptoFaceDepthIsAfterBlockThree) {
  const nn::SyntheticKind kind = nn::synthetic_kind("reduced");
  const nn::PatchCNN model = nn::make_synthetic_patch_cnn(kind.shape, kind.grid, kind.patch, kind.embedding, 3,
                                                          nn::synthetic_images(32, {3, 16, 16}, 1));
  const Parameters params = Parameters::create(nn::parameters_for(model));
  const auto choice = nn::choose_ring_switch(model, params, nn::required_levels(model));
  ASSERT_TRUE(choice.has_value());
  EXPECT_EQ(choice->after_block, 2u);
  EXPECT_EQ(choice->level, 15u);
  EXPECT_EQ(choice->special_primes, 4u);
}

// The same PatchCNN as a graph (PatchCNN::to_graph) through the graph compiler with the same
// half ring: the same keys in both rings and the same diagonals as the PatchCNN compiler,
// the normalised embedding as close to float64, the switch kept by the stored form.
TEST(RingSwitch, PatchCnnGraphSwitchesLikeThePatchCompiler) {
  const auto images = nn::synthetic_images(128, {3, 16, 16}, 5);
  const nn::PatchCNN model = nn::make_synthetic_patch_cnn(test::reduced_backbone_shape(), 2, 8, 16, 13, images);
  const TwoRings rings(28, 15, 2);
  const double scale = rings.big.params().default_scale();
  const nn::CompiledPatchCNN patch =
      nn::CompiledPatchCNN::compile(model, rings.enc, 28, scale, std::size_t{8} << 20, 4, rings.half_ring);
  const nn::Graph graph = model.to_graph();
  const nn::CompiledGraph compiled = nn::CompiledGraph::compile(
      graph, rings.enc, 28, scale, std::size_t{8} << 20, nn::Compilation::kFull, nullptr, nullptr, 4, rings.half_ring);
  ASSERT_TRUE(compiled.half_ring());
  EXPECT_EQ(compiled.rotation_levels(), patch.rotation_levels());
  EXPECT_EQ(compiled.half_ring_rotation_levels(), patch.half_ring_rotation_levels());
  EXPECT_EQ(compiled.plaintext_bytes(), patch.plaintext_bytes());
  EXPECT_EQ(compiled.output_layout().slots, rings.half.n() / 2);
  const TwoRingKeys keys(rings, compiled.rotation_levels(), compiled.half_ring_rotation_levels());
  std::vector<Ciphertext> in;
  for (const auto& slots : compiled.pack_inputs(images[0]))
    in.push_back(keys.big.encryptor.encrypt(rings.enc.encode(slots, 28, scale)));
  EXPECT_THROW(compiled.run(keys.big.eval, in), std::invalid_argument);  // the half ring's keys are needed
  std::vector<nn::CompiledGraph::StepTiming> steps;
  const Ciphertext out = compiled.run(keys.big.eval, in, &steps, nullptr, {}, &keys.evaluation);
  EXPECT_EQ(std::count_if(steps.begin(), steps.end(), [](const auto& s) { return s.name.ends_with(".ring_switch"); }), 1);
  const nn::Tensor got = compiled.unpack_output(rings.half_enc.decode_real(keys.half.decryptor.decrypt(out)));
  EXPECT_LT(nn::precision_of(got, model.normalized(images[0])).relative, 1e-5);
  const nn::CompiledGraph loaded = nn::CompiledGraph::load(rings.enc, compiled.save());
  ASSERT_TRUE(loaded.half_ring());
  EXPECT_EQ(loaded.half_ring()->choice, rings.half_ring->choice);
  EXPECT_EQ(loaded.half_ring_rotation_levels(), compiled.half_ring_rotation_levels());
  EXPECT_EQ(save(rings.half, loaded.run(keys.big.eval, in, nullptr, nullptr, {}, &keys.evaluation)),
            save(rings.half, out));
  // A half ring derived from other parameters is refused.
  const Context other(test::small_params(12, 29));
  EXPECT_THROW(nn::CompiledGraph::compile(graph, rings.enc, 28, scale, 0, nn::Compilation::kPlanOnly, nullptr, nullptr,
                                          4, nn::HalfRing::make(other.params(), {2, 15, 2})),
               std::invalid_argument);
}
