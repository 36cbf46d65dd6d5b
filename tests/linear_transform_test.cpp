// BSGS linear transforms against a float64 matrix-vector product.
#include <gtest/gtest.h>

#include <atomic>

#include <algorithm>
#include <array>
#include <cstring>
#include <limits>
#include <memory>
#include <random>
#include <string>

#include "ckks/encryptor.h"
#include "ckks/keygen.h"
#include "ckks/linear_transform.h"
#include "test_util.h"

using namespace pfhe;
using namespace pfhe::ckks;

namespace {

std::vector<std::complex<double>> apply_plain(const Diagonals& diags, const std::vector<std::complex<double>>& x) {
  const std::size_t n = x.size();
  std::vector<std::complex<double>> y(n, 0.0);
  for (const auto& [k, d] : diags)
    for (std::size_t i = 0; i < n; ++i) y[i] += d[i] * x[(i + n + static_cast<std::size_t>(k % static_cast<long>(n))) % n];
  return y;
}

Diagonals random_diagonals(const std::vector<long>& indices, std::size_t slots, std::uint64_t seed) {
  Diagonals d;
  for (long k : indices) d[k] = test::random_complex(slots, seed + static_cast<std::uint64_t>(k + 1000), 0.5);
  return d;
}

}  // namespace

class LinearTransformTest : public ::testing::TestWithParam<std::tuple<std::size_t, std::vector<long>, std::size_t>> {};

TEST_P(LinearTransformTest, MatchesPlainMatrixVectorProduct) {
  const auto& [slots, indices, baby_steps] = GetParam();
  Context ctx(test::small_params(10, 3));
  Encoder enc(ctx);
  KeyGenerator kg(ctx);
  const Diagonals diags = random_diagonals(indices, slots, 7);
  const LinearTransform lt(enc, diags, slots, 3, baby_steps);
  const GaloisKeys gk = kg.create_galois_keys(lt.rotation_steps());
  Evaluator eval(ctx, nullptr, &gk);
  const Encryptor encryptor(ctx, kg.secret_key());
  const Decryptor decryptor(ctx, kg.secret_key());
  const auto x = test::random_complex(slots, 3);
  const Ciphertext in = encryptor.encrypt(enc.encode(x, 3, ctx.params().default_scale()));
  Ciphertext out = lt.apply(eval, in);
  eval.rescale_inplace(out);
  EXPECT_EQ(out.level(), 2u);
  EXPECT_NEAR(out.scale, in.scale, in.scale * 1e-12);
  const auto got = enc.decode(decryptor.decrypt(out));
  EXPECT_GT(test::precision_bits(got, apply_plain(diags, x)), 16) << "baby steps " << lt.baby_steps();
}

INSTANTIATE_TEST_SUITE_P(
    Shapes, LinearTransformTest,
    ::testing::Values(std::make_tuple(std::size_t{32}, std::vector<long>{0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15,
                                                                           16, 17, 18, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 29, 30, 31},
                                      std::size_t{0}),
                      std::make_tuple(std::size_t{32}, std::vector<long>{-5, -1, 0, 1, 5, 9}, std::size_t{0}),
                      std::make_tuple(std::size_t{32}, std::vector<long>{-5, -1, 0, 1, 5, 9}, std::size_t{1}),
                      std::make_tuple(std::size_t{32}, std::vector<long>{3, 17}, std::size_t{32}),
                      std::make_tuple(std::size_t{512}, [] {
                        std::vector<long> v;
                        for (long k = 0; k < 64; ++k) v.push_back(k * 7 - 200);
                        return v;
                      }(), std::size_t{0})));

