// Polynomial evaluation: power and Chebyshev bases, depth, precision against float64.
#include <gtest/gtest.h>

#include <cmath>

#include "ckks/encoder.h"
#include "ckks/encryptor.h"
#include "ckks/keygen.h"
#include "ckks/polynomial.h"
#include "test_util.h"

using namespace pfhe;
using namespace pfhe::ckks;

namespace {

struct Fixture {
  Fixture() : ctx(test::small_params(11, 8)), enc(ctx), kg(ctx), rlk(kg.create_relin_key()),
              encryptor(ctx, kg.secret_key()), decryptor(ctx, kg.secret_key()), eval(ctx, &rlk) {}
  Context ctx;
  Encoder enc;
  KeyGenerator kg;
  RelinKey rlk;
  Encryptor encryptor;
  Decryptor decryptor;
  Evaluator eval;
};

Fixture& fixture() {
  static Fixture f;
  return f;
}

void check(const Polynomial& p, double lo, double hi, std::size_t expect_depth, double min_bits) {
  Fixture& f = fixture();
  const std::size_t slots = 256;
  auto x = test::random_real(slots, p.coeffs.size(), 1.0);
  for (auto& v : x) v = lo + (v + 1) / 2 * (hi - lo);
  const std::size_t top = f.ctx.max_level();
  const Ciphertext ct = f.encryptor.encrypt(f.enc.encode(x, top, f.ctx.params().default_scale()));
  EXPECT_EQ(p.depth(), expect_depth);
  const Ciphertext out = evaluate_polynomial(f.eval, ct, p);
  EXPECT_EQ(out.level(), top - expect_depth);
  EXPECT_NEAR(out.scale, ct.scale, ct.scale * 1e-9);
  std::vector<double> want(slots);
  for (std::size_t i = 0; i < slots; ++i) want[i] = p.evaluate(x[i]);
  EXPECT_GT(test::precision_bits(f.enc.decode_real(f.decryptor.decrypt(out)), want), min_bits)
      << "degree " << p.degree();
}

}  // namespace

TEST(Polynomial, PowerBasisDegreesOneToNine) {
  for (std::size_t d = 1; d <= 9; ++d) {
    Polynomial p;
    p.coeffs = test::random_real(d + 1, 100 + d, 1.0);
    std::size_t depth = 0;
    while ((std::size_t{1} << depth) < d + 1) ++depth;
    check(p, -1, 1, depth, 16);
  }
}

TEST(Polynomial, ChebyshevOnUnitAndShiftedIntervals) {
  for (std::size_t d : {2, 3, 7, 15}) {
    Polynomial p{PolynomialBasis::kChebyshev, test::random_real(d + 1, 200 + d, 1.0)};
    std::size_t depth = 0;
    while ((std::size_t{1} << depth) < d + 1) ++depth;
    check(p, -1, 1, depth, 14);
  }
  // A smooth activation on [-6, 6]: approximation error and encryption error together.
  const auto gelu = [](double v) { return 0.5 * v * (1 + std::erf(v / std::sqrt(2.0))); };
  const Polynomial g = chebyshev_interpolate(gelu, 15, -6, 6);
  for (double v = -6; v <= 6; v += 0.25) EXPECT_NEAR(g.evaluate(v), gelu(v), 2e-2);
  check(g, -6, 6, 5, 12);
}

// Baby-step giant-step at the degrees EvalMod uses: dense, odd-only (the arcsine's) and
// sparse coefficients with zero runs, where leaves skip baby steps or hold a constant
// only; still at optimal depth and landing exactly at the input's scale.
TEST(Polynomial, BabyStepLeavesKeepOptimalDepthAtHighDegrees) {
  const auto depth_of = [](std::size_t d) {
    std::size_t depth = 0;
    while ((std::size_t{1} << depth) < d + 1) ++depth;
    return depth;
  };
  for (std::size_t d : {5, 12, 30, 31, 63}) {
    Polynomial dense{PolynomialBasis::kChebyshev, test::random_real(d + 1, 300 + d, 1.0)};
    for (auto& c : dense.coeffs) c /= std::sqrt(static_cast<double>(d));
    check(dense, -1, 1, depth_of(d), 12);
    Polynomial odd = dense;
    for (std::size_t k = 0; k <= d; k += 2) odd.coeffs[k] = 0;
    if (odd.degree() == d) check(odd, -1, 1, depth_of(d), 12);
    Polynomial sparse = dense;
    for (std::size_t k = 1; k < d; ++k)
      if (k % 8 != 3) sparse.coeffs[k] = 0;
    check(sparse, -1, 1, depth_of(d), 12);
  }
  Polynomial power;
  power.coeffs = test::random_real(31, 400, 1.0 / 8);
  check(power, -1, 1, 5, 12);
}

TEST(Polynomial, GenericQuadraticTakesTwoLevels) {
  Polynomial p;
  p.coeffs = {0.3, -1.2, 1.0};  // x^2 - 1.2 x + 0.3
  EXPECT_EQ(p.depth(), 2u);  // ceil(log2 3); the factored HerPN form x(x + a1) + a0 takes one (nn layer)
  check(p, -3, 3, 2, 14);
}

TEST(Polynomial, RejectsBadInput) {
  Fixture& f = fixture();
  const std::vector<double> x(8, 0.5);
  const Ciphertext low = f.encryptor.encrypt(f.enc.encode(x, 1, 1e10));
  Polynomial deep;
  deep.coeffs = {1, 1, 1, 1, 1};
  EXPECT_THROW(evaluate_polynomial(f.eval, low, deep), std::invalid_argument);
  Polynomial empty;
  EXPECT_THROW(evaluate_polynomial(f.eval, low, empty), std::invalid_argument);
  Polynomial bad;
  bad.coeffs = {1, std::nan("")};
  EXPECT_THROW(evaluate_polynomial(f.eval, low, bad), std::invalid_argument);
  EXPECT_THROW(chebyshev_interpolate([](double v) { return v; }, 3, 1, 1), std::invalid_argument);
}
