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
#include "nn/compiled_graph.h"
#include "nn/parameter_choice.h"
#include "nn/patch_cnn.h"
#include "nn/precision.h"
#include "nn/synthetic.h"
#include "nn_test_util.h"
#include "test_util.h"

using namespace pfhe;
using namespace pfhe::ckks;

namespace {

// A test ring N = 2^12 with `levels` levels, and its half ring from `switch_level` with both
// special primes.
struct TwoRings {
  TwoRings(int levels, std::size_t switch_level)
      : big(test::small_params(12, levels)),
        enc(big),
        half_ring(nn::HalfRing::make(big.params(), {switch_level, 2})),
        half(half_ring->context),
        switch_ctx(half_ring->switch_context),
        half_enc(half_ring->encoder) {}
  Context big;
  Encoder enc;
  std::shared_ptr<const nn::HalfRing> half_ring;
  const Context &half, &switch_ctx;
  const Encoder& half_enc;
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

// The candidate at the parameters `pfhe compile` picks for a 28-level PatchCNN: level 15
// (after block 3) with 4 special primes. Above level 20 no half ring is secure; level 19
// (after block 2) leaves one special prime and 20 digits, whose key switches cost more
// than the big ring's; levels 16-18 are estimated above 3/4 of the big ring's time. The
// reduced model's small backbones still need 49 of their 52 rotations in the big ring, so
// the half ring's keys would grow its evaluation keys by ~22 %: it does not switch
// (CryptoFaceNet4's, +3.6 %, do).
TEST(RingSwitch, CandidateAtCryptoFaceDepthIsAfterBlockThreeAndWeighsKeys) {
  const nn::SyntheticKind kind = nn::synthetic_kind("reduced");
  const nn::PatchCNN model = nn::make_synthetic_patch_cnn(kind.shape, kind.grid, kind.patch, kind.embedding, 3,
                                                          nn::synthetic_images(32, {3, 16, 16}, 1));
  const Context ctx(Parameters::create(nn::parameters_for(model)));
  const Encoder enc(ctx);
  const nn::Graph graph = model.to_graph();
  const std::size_t level = nn::required_levels(model);
  const auto candidate = nn::ring_switch_candidate(graph, enc, level);
  ASSERT_TRUE(candidate.has_value());
  EXPECT_EQ(candidate->level, 15u);  // block 3's output
  EXPECT_EQ(candidate->special_primes, 4u);
  const double growth = nn::ring_switch_key_growth(graph, enc, level, *candidate);
  EXPECT_GT(growth, 1.15);
  EXPECT_LT(growth, 1.30);
  EXPECT_FALSE(nn::choose_ring_switch(graph, enc, level).has_value());
}

// Graph model files switch by the same rule (nn::compile_graph): the two-tower graph's
// keys shrink with the switch (its towers' later layers need fewer rotations in the half
// ring than the big ring's), two-tower-tiny's would grow by half: one switches, the other
// does not.
TEST(RingSwitch, GraphFilesSwitchWhereTheKeysAllowIt) {
  const auto choice_for = [](const char* kind, const nn::Shape& shape) {
    const nn::Graph graph = nn::make_synthetic_graph(kind, 3, nn::synthetic_images(32, shape, 4));
    const nn::FitReport fit = nn::fit(graph, nn::synthetic_images(8, shape, 5), nn::kIntermediateLimit);
    const Context ctx(Parameters::create(nn::parameters_for(graph, fit.ranges.back().max_abs)));
    const Encoder enc(ctx);
    const std::size_t level = ctx.params().max_level();
    const auto candidate = nn::ring_switch_candidate(graph, enc, level);
    EXPECT_TRUE(candidate.has_value()) << kind;
    const double growth = candidate ? nn::ring_switch_key_growth(graph, enc, level, *candidate) : 0;
    return std::make_pair(nn::choose_ring_switch(graph, enc, level), growth);
  };
  const auto [towers, towers_growth] = choice_for("two-tower", {3, 32, 32});
  EXPECT_TRUE(towers.has_value());
  EXPECT_LT(towers_growth, 1.0);
  const auto [tiny, tiny_growth] = choice_for("two-tower-tiny", {3, 8, 8});
  EXPECT_FALSE(tiny.has_value());
  EXPECT_GT(tiny_growth, 1.3);
}

// The reduced PatchCNN (four patches in one lane group) switching after block 3: the rest of
// its backbones, the sum and the normalisation run in the half ring with its own keys (the
// keys and diagonals the PatchCNN-specific compiler it replaced had: session 17 compared
// them exactly); the embedding and a match score agree with float64; the stored form keeps
// the switch and refuses a damaged one.
TEST(RingSwitch, PatchCnnNormalisesAndMatchesInTheHalfRing) {
  const auto images = nn::synthetic_images(128, {3, 16, 16}, 5);
  const nn::PatchCNN model = nn::make_synthetic_patch_cnn(test::reduced_backbone_shape(), 2, 8, 16, 13, images);
  const TwoRings rings(28, 15);
  const double scale = rings.big.params().default_scale();
  const nn::Graph graph = model.to_graph();
  // Diagonals of the first layers pre-encoded, the rest just in time: both kinds in both rings.
  const nn::CompiledGraph compiled = nn::CompiledGraph::compile(
      graph, rings.enc, 28, scale, std::size_t{8} << 20, nn::Compilation::kFull, nullptr, nullptr, 4, rings.half_ring);
  ASSERT_TRUE(compiled.half_ring());
  EXPECT_EQ(compiled.rotation_levels().size(), 34u);
  EXPECT_EQ(compiled.half_ring_rotation_levels().size(), 27u);
  EXPECT_EQ(compiled.plaintext_bytes(), 21135360u);
  for (const auto& [step, level] : compiled.half_ring_rotation_levels()) EXPECT_LE(level, 15u);
  for (const auto& [step, level] : compiled.rotation_levels()) EXPECT_GT(level, 15u);
  EXPECT_TRUE(compiled.half_ring_rotation_levels().count(1));  // the embedding's slot sums
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
  // Matching in the half ring.
  std::vector<Ciphertext> other_in;
  for (const auto& slots : compiled.pack_inputs(images[1]))
    other_in.push_back(keys.big.encryptor.encrypt(rings.enc.encode(slots, 28, scale)));
  const Ciphertext b = compiled.run(keys.big.eval, other_in, nullptr, nullptr, {}, &keys.evaluation);
  // Both images as one batch (each linear step applied to both at once, its just-in-time
  // diagonals made once): each output is the bytes of its own run.
  const std::vector<std::vector<Ciphertext>> pair = {in, other_in};
  const std::vector<Ciphertext> both = compiled.run_batch(keys.big.eval, pair, nullptr, nullptr, {}, &keys.evaluation);
  ASSERT_EQ(both.size(), 2u);
  EXPECT_EQ(save(rings.half, both[0]), save(rings.half, out));
  EXPECT_EQ(save(rings.half, both[1]), save(rings.half, b));
  EXPECT_THROW(compiled.run_batch(keys.big.eval, std::span<const std::vector<Ciphertext>>(), nullptr, nullptr, {},
                                  &keys.evaluation),
               std::invalid_argument);
  std::vector<Ciphertext> one_too_many = in;
  one_too_many.push_back(in[0]);
  const std::vector<std::vector<Ciphertext>> mismatched = {in, one_too_many};
  EXPECT_THROW(compiled.run_batch(keys.big.eval, mismatched, nullptr, nullptr, {}, &keys.evaluation),
               std::invalid_argument);  // an item with other input ciphertexts than the model takes
  const double want = nn::match_score(model.normalized(images[1]), model.normalized(images[0]), 0.5);
  const double score =
      rings.half_enc.decode_real(keys.half.decryptor.decrypt(compiled.match(keys.half.eval, b, out, 0.5)))[0];
  EXPECT_NEAR(score, want, 1e-4 * std::max(1.0, std::fabs(want)));
  // A half-ring fingerprint that does not match the stored switch is refused; so is a switch
  // level the big ring cannot start a half ring at.
  const ckks::Bytes stored = compiled.save();
  ckks::Bytes bad = stored;
  bad[4 + 4 + 8 + 8 + 2 * 8] ^= 1;
  EXPECT_THROW(nn::CompiledGraph::load(rings.enc, bad), ckks::SerializationError);
  bad = stored;
  bad[4 + 4 + 8 + 8] ^= 4;
  EXPECT_THROW(nn::CompiledGraph::load(rings.enc, bad), ckks::SerializationError);
  // A compiled PatchCNN of the compiler this one replaced ("PFHC") is refused, naming the fix.
  bad = stored;
  std::copy_n("PFHC", 4, bad.begin());
  try {
    nn::CompiledGraph::load(rings.enc, bad);
    ADD_FAILURE() << "an old PatchCNN artefact was loaded";
  } catch (const ckks::SerializationError& e) {
    EXPECT_NE(std::string(e.what()).find("compile the model again"), std::string::npos) << e.what();
  }
  // A half ring derived from other parameters is refused.
  const Context other(test::small_params(12, 29));
  EXPECT_THROW(nn::CompiledGraph::compile(graph, rings.enc, 28, scale, 0, nn::Compilation::kPlanOnly, nullptr, nullptr,
                                          4, nn::HalfRing::make(other.params(), {15, 2})),
               std::invalid_argument);
}