TEST(LinearTransform, ChoosesBalancedBabyStepsAndRejectsBadInput) {
  std::vector<long> dense;
  for (long k = 0; k < 64; ++k) dense.push_back(k);
  // Cost 10 per baby step, 9 per giant step: n1 = 8 (7 and 7: 133) beats 16 (15 and 3: 177)
  // and 4 (3 and 15: 165).
  EXPECT_EQ(LinearTransform::optimal_baby_steps(dense, 64), 8u);
  EXPECT_EQ(LinearTransform::optimal_baby_steps({0}, 64), 1u);
  Context ctx(test::small_params(10, 2));
  Encoder enc(ctx);
  Diagonals d;
  d[0] = std::vector<std::complex<double>>(16, 1.0);
  EXPECT_THROW(LinearTransform(enc, d, 32, 2), std::invalid_argument);  // wrong length
  EXPECT_THROW(LinearTransform(enc, d, 16, 0), std::invalid_argument);  // no level to rescale
  d[40] = std::vector<std::complex<double>>(16, 1.0);
  EXPECT_THROW(LinearTransform(enc, d, 16, 2), std::invalid_argument);  // index out of range
  Diagonals ok;
  ok[1] = std::vector<std::complex<double>>(16, 1.0);
  const LinearTransform lt(enc, ok, 16, 2);
  KeyGenerator kg(ctx);
  const GaloisKeys gk = kg.create_galois_keys(lt.rotation_steps());
  Evaluator eval(ctx, nullptr, &gk);
  const Encryptor encryptor(ctx, kg.secret_key());
  const std::vector<double> x(16, 1.0);
  const Ciphertext wrong_level = encryptor.encrypt(enc.encode(x, 1, 1e9));
  EXPECT_THROW(lt.apply(eval, wrong_level), std::invalid_argument);
}

// Chained giant steps: one key per gap between giant steps on each side of 0 instead of
// one per step, the same product (both evaluation orders: babies before giants and giants
// before babies), and the mode survives the stored form.
TEST(LinearTransform, ChainedGiantStepsNeedOneKeyPerGapAndMatch) {
  Context ctx(test::small_params(10, 2));
  Encoder enc(ctx);
  KeyGenerator kg(ctx);
  const Encryptor encryptor(ctx, kg.secret_key());
  const Decryptor decryptor(ctx, kg.secret_key());
  const std::size_t slots = 512;
  std::vector<long> symmetric;  // -40 .. 40: giant steps +-8 .. +-40 with 8 baby steps
  for (long k = -40; k <= 40; ++k) symmetric.push_back(k);
  const Diagonals diags = random_diagonals(symmetric, slots, 11);
  const LinearTransform summed(enc, diags, slots, 2, 8, 0, DiagonalStorage::kEncoded, GiantSteps::kSummed);
  const LinearTransform chained(enc, diags, slots, 2, 8, 0, DiagonalStorage::kEncoded, GiantSteps::kChained);
  EXPECT_EQ(chained.giant_rotations(), summed.giant_rotations());
  EXPECT_EQ(summed.rotation_steps().size(), 7u + 10u);
  const std::vector<long> want{1, 2, 3, 4, 5, 6, 7, 8, static_cast<long>(slots) - 8};
  EXPECT_EQ(chained.rotation_steps(), want);
  // Baby steps 64: 41 baby rotations against 2 giant steps (-64 and 0): the other order.
  const LinearTransform wide(enc, diags, slots, 2, 64, 0, DiagonalStorage::kEncoded, GiantSteps::kChained);
  const auto x = test::random_complex(slots, 5);
  const Ciphertext in = encryptor.encrypt(enc.encode(x, 2, ctx.params().default_scale()));
  const auto plain = apply_plain(diags, x);
  for (const LinearTransform* lt : {&summed, &chained, &wide}) {
    const GaloisKeys gk = kg.create_galois_keys(lt->rotation_steps());
    Evaluator eval(ctx, nullptr, &gk);
    Ciphertext out = lt->apply(eval, in);
    eval.rescale_inplace(out);
    EXPECT_GT(test::precision_bits(enc.decode(decryptor.decrypt(out)), plain), 16)
        << "baby steps " << lt->baby_steps() << ", chained " << (lt->giant_steps() == GiantSteps::kChained);
  }
  ByteWriter w;
  chained.save(w);
  ByteReader r(w.bytes());
  const LinearTransform loaded = LinearTransform::load(enc, r);
  EXPECT_EQ(loaded.giant_steps(), GiantSteps::kChained);
  EXPECT_EQ(loaded.rotation_steps(), want);
  const GaloisKeys gk = kg.create_galois_keys(want);
  Evaluator eval(ctx, nullptr, &gk);
  const Ciphertext a = chained.apply(eval, in), b = loaded.apply(eval, in);
  EXPECT_TRUE(std::equal(a.polys[1].words().begin(), a.polys[1].words().end(), b.polys[1].words().begin()));
  // A plan lists the same keys.
  EXPECT_EQ(LinearTransform::plan(enc, symmetric, slots, 2, 0, GiantSteps::kChained).rotation_steps().size(),
            LinearTransform::plan(enc, symmetric, slots, 2, 0, GiantSteps::kChained).baby_rotations() + 2);
}

