#include "ckks/polynomial.h"

#include <cmath>
#include <map>
#include <numbers>
#include <stdexcept>
#include <string>

namespace pfhe::ckks {

namespace {

std::size_t ceil_log2(std::size_t v) {
  std::size_t r = 0;
  while ((std::size_t{1} << r) < v) ++r;
  return r;
}

std::size_t trimmed_degree(const std::vector<double>& c) {
  std::size_t d = c.size();
  while (d > 1 && c[d - 1] == 0.0) --d;
  return d == 0 ? 0 : d - 1;
}

// Split p = q * T_M + r (M = 2^m <= degree < 2M).
void split(const std::vector<double>& c, std::size_t degree, std::size_t big, bool chebyshev,
           std::vector<double>& q, std::vector<double>& r) {
  q.assign(degree - big + 1, 0.0);
  r.assign(c.begin(), c.begin() + static_cast<std::ptrdiff_t>(big));
  for (std::size_t j = 0; j + big <= degree; ++j) {
    const double cj = c[big + j];
    if (!chebyshev) {
      q[j] = cj;
    } else {
      q[j] = j == 0 ? cj : 2 * cj;
      if (j >= 1) r[big - j] -= cj;
    }
  }
}

// Baby-step giant-step evaluation at optimal depth. Giant steps: p = q * B_M + r with
// M = 2^m <= degree, recursively. A part of degree below the baby bound (about
// sqrt(degree)) becomes a leaf, sum c_j B_j over baby steps with scalar products only,
// wherever every B_j it reads lies above the level the part must land at; elsewhere the
// split goes on down to degree-1 leaves. So the depth stays ceil(log2(degree + 1)), and
// the parts with slack (the remainders) cost no ciphertext products: degree 30 needs 12
// instead of 19 (Bossuat et al., Eurocrypt 2021, evaluate the cosine of EvalMod the same
// way). B_j is x^j or T_j, made when first read.
class Recursion {
 public:
  Recursion(const Evaluator& eval, const Ciphertext& x, std::size_t degree, bool chebyshev)
      : eval_(eval), chebyshev_(chebyshev), top_(x.level()),
        baby_bound_(std::size_t{1} << ((ceil_log2(degree + 1) + 1) / 2)) {
    basis_.emplace(1, x);
  }

  // Evaluates sum c_k B_k landing at (level, scale).
  Ciphertext run(const std::vector<double>& c, std::size_t level, double scale) {
    const std::size_t degree = trimmed_degree(c);
    if (degree <= 1 || (degree < baby_bound_ && leaf_fits(c, degree, level))) return leaf(c, degree, level, scale);
    const std::size_t m = ceil_log2(degree + 1) - 1, big = std::size_t{1} << m;
    std::vector<double> q, r;
    split(c, degree, big, chebyshev_, q, r);
    Ciphertext t = basis(big);
    eval_.drop_to_level_inplace(t, level + 1);
    const double q_next = static_cast<double>(eval_.context().ring_q().modulus(level + 1).value());
    Ciphertext qc = run(q, level + 1, scale * q_next / t.scale);
    Ciphertext out = eval_.multiply_relin_rescale(qc, t);
    out.scale = scale;  // (scale * q_next / t.scale) * t.scale / q_next, exact up to rounding
    eval_.add_inplace(out, run(r, level, scale));
    return out;
  }

 private:
  // B_j's level once made: depth ceil(log2 j) below the input.
  std::size_t level_of(std::size_t j) const { return top_ - ceil_log2(j); }

  bool leaf_fits(const std::vector<double>& c, std::size_t degree, std::size_t level) const {
    for (std::size_t j = 1; j <= degree; ++j)
      if (c[j] != 0.0 && level_of(j) <= level) return false;
    return true;
  }

  Ciphertext leaf(const std::vector<double>& c, std::size_t degree, std::size_t level, double scale) {
    std::vector<Evaluator::ConstTerm> terms;
    for (std::size_t j = 1; j <= degree; ++j)
      if (c[j] != 0.0) terms.push_back({&basis(j), c[j]});
    if (terms.empty()) terms.push_back({&basis(1), 0.0});  // a constant: zero at (level, scale)
    Ciphertext out = eval_.linear_combination_to(terms, level, scale);
    if (!c.empty() && c[0] != 0.0) eval_.add_const_inplace(out, c[0]);
    return out;
  }

