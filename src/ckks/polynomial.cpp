#include "ckks/polynomial.h"

#include <algorithm>
#include <cmath>
#include <map>
#include <numbers>
#include <stdexcept>
#include <string>
#include <utility>

#include "ckks/operation_counts.h"

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

// The arithmetic the recursion below runs on: ciphertexts, or levels alone
// (count_polynomial, which records each product instead of making it).
struct CiphertextArithmetic {
  using Value = Ciphertext;
  const Evaluator& eval;

  double prime(std::size_t level) const {
    return static_cast<double>(eval.context().ring_q().modulus(level).value());
  }
  void drop(Ciphertext& v, std::size_t level) const { eval.drop_to_level_inplace(v, level); }
  Ciphertext multiply_relin_rescale(const Ciphertext& a, const Ciphertext& b) const {
    return eval.multiply_relin_rescale(a, b);
  }
  void add(Ciphertext& a, const Ciphertext& b) const { eval.add_inplace(a, b); }
  Ciphertext combination(const std::vector<std::pair<const Ciphertext*, double>>& terms, std::size_t level,
                         double scale, double constant) const {
    std::vector<Evaluator::ConstTerm> t;
    for (const auto& [v, c] : terms) t.push_back({v, c});
    Ciphertext out = eval.linear_combination_to(t, level, scale);
    if (constant != 0.0) eval.add_const_inplace(out, constant);
    return out;
  }
  // B_a B_b (lower dropped to upper's level), or T_j = 2 T_a T_b - T_{a-b} (a_minus_b:
  // T_{a-b}, null when a = b: then 2 T_a^2 - 1).
  Ciphertext basis_product(const Ciphertext& upper, const Ciphertext& lower, bool chebyshev,
                           const Ciphertext* a_minus_b) const {
    Ciphertext product = eval.multiply(upper, lower);
    if (chebyshev) eval.multiply_integer_inplace(product, 2);
    eval.relinearize_rescale_inplace(product);
    if (chebyshev && !a_minus_b) eval.add_const_inplace(product, -1.0);
    if (chebyshev && a_minus_b)
      eval.sub_inplace(product, eval.multiply_const_to(*a_minus_b, 1.0, product.level(), product.scale));
    return product;
  }
};

struct LevelCounter {
  struct Value {
    std::size_t at = 0;
    double scale = 1;
    std::size_t level() const { return at; }
  };
  OperationCounts& counts;

  double prime(std::size_t) const { return 1; }
  void drop(Value& v, std::size_t level) const { v.at = level; }
  Value multiply_relin_rescale(const Value& a, const Value& b) const {
    const std::size_t level = std::min(a.at, b.at);
    count_product(counts, level);
    return {level - 1, 1};
  }
  void add(Value&, const Value&) const {}
  Value combination(const std::vector<std::pair<const Value*, double>>&, std::size_t level, double, double) const {
    return {level, 1};
  }
  Value basis_product(const Value& upper, const Value& lower, bool, const Value*) const {
    return multiply_relin_rescale(upper, lower);
  }
};

// Baby-step giant-step evaluation at optimal depth. Giant steps: p = q * B_M + r with
// M = 2^m <= degree, recursively. A part of degree below the baby bound (about
// sqrt(degree)) becomes a leaf, sum c_j B_j over baby steps with scalar products only,
// wherever every B_j it reads lies above the level the part must land at; elsewhere the
// split goes on down to degree-1 leaves. So the depth stays ceil(log2(degree + 1)), and
// the parts with slack (the remainders) cost no ciphertext products: degree 30 needs 12
// instead of 19 (Bossuat et al., Eurocrypt 2021, evaluate the cosine of EvalMod the same
// way). B_j is x^j or T_j, made when first read.
template <class Arithmetic>
class Recursion {
  using Value = typename Arithmetic::Value;

 public:
  Recursion(const Arithmetic& arith, const Value& x, std::size_t degree, bool chebyshev)
      : arith_(arith), chebyshev_(chebyshev), top_(x.level()),
        baby_bound_(std::size_t{1} << ((ceil_log2(degree + 1) + 1) / 2)) {
    basis_.emplace(1, x);
  }

  // Evaluates sum c_k B_k landing at (level, scale).
  Value run(const std::vector<double>& c, std::size_t level, double scale) {
    const std::size_t degree = trimmed_degree(c);
    if (degree <= 1 || (degree < baby_bound_ && leaf_fits(c, degree, level))) return leaf(c, degree, level, scale);
    const std::size_t m = ceil_log2(degree + 1) - 1, big = std::size_t{1} << m;
    std::vector<double> q, r;
    split(c, degree, big, chebyshev_, q, r);
    Value t = basis(big);
    arith_.drop(t, level + 1);
    const double q_next = arith_.prime(level + 1);
    Value qc = run(q, level + 1, scale * q_next / t.scale);
    Value out = arith_.multiply_relin_rescale(qc, t);
    out.scale = scale;  // (scale * q_next / t.scale) * t.scale / q_next, exact up to rounding
    arith_.add(out, run(r, level, scale));
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

  Value leaf(const std::vector<double>& c, std::size_t degree, std::size_t level, double scale) {
    std::vector<std::pair<const Value*, double>> terms;
    for (std::size_t j = 1; j <= degree; ++j)
      if (c[j] != 0.0) terms.emplace_back(&basis(j), c[j]);
    if (terms.empty()) terms.emplace_back(&basis(1), 0.0);  // a constant: zero at (level, scale)
    return arith_.combination(terms, level, scale, c.empty() ? 0.0 : c[0]);
  }

  // B_j from B_a and B_b, a the largest power of two below j and b = j - a (a = b for a
  // power of two): x^a x^b, or T_j = 2 T_a T_b - T_{a-b}. Depth ceil(log2 j).
  const Value& basis(std::size_t j) {
    if (const auto found = basis_.find(j); found != basis_.end()) return found->second;
    const std::size_t a = std::size_t{1} << (ceil_log2(j) - 1), b = j - a;
    Value lower = basis(b);
    const Value& upper = basis(a);
    arith_.drop(lower, upper.level());
    const Value* a_minus_b = a == b ? nullptr : &basis(a - b);
    return basis_.emplace(j, arith_.basis_product(upper, lower, chebyshev_, a_minus_b)).first->second;
  }

  const Arithmetic& arith_;
  bool chebyshev_;
  std::size_t top_, baby_bound_;
  std::map<std::size_t, Value> basis_;  // B_j, j >= 1; references stay valid
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
  const CiphertextArithmetic arith{eval};
  Recursion<CiphertextArithmetic> recursion(arith, input, p.degree(), chebyshev);
  return recursion.run(p.coeffs, x.level() - p.depth(), scale);
}

void count_polynomial(OperationCounts& counts, const Polynomial& p, std::size_t level) {
  if (p.coeffs.empty() || level < p.depth()) throw std::invalid_argument("count_polynomial: no coefficients or too few levels");
  const bool chebyshev = p.basis == PolynomialBasis::kChebyshev;
  const bool shifted = chebyshev && (p.lower != -1.0 || p.upper != 1.0);
  if (shifted) counts[level].rescales += 1;  // the interval's affine map
  const LevelCounter counter{counts};
  Recursion<LevelCounter> recursion(counter, {shifted ? level - 1 : level, 1}, p.degree(), chebyshev);
  recursion.run(p.coeffs, level - p.depth(), 1);
}

}  // namespace pfhe::ckks