namespace {
// Every coefficient of a and b (same level) within `bound` of each other.
void expect_coefficients_within(const Context& ctx, const Ciphertext& a, const Ciphertext& b, long bound,
                                const std::string& what) {
  ASSERT_EQ(a.level(), b.level()) << what;
  for (std::size_t k = 0; k < 2; ++k) {
    ring::Poly x = a.polys[k], y = b.polys[k];
    ctx.ring_q().from_ntt(x);
    ctx.ring_q().from_ntt(y);
    for (std::size_t i = 0; i < x.limbs(); ++i) {
      const ring::u64 q = ctx.ring_q().modulus(i).value();
      for (std::size_t j = 0; j < ctx.n(); ++j)
        ASSERT_LE(std::abs(ring::centered(ring::sub_mod(x.limb(i)[j], y.limb(i)[j], q), q)), bound)
            << what << ": poly " << k << " limb " << i << " coefficient " << j;
    }
  }
}
}  // namespace

// apply_rescaled against apply and a rescale: summed giant steps divide by P q_l once
// (every coefficient within 1 of the two roundings, the same level, scale and precision),
// with baby steps hoisted at once (giant step 0 present) and one at a time; chained giant
// steps and a transform without giant rotations rescale as before (the same bytes). A
// rotation sum at level 0 is refused and a consumed one is empty.
TEST(LinearTransform, ApplyRescaledIsOneRoundingOfApplyThenRescale) {
  Context ctx(test::small_params(10, 3));
  Encoder enc(ctx);
  KeyGenerator kg(ctx);
  const Encryptor encryptor(ctx, kg.secret_key());
  const Decryptor decryptor(ctx, kg.secret_key());
  const std::size_t slots = 512;
  std::vector<long> symmetric;
  for (long k = -40; k <= 40; ++k) symmetric.push_back(k);
  const Diagonals diags = random_diagonals(symmetric, slots, 13), near = random_diagonals({0, 1, 2, 3}, slots, 14);
  const LinearTransform summed(enc, diags, slots, 3, 8), wide(enc, diags, slots, 3, 64),
      chained(enc, diags, slots, 3, 8, 0, DiagonalStorage::kEncoded, GiantSteps::kChained),
      babies_only(enc, near, slots, 3, 4);
  ASSERT_EQ(babies_only.giant_rotations(), 0u);
  const auto x = test::random_complex(slots, 15);
  const Ciphertext in = encryptor.encrypt(enc.encode(x, 3, ctx.params().default_scale()));
  for (const LinearTransform* lt : {&summed, &wide, &chained, &babies_only}) {
    const std::string what = "baby steps " + std::to_string(lt->baby_steps()) + ", giant rotations " +
                             std::to_string(lt->giant_rotations());
    const GaloisKeys gk = kg.create_galois_keys(lt->rotation_steps());
    Evaluator eval(ctx, nullptr, &gk);
    Ciphertext two_steps = lt->apply(eval, in);
    eval.rescale_inplace(two_steps);
    const Ciphertext fused = lt->apply_rescaled(eval, in);
    EXPECT_EQ(fused.scale, two_steps.scale) << what;
    EXPECT_EQ(fused.log_slots, two_steps.log_slots) << what;
    const bool rescaled_as_before = lt == &chained || lt == &babies_only;
    expect_coefficients_within(ctx, fused, two_steps, rescaled_as_before ? 0 : 1, what);
    const auto plain = apply_plain(lt == &babies_only ? near : diags, x);
    EXPECT_GT(test::precision_bits(enc.decode(decryptor.decrypt(fused)), plain), 16) << what;
  }
  const GaloisKeys gk = kg.create_galois_keys({1});
  Evaluator eval(ctx, nullptr, &gk);
  RotationSum bottom(eval);
  bottom.add(encryptor.encrypt(enc.encode(x, 0, ctx.params().default_scale())), 1);
  EXPECT_THROW(bottom.result_rescaled(), std::invalid_argument);
  RotationSum consumed(eval);
  consumed.add(in, 1);
  consumed.add(in, 0);
  EXPECT_EQ(consumed.result_rescaled().level(), 2u);
  EXPECT_THROW(consumed.result(), std::logic_error);
  RotationSum unrotated_only(eval);
  unrotated_only.add(in, 0);
  EXPECT_EQ(unrotated_only.result_rescaled().level(), 2u);
  EXPECT_THROW(unrotated_only.result(), std::logic_error);
}

