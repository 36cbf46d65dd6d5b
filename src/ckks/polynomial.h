// Polynomial evaluation on ciphertexts in the power or the Chebyshev basis with optimal
// depth ceil(log2(degree + 1)) (plus one level for a Chebyshev interval other than
// [-1, 1]), baby-step giant-step: p = q * T_{2^m} + r with 2^m <= degree, recursively,
// and parts of degree below ~sqrt(degree) that have a level to spare evaluated from baby
// steps T_j with scalar products only (polynomial.cpp says where the products go). Every
// scalar combination lands at exactly the scale its sum needs.
#pragma once
#include <functional>
#include <vector>

#include "ckks/evaluator.h"

namespace pfhe::ckks {

enum class PolynomialBasis { kPower, kChebyshev };

struct Polynomial {
  PolynomialBasis basis = PolynomialBasis::kPower;
  std::vector<double> coeffs;  // coeffs[k] multiplies x^k or T_k
  double lower = -1, upper = 1;  // Chebyshev interval (ignored for the power basis)

  std::size_t degree() const;  // ignoring trailing zero coefficients
  // Levels the evaluation consumes.
  std::size_t depth() const;
  double evaluate(double x) const;  // float64 reference
};

// Chebyshev interpolant of f of the given degree on [lower, upper] (Chebyshev nodes).
Polynomial chebyshev_interpolate(const std::function<double(double)>& f, std::size_t degree, double lower,
                                 double upper);

// Evaluates p(x); the result has scale `target_scale` (default: the input's) at level
// x.level() - p.depth(). Needs the evaluator's relinearization key when degree >= 2.
Ciphertext evaluate_polynomial(const Evaluator& eval, const Ciphertext& x, const Polynomial& p,
                               double target_scale = 0);

}  // namespace pfhe::ckks
