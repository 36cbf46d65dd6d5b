#include "ckks/polynomial.h"

#include <cmath>
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

class Recursion {
 public:
  Recursion(const Evaluator& eval, const Ciphertext& x, std::size_t max_degree, bool chebyshev)
      : eval_(eval), chebyshev_(chebyshev) {
    powers_.push_back(x);  // powers_[i] = T_{2^i} (or x^{2^i})
    for (std::size_t big = 2; big <= max_degree; big <<= 1) {
      Ciphertext next = eval.square_relin(powers_.back());
      if (chebyshev_) eval.multiply_integer_inplace(next, 2);
      eval.rescale_inplace(next);
      if (chebyshev_) eval.add_const_inplace(next, -1.0);
      powers_.push_back(std::move(next));
    }
  }

  // Evaluates sum c_k B_k landing at (level, scale).
  Ciphertext run(const std::vector<double>& c, std::size_t level, double scale) const {
    const std::size_t degree = trimmed_degree(c);
    if (degree <= 1) {
      Ciphertext out = eval_.multiply_const_to(powers_[0], degree == 1 ? c[1] : 0.0, level, scale);
      if (!c.empty() && c[0] != 0.0) eval_.add_const_inplace(out, c[0]);
      return out;
    }
    const std::size_t m = ceil_log2(degree + 1) - 1, big = std::size_t{1} << m;
    std::vector<double> q, r;
    split(c, degree, big, chebyshev_, q, r);
    Ciphertext t = powers_[m];
    eval_.drop_to_level_inplace(t, level + 1);
    const double q_next = static_cast<double>(eval_.context().ring_q().modulus(level + 1).value());
    Ciphertext qc = run(q, level + 1, scale * q_next / t.scale);
    Ciphertext out = eval_.multiply_relin(qc, t);
    eval_.rescale_inplace(out);
    out.scale = scale;  // (scale * q_next / t.scale) * t.scale / q_next, exact up to rounding
    eval_.add_inplace(out, run(r, level, scale));
    return out;
  }

 private:
  const Evaluator& eval_;
  bool chebyshev_;
  std::vector<Ciphertext> powers_;
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
  const Recursion recursion(eval, input, p.degree(), chebyshev);
  return recursion.run(p.coeffs, x.level() - p.depth(), scale);
}

}  // namespace pfhe::ckks