// Just-in-time diagonals are encoded limb by limb inside the product (the limb-source
// Evaluator::multiply_plain_accumulate): the same bytes as encoded plaintexts, with sparse
// packing (64 of 512 slots) and with full slots.
TEST(LinearTransform, JustInTimeStorageGivesIdenticalResults) {
  Context ctx(test::small_params(10, 2));
  Encoder enc(ctx);
  KeyGenerator kg(ctx);
  const Encryptor encryptor(ctx, kg.secret_key());
  for (const std::size_t slots : {std::size_t{64}, std::size_t{512}}) {
    const Diagonals diags = random_diagonals({-3, 0, 2, 7, 12, 33}, slots, 4);
    const LinearTransform encoded(enc, diags, slots, 2);
    LinearTransform jit(enc, diags, slots, 2, 0, 0, DiagonalStorage::kJustInTime);
    EXPECT_EQ(jit.storage(), DiagonalStorage::kJustInTime);
    EXPECT_LT(jit.plaintext_bytes(), encoded.plaintext_bytes());
    const GaloisKeys gk = kg.create_galois_keys(encoded.rotation_steps());
    Evaluator eval(ctx, nullptr, &gk);
    const Ciphertext in = encryptor.encrypt(enc.encode(test::random_complex(slots, 1), 2, ctx.params().default_scale()));
    const Ciphertext a = encoded.apply(eval, in), b = jit.apply(eval, in);
    for (std::size_t p = 0; p < 2; ++p)
      EXPECT_TRUE(std::equal(a.polys[p].words().begin(), a.polys[p].words().end(), b.polys[p].words().begin()))
          << slots;
    jit.encode_all();
    EXPECT_EQ(jit.storage(), DiagonalStorage::kEncoded);
    EXPECT_EQ(jit.plaintext_bytes(), encoded.plaintext_bytes());
    const Ciphertext c = jit.apply(eval, in);
    EXPECT_TRUE(std::equal(a.polys[0].words().begin(), a.polys[0].words().end(), c.polys[0].words().begin()));
    // The limb-source product refuses an accumulator of another scale.
    Ciphertext acc = a;
    EXPECT_THROW(eval.multiply_plain_accumulate(acc, in, 3.0, [](std::size_t, ring::u64*) {}), std::invalid_argument);
  }
}

