// Operation counts and the latency estimate built on them (ckks/operation_counts.h): the
// counts follow what polynomials, transforms and bootstraps evaluate; the estimate grows
// the way key switching and limb-wise work grow.
#include <gtest/gtest.h>

#include <cmath>
#include <numbers>

#include "ckks/bootstrapping.h"
#include "ckks/linear_transform.h"
#include "ckks/operation_counts.h"
#include "test_util.h"

namespace pfhe::ckks {
namespace {

double total(const OperationCounts& c, double LevelOperations::*field) {
  double t = 0;
  for (const auto& [level, ops] : c) t += ops.*field;
  return t;
}

// Every product of p from `level` lands within its depth, one relinearization and one
// rescale each.
double products(const Polynomial& p, std::size_t level) {
  OperationCounts c;
  count_polynomial(c, p, level);
  for (const auto& [l, ops] : c) {
    EXPECT_LE(l, level);
    EXPECT_GT(l + p.depth(), level);
    EXPECT_EQ(ops.key_switches, ops.tensor_products);
  }
  return total(c, &LevelOperations::tensor_products);
}

TEST(OperationCounts, PolynomialProductsFollowTheRecursion) {
  Polynomial linear;
  linear.coeffs = {0.5, 2.0};
  EXPECT_EQ(products(linear, 5), 0);
  Polynomial quadratic;
  quadratic.coeffs = {0.3, -1.2, 1.0};
  EXPECT_EQ(products(quadratic, 5), 2);  // x^2, then the giant step's product
  // EvalMod's cosine: degree 30 in 12 products, not 19 (polynomial.cpp's leaves).
  const Polynomial cosine = chebyshev_interpolate([](double x) { return std::cos(x); }, 30, -1, 1);
  EXPECT_EQ(products(cosine, 20), 12);
  // A shifted interval costs its affine map's level first (a rescale, no product).
  const Polynomial shifted = chebyshev_interpolate([](double x) { return std::exp(x); }, 7, -4, 4);
  OperationCounts c;
  count_polynomial(c, shifted, 10);
  EXPECT_EQ(c.at(10).rescales, 1);
  EXPECT_EQ(c.at(10).tensor_products, 0);
  EXPECT_THROW(count_polynomial(c, cosine, 2), std::invalid_argument);  // fewer levels than its depth
}

TEST(OperationCounts, TransformCountsItsGeometry) {
  const Context ctx(test::small_params(12, 6));
  const Encoder enc(ctx);
  std::vector<long> indices;
  for (long k = 0; k < 24; ++k) indices.push_back(k);
  const LinearTransform lt = LinearTransform::plan(enc, indices, 2048, 5, 0, GiantSteps::kChained);
  OperationCounts c;
  lt.count_operations(c, 3);  // at another level: the same geometry there
  ASSERT_EQ(c.size(), 1u);
  const LevelOperations& ops = c.at(3);
  EXPECT_EQ(ops.hoisted_rotations, static_cast<double>(lt.baby_rotations()));
  EXPECT_EQ(ops.key_switches, static_cast<double>(lt.giant_rotations()));
  EXPECT_GT(ops.hoisted_rotations, 0);
  EXPECT_GT(ops.key_switches, 0);
  EXPECT_EQ(ops.decompositions, 1);
  EXPECT_EQ(ops.plaintext_products, 24);
  EXPECT_EQ(ops.diagonal_encodings, 24);  // a plan is weighed as just in time
  EXPECT_EQ(ops.rescales, 1);
}

TEST(OperationCounts, EstimateGrowsWithLimbsDigitsAndRing) {
  const Parameters p = test::small_params(12, 12, 7);  // digits of 2 primes
  const auto seconds = [&](LevelOperations ops, std::size_t level) { return estimated_seconds(ops, p, level); };
  LevelOperations rotation, hoisted, product, rescale;
  rotation.key_switches = 1;
  hoisted.hoisted_rotations = 1;
  product.plaintext_products = 1;
  rescale.rescales = 1;
  for (const std::size_t level : {2u, 6u, 11u}) {
    EXPECT_LT(seconds(hoisted, level), seconds(rotation, level)) << level;
    EXPECT_LT(seconds(product, level), seconds(hoisted, level)) << level;
    EXPECT_GT(seconds(rescale, level), seconds(product, level)) << level;
  }
  // More limbs, and more digits with them, cost more; key switching grows faster than
  // limb-wise work (digits x limbs).
  EXPECT_LT(seconds(rotation, 2), seconds(rotation, 11));
  EXPECT_GT(seconds(rotation, 11) / seconds(rotation, 2), seconds(product, 11) / seconds(product, 2));
  ASSERT_GT(p.digits_at(11), p.digits_at(2));
  // Twice the ring, twice the time.
  const Parameters big = test::small_params(13, 12, 7);
  EXPECT_NEAR(estimated_seconds(rotation, big, 6) / seconds(rotation, 6), 2.0, 1e-9);
  // A map of counts sums its levels.
  OperationCounts counts;
  counts[2] += rotation;
  counts[11] += rotation;
  EXPECT_NEAR(estimated_seconds(counts, p), seconds(rotation, 2) + seconds(rotation, 11), 1e-15);
  EXPECT_NEAR(estimated_seconds(repeated(counts, 3), p), 3 * estimated_seconds(counts, p), 1e-12);
}

// A bootstrap's count: its DFT stages' rotations as the bootstrapper reports them, one
// EvalMod per half (the cosine's products and the double angles), at the levels it runs.
TEST(OperationCounts, BootstrapCountsItsStages) {
  BootstrapConfig config;
  config.log_slots = 11;
  config.cts_stages = config.stc_stages = 3;
  config.cosine_degree = 30;
  config.double_angles = 3;
  config.slots_to_coeffs_first = true;
  config.giant_steps = GiantSteps::kChained;
  const Context ctx(test::bootstrap_params(12, config, 2, 54));
  const Encoder enc(ctx);
  const Bootstrapper boot(enc, config);
  OperationCounts c;
  boot.count_operations(c);
  EXPECT_EQ(c.begin()->first, boot.input_level() - config.stc_stages + 1);  // SlotsToCoeffs' last stage
  EXPECT_EQ(c.rbegin()->first, ctx.max_level());
  EXPECT_EQ(total(c, &LevelOperations::hoisted_rotations) + total(c, &LevelOperations::key_switches) -
                total(c, &LevelOperations::tensor_products),
            static_cast<double>(boot.cts_rotations() + boot.stc_rotations()) + 1 /* conjugation */);
  EXPECT_EQ(total(c, &LevelOperations::tensor_products), 2 * (12 + config.double_angles));
  EXPECT_GT(estimated_seconds(c, ctx.params()), 0);
}

}  // namespace
}  // namespace pfhe::ckks