  // B_j from B_a and B_b, a the largest power of two below j and b = j - a (a = b for a
  // power of two): x^a x^b, or T_j = 2 T_a T_b - T_{a-b}. Depth ceil(log2 j).
  const Ciphertext& basis(std::size_t j) {
    if (const auto found = basis_.find(j); found != basis_.end()) return found->second;
    const std::size_t a = std::size_t{1} << (ceil_log2(j) - 1), b = j - a;
    Ciphertext lower = basis(b);
    const Ciphertext& upper = basis(a);
    eval_.drop_to_level_inplace(lower, upper.level());
    Ciphertext product = eval_.multiply(upper, lower);
    if (chebyshev_) eval_.multiply_integer_inplace(product, 2);
    eval_.relinearize_rescale_inplace(product);
    if (chebyshev_ && a == b) eval_.add_const_inplace(product, -1.0);
    if (chebyshev_ && a != b) eval_.sub_inplace(product, eval_.multiply_const_to(basis(a - b), 1.0, product.level(),
                                                                                product.scale));
    return basis_.emplace(j, std::move(product)).first->second;
  }

  const Evaluator& eval_;
  bool chebyshev_;
  std::size_t top_, baby_bound_;
  std::map<std::size_t, Ciphertext> basis_;  // B_j, j >= 1; references stay valid
};

}  // namespace

std::size_t Polynomial::degree() const { return trimmed_degree(coeffs); }

std::size_t Polynomial::depth() const {
  const bool shifted = basis == PolynomialBasis::kChebyshev && (lower != -1.0 || upper != 1.0);
  return std::max<std::size_t>(1, ceil_log2(degree() + 1)) + (shifted ? 1 : 0);
}

double Polynomial::evaluate(double x) const {
  if (basis == PolynomialBasis::kPower) {
    double acc = 0;
    for (std::size_t k = coeffs.size(); k-- > 0;) acc = acc * x + coeffs[k];
    return acc;
  }
  const double t = (2 * x - lower - upper) / (upper - lower);
  double prev = 1, cur = t, acc = coeffs.empty() ? 0 : coeffs[0];
  for (std::size_t k = 1; k < coeffs.size(); ++k) {
    acc += coeffs[k] * cur;
    const double next = 2 * t * cur - prev;
    prev = cur;
    cur = next;
  }
  return acc;
}

Polynomial chebyshev_interpolate(const std::function<double(double)>& f, std::size_t degree, double lower,
                                 double upper) {
  if (!(upper > lower)) throw std::invalid_argument("chebyshev_interpolate: empty interval");
  const std::size_t n = degree + 1;
  std::vector<double> values(n);
  for (std::size_t j = 0; j < n; ++j) {
    const double node = std::cos(std::numbers::pi * (static_cast<double>(j) + 0.5) / static_cast<double>(n));
    values[j] = f(0.5 * (upper - lower) * node + 0.5 * (upper + lower));
  }
  Polynomial p{PolynomialBasis::kChebyshev, std::vector<double>(n, 0.0), lower, upper};
  for (std::size_t k = 0; k < n; ++k) {
    double s = 0;
    for (std::size_t j = 0; j < n; ++j)
      s += values[j] * std::cos(std::numbers::pi * static_cast<double>(k) * (static_cast<double>(j) + 0.5) /
                                static_cast<double>(n));
    p.coeffs[k] = (k == 0 ? 1.0 : 2.0) * s / static_cast<double>(n);
  }
  return p;
}

Ciphertext evaluate_polynomial(const Evaluator& eval, const Ciphertext& x, const Polynomial& p, double target_scale) {
  if (p.coeffs.empty()) throw std::invalid_argument("evaluate_polynomial: no coefficients");
  for (double c : p.coeffs)
    if (!std::isfinite(c)) throw std::invalid_argument("evaluate_polynomial: coefficient is not finite");
  if (x.level() < p.depth())
    throw std::invalid_argument("evaluate_polynomial: needs " + std::to_string(p.depth()) + " levels, input has " +
                                std::to_string(x.level()));
  const double scale = target_scale > 0 ? target_scale : x.scale;
  const bool chebyshev = p.basis == PolynomialBasis::kChebyshev;
  Ciphertext input = x;
  if (chebyshev && (p.lower != -1.0 || p.upper != 1.0)) {
    if (!(p.upper > p.lower)) throw std::invalid_argument("evaluate_polynomial: empty Chebyshev interval");
    input = eval.multiply_const_to(x, 2.0 / (p.upper - p.lower), x.level() - 1, x.scale);
    eval.add_const_inplace(input, -(p.upper + p.lower) / (p.upper - p.lower));
  }
  Recursion recursion(eval, input, p.degree(), chebyshev);
  return recursion.run(p.coeffs, x.level() - p.depth(), scale);
}

}  // namespace pfhe::ckks