// A batch of inputs through one transform (each just-in-time diagonal made once per limb
// for all of them) gives every input the bytes of its own apply(), rescaled or not: encoded
// and just-in-time diagonals, summed and chained giant steps, and both evaluation orders
// (baby rotations first, or one baby rotation at a time when there are more baby than giant
// steps).
TEST(LinearTransform, BatchOfInputsEqualsEachInputAlone) {
  Context ctx(test::small_params(10, 2));
  Encoder enc(ctx);
  KeyGenerator kg(ctx);
  const Encryptor encryptor(ctx, kg.secret_key());
  const std::size_t slots = 256;
  const Diagonals diags = random_diagonals({-9, -3, 0, 2, 7, 12, 33, 70}, slots, 6);
  std::vector<Ciphertext> inputs;
  for (std::uint64_t seed = 1; seed <= 3; ++seed)
    inputs.push_back(encryptor.encrypt(enc.encode(test::random_complex(slots, seed), 2, ctx.params().default_scale())));
  const auto same = [](const Ciphertext& a, const Ciphertext& b) {
    if (a.level() != b.level() || a.scale != b.scale) return false;
    for (std::size_t p = 0; p < 2; ++p)
      if (!std::ranges::equal(a.polys[p].words(), b.polys[p].words())) return false;
    return true;
  };
  for (const DiagonalStorage storage : {DiagonalStorage::kEncoded, DiagonalStorage::kJustInTime})
    for (const GiantSteps giants : {GiantSteps::kSummed, GiantSteps::kChained})
      for (const std::size_t baby_steps : {std::size_t{0}, std::size_t{128}}) {  // 128: more baby than giant steps
        const LinearTransform lt(enc, diags, slots, 2, baby_steps, 0, storage, giants);
        const GaloisKeys gk = kg.create_galois_keys(lt.rotation_steps());
        const Evaluator eval(ctx, nullptr, &gk);
        for (const bool rescale : {false, true}) {
          const std::vector<Ciphertext> batch = lt.apply(eval, inputs, rescale);
          ASSERT_EQ(batch.size(), inputs.size());
          for (std::size_t i = 0; i < inputs.size(); ++i) {
            const Ciphertext alone = rescale ? lt.apply_rescaled(eval, inputs[i]) : lt.apply(eval, inputs[i]);
            EXPECT_TRUE(same(batch[i], alone)) << "input " << i << ", storage " << static_cast<int>(storage)
                                               << ", chained " << (giants == GiantSteps::kChained) << ", baby steps "
                                               << lt.baby_steps() << ", rescale " << rescale;
          }
        }
        EXPECT_THROW(lt.apply(eval, std::span<const Ciphertext>(), false), std::invalid_argument);
        const Ciphertext lower = encryptor.encrypt(enc.encode(test::random_complex(slots, 9), 1, ctx.params().default_scale()));
        EXPECT_THROW(lt.apply(eval, std::vector<Ciphertext>{inputs[0], lower}, false), std::invalid_argument);
      }
}

// The batched multiply-accumulate (limb l of every product, then limb l + 1) sums what one
// product at a time sums: products sharing an accumulator, sharing an input, encoded and
// limb-source plaintexts mixed; a batch across levels or without a plaintext is refused.
TEST(LinearTransform, BatchedPlainProductsEqualOneAtATime) {
  Context ctx(test::small_params(10, 2));
  Encoder enc(ctx);
  KeyGenerator kg(ctx);
  const Encryptor encryptor(ctx, kg.secret_key());
  const Evaluator eval(ctx);
  const std::size_t slots = 512;
  const double scale = ctx.params().default_scale();
  std::vector<Ciphertext> inputs;
  std::vector<Plaintext> plains;
  for (int i = 0; i < 3; ++i) {
    inputs.push_back(encryptor.encrypt(enc.encode(test::random_complex(slots, 1), 2, scale)));
    plains.push_back(enc.encode(test::random_complex(slots, 1), 2, scale));
  }
  // Plaintext 2 as a limb source (its NTT limbs copied out), the others encoded.
  const auto limb_of_plain_2 = [&](std::size_t l, ring::u64* out) {
    std::copy_n(plains[2].poly.limb(l), ctx.n(), out);
  };
  // (accumulator, input, plaintext): accumulator 0 takes four products, input 1 feeds two;
  // runs into one accumulator (one dot product per limb): products 0-1 start accumulator 0,
  // products 3-4 (a limb source among them) add to it.
  const std::vector<std::array<int, 3>> shape = {{0, 0, 0}, {0, 1, 1}, {1, 1, 2}, {0, 2, 2}, {0, 0, 1}, {1, 0, 1}};
  std::vector<Ciphertext> one_at_a_time(2), batched(2);
  std::vector<Evaluator::PlainProduct> batch;
  for (const auto& [acc, in, pt] : shape) {
    if (pt == 2) {
      eval.multiply_plain_accumulate(one_at_a_time[acc], inputs[in], plains[2].scale, limb_of_plain_2);
      batch.push_back({&batched[acc], &inputs[in], nullptr, plains[2].scale, limb_of_plain_2});
    } else {
      eval.multiply_plain_accumulate(one_at_a_time[acc], inputs[in], plains[pt]);
      batch.push_back({&batched[acc], &inputs[in], &plains[pt], 0, {}});
    }
  }
  // A product sharing the previous limb source's plaintext (one diagonal, two inputs): its
  // limbs are not made again (`limb` left empty), the sum is the same.
  eval.multiply_plain_accumulate(one_at_a_time[1], inputs[0], plains[2].scale, limb_of_plain_2);
  batch.push_back({&batched[0], &inputs[2], nullptr, plains[2].scale, limb_of_plain_2});
  batch.push_back({&batched[1], &inputs[0], nullptr, plains[2].scale, {}, true});
  eval.multiply_plain_accumulate(one_at_a_time[0], inputs[2], plains[2].scale, limb_of_plain_2);
  eval.multiply_plain_accumulate(batch);
  for (int a = 0; a < 2; ++a)
    for (std::size_t p = 0; p < 2; ++p) {
      const auto x = one_at_a_time[a].polys[p].words(), y = batched[a].polys[p].words();
      ASSERT_TRUE(std::equal(x.begin(), x.end(), y.begin(), y.end())) << "accumulator " << a;
    }
  Ciphertext fresh;
  const Ciphertext lower = encryptor.encrypt(enc.encode(test::random_complex(slots, 1), 1, scale));
  const std::vector<Evaluator::PlainProduct> mixed_levels = {{&fresh, &inputs[0], &plains[0], 0, {}},
                                                             {&fresh, &lower, &plains[0], 0, {}}};
  EXPECT_THROW(eval.multiply_plain_accumulate(mixed_levels), std::invalid_argument);
  const std::vector<Evaluator::PlainProduct> no_plaintext = {{&fresh, &inputs[0], nullptr, scale, {}}};
  EXPECT_THROW(eval.multiply_plain_accumulate(no_plaintext), std::invalid_argument);
  // Sharing needs a previous product with the same plaintext.
  const std::vector<Evaluator::PlainProduct> shares_nothing = {{&fresh, &inputs[0], nullptr, scale, {}, true}};
  EXPECT_THROW(eval.multiply_plain_accumulate(shares_nothing), std::invalid_argument);
  const std::vector<Evaluator::PlainProduct> shares_another = {{&fresh, &inputs[0], &plains[0], 0, {}},
                                                               {&fresh, &inputs[1], nullptr, scale, {}, true}};
  EXPECT_THROW(eval.multiply_plain_accumulate(shares_another), std::invalid_argument);
  EXPECT_TRUE(fresh.polys.empty());
  // A second product into the fresh accumulator at another scale: refused, and the
  // accumulator the batch had started is empty again.
  const std::vector<Evaluator::PlainProduct> mismatched = {{&fresh, &inputs[0], &plains[0], 0, {}},
                                                           {&fresh, &inputs[1], nullptr, 3.0, limb_of_plain_2}};
  EXPECT_THROW(eval.multiply_plain_accumulate(mismatched), std::invalid_argument);
  EXPECT_TRUE(fresh.polys.empty());
}

// A backing that records what it is given back (a file mapping drops those pages). Given
// back from several threads at once (validation runs in parallel): the count is atomic.
// Regression: a plain counter lost an update now and then (seen on the scalar path).
struct RecordingBacking final : Backing {
  explicit RecordingBacking(Bytes b) : bytes(std::move(b)) {}
  void release(std::span<const std::uint8_t> used) const override {
    EXPECT_GE(used.data(), bytes.data());
    EXPECT_LE(used.data() + used.size(), bytes.data() + bytes.size());
    released += used.size();
  }
  Bytes bytes;
  mutable std::atomic<std::size_t> released{0};
};

// Five diagonals over 64 slots at level 2 stored one way, saved, with the keys and an
// encrypted input to apply them to: what the in-place loading tests load and compare.
struct SavedTransform {
  explicit SavedTransform(DiagonalStorage storage)
      : ctx(test::small_params(10, 2)),
        enc(ctx),
        kg(ctx),
        diags(random_diagonals({-3, 0, 2, 7, 12}, 64, 4)),
        saved(enc, diags, 64, 2, 0, 0, storage),
        gk(kg.create_galois_keys(saved.rotation_steps())),
        eval(ctx, nullptr, &gk),
        in(Encryptor(ctx, kg.secret_key()).encrypt(enc.encode(test::random_complex(64, 1), 2, ctx.params().default_scale()))) {
    ByteWriter w;
    saved.save(w);
    bytes = w.bytes();
  }
  Context ctx;
  Encoder enc;
  KeyGenerator kg;
  Diagonals diags;
  LinearTransform saved;
  GaloisKeys gk;
  Evaluator eval;
  Ciphertext in;
  Bytes bytes;
};

TEST(LinearTransform, InPlaceCoefficientsAreNotReadAtLoadAndGivenBackAfterEachUse) {
  const SavedTransform t(DiagonalStorage::kJustInTime);
  const auto& [ctx, enc, kg, diags, jit, gk, eval, in, bytes] = t;
  const auto backing = std::make_shared<const RecordingBacking>(bytes);
  ByteReader r(backing->bytes);
  const LinearTransform loaded = LinearTransform::load(enc, r, backing);
  const std::size_t per_pass = diags.size() * 2 * 64 * sizeof(std::int64_t);  // 2 x slots coefficients each
  EXPECT_EQ(backing->released, 0u);  // loading did not read them (their width is measured at first use)
  const Ciphertext a = jit.apply(eval, in), b = loaded.apply(eval, in);
  EXPECT_EQ(backing->released, per_pass);  // given back after each use
  const Ciphertext c = loaded.apply(eval, in);  // the width measured at the first use
  EXPECT_EQ(backing->released, 2 * per_pass);
  for (std::size_t p = 0; p < 2; ++p) {
    EXPECT_TRUE(std::equal(a.polys[p].words().begin(), a.polys[p].words().end(), b.polys[p].words().begin()));
    EXPECT_TRUE(std::equal(a.polys[p].words().begin(), a.polys[p].words().end(), c.polys[p].words().begin()));
  }
}

// Pre-encoded diagonals load in place from a mapping (no copy: the plaintexts borrow its
// words) and copied without one, with the same results as the transform saved; copies of
// a borrowed polynomial own their words; a word not reduced modulo its prime is refused
// either way.
TEST(LinearTransform, PreEncodedDiagonalsLoadInPlace) {
  const SavedTransform t(DiagonalStorage::kEncoded);
  const auto& [ctx, enc, kg, diags, encoded, gk, eval, in, bytes] = t;
  const auto backing = std::make_shared<const HeldBytes>(bytes);
  ByteReader in_place_reader(backing->bytes), copied_reader(backing->bytes);
  const LinearTransform in_place = LinearTransform::load(enc, in_place_reader, backing);
  const LinearTransform copied = LinearTransform::load(enc, copied_reader);
  EXPECT_EQ(in_place.plaintext_bytes(), encoded.plaintext_bytes());
  const Ciphertext want = encoded.apply(eval, in);
  for (const LinearTransform* lt : {&in_place, &copied}) {
    const Ciphertext got = lt->apply(eval, in);
    for (std::size_t p = 0; p < 2; ++p)
      EXPECT_TRUE(std::equal(want.polys[p].words().begin(), want.polys[p].words().end(), got.polys[p].words().begin()));
  }
  const LinearTransform copy_of_in_place = in_place;  // owns its words: usable without the mapping
  const Ciphertext again = copy_of_in_place.apply(eval, in);
  EXPECT_TRUE(std::equal(want.polys[0].words().begin(), want.polys[0].words().end(), again.polys[0].words().begin()));
  // The borrowed polynomial itself: a view, copies own.
  const std::vector<std::uint64_t> words(2 * ctx.n(), 7);
  const ring::Poly view = ring::Poly::borrowed(words.data(), ctx.n(), 2);
  EXPECT_TRUE(view.is_borrowed());
  EXPECT_EQ(view.limb(1), words.data() + ctx.n());
  ring::Poly owned = view;
  EXPECT_FALSE(owned.is_borrowed());
  EXPECT_NE(owned.limb(0), words.data());
  EXPECT_TRUE(std::equal(owned.words().begin(), owned.words().end(), words.begin()));
  // The last word of the last diagonal set to its prime: refused, in place or copied.
  const std::uint64_t prime = ctx.ring_q().modulus(2).value();
  const auto damaged = std::make_shared<HeldBytes>(backing->bytes);
  std::memcpy(damaged->bytes.data() + damaged->bytes.size() - sizeof prime, &prime, sizeof prime);
  ByteReader a(damaged->bytes), b(damaged->bytes);
  EXPECT_THROW(LinearTransform::load(enc, a, damaged), SerializationError);
  EXPECT_THROW(LinearTransform::load(enc, b), SerializationError);
}

// Regression (found by fuzz_loaders, input kept in tests/fuzz/regressions/): a stored
// log2 slot count of 255 was used as a shift before any range check (undefined
// behaviour). Out-of-range counts are a SerializationError, and a valid transform still
// round-trips, copied and in place.
TEST(LinearTransform, LoadRejectsOutOfRangeSlotExponent) {
  Context ctx(test::small_params(10, 2));
  Encoder enc(ctx);
  Diagonals d;
  d[0] = std::vector<std::complex<double>>(16, 0.5);
  d[3] = std::vector<std::complex<double>>(16, -0.25);
  const LinearTransform lt(enc, d, 16, 1, 0, 0, DiagonalStorage::kJustInTime);
  ByteWriter w;
  lt.save(w);
  const auto good = std::make_shared<const HeldBytes>(w.bytes());
  ByteReader copied(good->bytes), in_place(good->bytes);
  EXPECT_EQ(LinearTransform::load(enc, copied).diagonal_count(), 2u);
  EXPECT_EQ(LinearTransform::load(enc, in_place, good).diagonal_count(), 2u);
  // Header: slots, level, baby steps (u64), scale (f64), count (u64); per diagonal: giant,
  // baby (i64), kind (u8), scale (f64), then the i32 log2 slot count.
  const std::size_t log_slots_at = 5 * 8 + 2 * 8 + 1 + 8;
  for (const std::int32_t bad : {255, 63, 64, -1, 5}) {
    Bytes damaged = good->bytes;
    std::memcpy(damaged.data() + log_slots_at, &bad, sizeof bad);
    ByteReader r(damaged);
    EXPECT_THROW(LinearTransform::load(enc, r), SerializationError) << bad;
  }
  // The last stored coefficient: magnitudes of 2^62 and more are refused (round_coefficients
  // never writes them): copied, when loaded; used in place, where loading does not read the
  // values, by the first product. 2^62 - 1 is accepted.
  KeyGenerator kg(ctx);
  const GaloisKeys gk = kg.create_galois_keys(lt.rotation_steps());
  const Evaluator eval(ctx, nullptr, &gk);
  const Ciphertext in = Encryptor(ctx, kg.secret_key()).encrypt(enc.encode(test::random_complex(16, 2), 1, 1 << 20));
  const std::int64_t limit = std::int64_t{1} << 62;
  for (const std::int64_t value : {limit, -limit, std::numeric_limits<std::int64_t>::min(), limit - 1}) {
    const auto damaged = std::make_shared<HeldBytes>(good->bytes);
    std::memcpy(damaged->bytes.data() + damaged->bytes.size() - sizeof value, &value, sizeof value);
    ByteReader a(damaged->bytes), b(damaged->bytes);
    const LinearTransform in_place_lt = LinearTransform::load(enc, b, damaged);
    if (value == limit - 1) {
      EXPECT_NO_THROW(LinearTransform::load(enc, a));
      EXPECT_NO_THROW(in_place_lt.apply(eval, in));
    } else {
      EXPECT_THROW(LinearTransform::load(enc, a), SerializationError) << value;
      EXPECT_THROW(in_place_lt.apply(eval, in), SerializationError) << value;
    }
  }
}
