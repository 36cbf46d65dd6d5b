#include "ckks/encoder.h"

#include <omp.h>

#include <algorithm>
#include <bit>
#include <cmath>
#include <numbers>
#include <stdexcept>
#include <string>

#include "ring/kernels.h"
#include "ring/modarith.h"

namespace pfhe::ckks {

using ring::u64;

namespace {

void bit_reverse_permute(std::vector<std::complex<double>>& v) {
  const std::size_t n = v.size();
  for (std::size_t i = 1, j = 0; i < n; ++i) {
    std::size_t bit = n >> 1;
    for (; j & bit; bit >>= 1) j ^= bit;
    j ^= bit;
    if (i < j) std::swap(v[i], v[j]);
  }
}

int log2_exact(std::size_t n) { return __builtin_ctzll(n); }

}  // namespace

Encoder::Encoder(const Context& context) : context_(context) {
  const std::size_t n = context.n(), m = 2 * n;
  std::vector<std::complex<double>> roots(m);  // exp(2 pi i k / 2N), k < 2N
  for (std::size_t k = 0; k < m; ++k) {
    const long double angle = 2.0L * std::numbers::pi_v<long double> * k / m;
    roots[k] = {static_cast<double>(std::cos(angle)), static_cast<double>(std::sin(angle))};
  }
  // Butterfly j of a stage of length len uses the root of index 5^j mod 4 len (times
  // 2N / 4 len), and its inverse the root of the negated index.
  twiddles_.resize(n / 2);
  inverse_twiddles_.resize(n / 2);
  for (std::size_t half = 1; half < n / 2; half <<= 1) {
    const std::size_t quarter_order = 8 * half, stride = m / quarter_order;
    std::size_t g = 1;  // 5^j mod 2N
    for (std::size_t j = 0; j < half; ++j, g = g * 5 % m) {
      twiddles_[half - 1 + j] = roots[(g % quarter_order) * stride];
      inverse_twiddles_[half - 1 + j] = roots[(quarter_order - g % quarter_order) * stride];
    }
  }
}

namespace {
// (a + bi)(c + di) without std::complex's NaN recovery branch, which keeps the butterfly
// loops from vectorising; the same products and sums, so the same results for finite input.
inline std::complex<double> times(std::complex<double> x, std::complex<double> y) {
  return {x.real() * y.real() - x.imag() * y.imag(), x.real() * y.imag() + x.imag() * y.real()};
}
}  // namespace

void Encoder::fft_special(std::vector<std::complex<double>>& v) const {
  const std::size_t size = v.size();
  bit_reverse_permute(v);
  for (std::size_t half = 1; half < size; half <<= 1) {
    const std::complex<double>* w = twiddles_.data() + half - 1;
    for (std::size_t i = 0; i < size; i += 2 * half)
      for (std::size_t j = 0; j < half; ++j) {
        const std::complex<double> u = v[i + j], t = times(v[i + j + half], w[j]);
        v[i + j] = u + t;
        v[i + j + half] = u - t;
      }
  }
}

std::span<const std::complex<double>> Encoder::fft_stage_roots(std::size_t half, bool inverse) const {
  if (half == 0 || (half & (half - 1)) != 0 || half >= context_.n() / 2)
    throw std::invalid_argument("fft_stage_roots: stage " + std::to_string(half) + " does not exist");
  return {(inverse ? inverse_twiddles_ : twiddles_).data() + half - 1, half};
}

void Encoder::fft_special_inverse(std::vector<std::complex<double>>& v) const {
  const std::size_t size = v.size();
  for (std::size_t half = size / 2; half >= 1; half >>= 1) {
    const std::complex<double>* w = inverse_twiddles_.data() + half - 1;
    for (std::size_t i = 0; i < size; i += 2 * half)
      for (std::size_t j = 0; j < half; ++j) {
        const std::complex<double> u = v[i + j] + v[i + j + half];
        const std::complex<double> t = times(v[i + j] - v[i + j + half], w[j]);
        v[i + j] = u;
        v[i + j + half] = t;
      }
  }
  bit_reverse_permute(v);
  const double inv = 1.0 / static_cast<double>(size);
  for (auto& x : v) x *= inv;
}

std::vector<std::complex<double>> Encoder::slots_to_coefficients(std::span<const std::complex<double>> values,
                                                                 double scale) const {
  const std::size_t n = context_.n();
  if (values.empty()) throw std::invalid_argument("encode: no values");
  if (values.size() > n / 2)
    throw std::invalid_argument("encode: " + std::to_string(values.size()) + " values exceed N/2 = " +
                                std::to_string(n / 2) + " slots");
  if (!(scale > 0) || !std::isfinite(scale)) throw std::invalid_argument("encode: scale must be positive");
  std::vector<std::complex<double>> v(std::bit_ceil(values.size()));
  std::copy(values.begin(), values.end(), v.begin());
  for (const auto& x : v)
    if (!std::isfinite(x.real()) || !std::isfinite(x.imag()))
      throw std::invalid_argument("encode: value is not finite");
  fft_special_inverse(v);
  return v;
}

namespace {
// Scaled, rounded coefficients of an already transformed slot vector.
Encoder::RoundedCoefficients round_transformed(const std::vector<std::complex<double>>& v, double scale) {
  const std::size_t slots = v.size();
  std::vector<std::int64_t> values(2 * slots);
  constexpr double kLimit = 4.611686018427387904e18;  // 2^62
  for (std::size_t i = 0; i < slots; ++i) {
    const double re = std::nearbyint(v[i].real() * scale), im = std::nearbyint(v[i].imag() * scale);
    if (!(std::fabs(re) < kLimit) || !(std::fabs(im) < kLimit))
      throw std::invalid_argument("encode: scaled value reaches 2^62 (lower the scale or the values)");
    values[i] = static_cast<std::int64_t>(re);
    values[i + slots] = static_cast<std::int64_t>(im);
  }
  return Encoder::RoundedCoefficients::owning(std::move(values), scale, __builtin_ctzll(slots));
}
}  // namespace

Encoder::RoundedCoefficients Encoder::round_coefficients(std::span<const std::complex<double>> values,
                                                         double scale) const {
  return round_transformed(slots_to_coefficients(values, scale), scale);
}

int Encoder::RoundedCoefficients::width_of_largest(std::span<const std::int64_t> values) {
  std::uint64_t largest = 0;
  for (const std::int64_t v : values)
    largest = std::max(largest, v < 0 ? std::uint64_t{0} - static_cast<std::uint64_t>(v) : static_cast<std::uint64_t>(v));
  return 64 - __builtin_clzll(largest | 1);
}

int Encoder::coefficient_bits(const RoundedCoefficients& c, std::size_t level) const {
  const std::size_t n = context_.n(), slots = c.values.size() / 2;
  if (level > context_.max_level())
    throw std::invalid_argument("encode: level " + std::to_string(level) + " above the top level " +
                                std::to_string(context_.max_level()));
  if (slots == 0 || (slots & (slots - 1)) != 0 || slots > n / 2)
    throw std::invalid_argument("encode: invalid coefficient count");
  // The largest magnitude decides the reduction path (IFMA needs <= 52 bits) and is checked
  // against Q_level; then each limb is one vectorised signed reduction.
  const int bits = c.magnitude_bits >= 0 ? c.magnitude_bits : RoundedCoefficients::width_of_largest(c.values);
  if (bits + 2 > static_cast<int>(context_.log2_q_at(level)))
    throw std::invalid_argument("encode: scaled value overflows Q at level " + std::to_string(level) +
                                " (lower the scale or the values)");
  return bits;
}

void Encoder::to_limb(const RoundedCoefficients& c, int bits, std::size_t l, ring::u64* out) const {
  const std::size_t n = context_.n(), count = c.values.size(), gap = n / count;
  const ring::SimdPath path = ring::default_simd_path();
  const ring::NttTables& ntt = context_.ring_q().ntt(l);
  if (gap == 1) return ntt.forward_from_signed(c.values.data(), bits, out, path);
  ring::kernels::reduce_signed(c.values.data(), bits, out, count, context_.ring_q().modulus(l), path);
  // Sparse packing: the coefficients sit at multiples of the gap, zeros between them;
  // spread backwards in place (position i * gap >= i is never a residue still to move).
  for (std::size_t i = count; i-- > 0;) {
    const u64 residue = out[i];
    std::fill(out + i * gap + 1, out + (i + 1) * gap, u64{0});
    out[i * gap] = residue;
  }
  ntt.forward(out, path);
}

Plaintext Encoder::to_plaintext(const RoundedCoefficients& c, std::size_t level) const {
  const int bits = coefficient_bits(c, level);
  Plaintext pt{context_.ring_q().make_output(level + 1), c.scale, c.log_slots};
#pragma omp parallel for if (level > 0 && !omp_in_parallel())
  for (std::size_t l = 0; l <= level; ++l) to_limb(c, bits, l, pt.poly.limb(l));
  return pt;
}

Plaintext Encoder::encode(std::span<const std::complex<double>> values, std::size_t level,
                          double scale) const {
  if (level > context_.max_level())
    throw std::invalid_argument("encode: level " + std::to_string(level) + " above the top level " +
                                std::to_string(context_.max_level()));
  const auto v = slots_to_coefficients(values, scale);
  const std::size_t slots = v.size();
  double largest = 0;
  for (const auto& x : v) largest = std::max({largest, std::fabs(x.real() * scale), std::fabs(x.imag() * scale)});
  // to_plaintext checks the bound against Q_level for the integer path.
  if (largest < 4.0e18) return to_plaintext(round_transformed(v, scale), level);
  if (largest >= std::ldexp(1.0, static_cast<int>(context_.log2_q_at(level)) - 2))
    throw std::invalid_argument("encode: scaled value overflows Q at level " + std::to_string(level) +
                                " (lower the scale or the values)");
  // Coefficients beyond 64-bit integers (scales above ~2^62): exact residues per prime.
  const std::size_t gap = context_.n() / (2 * slots);
  Plaintext pt{context_.ring_q().make_poly(level + 1, false), scale, log2_exact(slots)};
  for (std::size_t i = 0; i < slots; ++i)
    for (std::size_t l = 0; l <= level; ++l) {
      const auto& mod = context_.ring_q().modulus(l);
      pt.poly.limb(l)[i * gap] = ring::residue_of_rounded(v[i].real() * scale, mod);
      pt.poly.limb(l)[(i + slots) * gap] = ring::residue_of_rounded(v[i].imag() * scale, mod);
    }
  context_.ring_q().to_ntt(pt.poly);
  return pt;
}

Plaintext Encoder::encode(std::span<const double> values, std::size_t level, double scale) const {
  std::vector<std::complex<double>> c(values.begin(), values.end());
  return encode(c, level, scale);
}

namespace {

// Centred CRT reconstruction of coefficient j of a level-l polynomial, as a long double.
class CrtComposer {
 public:
  CrtComposer(const ring::Ring& ring, std::size_t limbs) : ring_(ring), limbs_(limbs) {
    // Q as multiword, Q/q_i as multiword, (Q/q_i)^{-1} mod q_i.
    big_q_ = {1};
    for (std::size_t i = 0; i < limbs; ++i) big_q_ = mul_word(big_q_, ring.modulus(i).value());
    for (std::size_t i = 0; i < limbs; ++i) {
      std::vector<u64> hat = {1};
      u64 hat_mod = 1;
      for (std::size_t k = 0; k < limbs; ++k)
        if (k != i) {
          hat = mul_word(hat, ring.modulus(k).value());
          hat_mod = ring::mul_mod(hat_mod, ring::reduce64(ring.modulus(k).value(), ring.modulus(i)),
                                  ring.modulus(i));
        }
      hat.resize(limbs + 1, 0);
      hats_.push_back(hat);
      hat_inv_.push_back(ring::inv_mod(hat_mod, ring.modulus(i)));
    }
    big_q_.resize(limbs + 1, 0);
  }

  long double compose(const ring::Poly& p, std::size_t j) const {
    std::vector<u64> acc(limbs_ + 1, 0);
    for (std::size_t i = 0; i < limbs_; ++i) {
      const u64 y = ring::mul_mod(p.limb(i)[j], hat_inv_[i], ring_.modulus(i));
      ring::u128 carry = 0;
      for (std::size_t w = 0; w <= limbs_; ++w) {
        const ring::u128 t = static_cast<ring::u128>(hats_[i][w]) * y + acc[w] + carry;
        acc[w] = static_cast<u64>(t);
        carry = t >> 64;
      }
    }
    while (!less(acc, big_q_)) subtract(acc, big_q_);  // sum < limbs * Q
    std::vector<u64> half_q = big_q_;
    shift_right_one(half_q);
    bool negative = !less(acc, half_q) && !equal(acc, half_q);
    if (negative) {
      std::vector<u64> diff = big_q_;
      subtract(diff, acc);
      acc = diff;
    }
    long double v = 0;
    for (std::size_t w = acc.size(); w-- > 0;) v = v * 18446744073709551616.0L + acc[w];
    return negative ? -v : v;
  }

 private:
  static std::vector<u64> mul_word(const std::vector<u64>& a, u64 b) {
    std::vector<u64> out(a.size() + 1, 0);
    ring::u128 carry = 0;
    for (std::size_t w = 0; w < a.size(); ++w) {
      const ring::u128 t = static_cast<ring::u128>(a[w]) * b + carry;
      out[w] = static_cast<u64>(t);
      carry = t >> 64;
    }
    out[a.size()] = static_cast<u64>(carry);
    while (out.size() > 1 && out.back() == 0) out.pop_back();
    return out;
  }
  static bool less(const std::vector<u64>& a, const std::vector<u64>& b) {
    for (std::size_t w = a.size(); w-- > 0;)
      if (a[w] != b[w]) return a[w] < b[w];
    return false;
  }
  static bool equal(const std::vector<u64>& a, const std::vector<u64>& b) { return a == b; }
  static void subtract(std::vector<u64>& a, const std::vector<u64>& b) {
    u64 borrow = 0;
    for (std::size_t w = 0; w < a.size(); ++w) {
      const ring::u128 t = static_cast<ring::u128>(a[w]) - b[w] - borrow;
      a[w] = static_cast<u64>(t);
      borrow = (t >> 64) ? 1 : 0;
    }
  }
  static void shift_right_one(std::vector<u64>& a) {
    for (std::size_t w = 0; w < a.size(); ++w)
      a[w] = (a[w] >> 1) | (w + 1 < a.size() ? a[w + 1] << 63 : 0);
  }

  const ring::Ring& ring_;
  std::size_t limbs_;
  std::vector<u64> big_q_;
  std::vector<std::vector<u64>> hats_;
  std::vector<u64> hat_inv_;
};

}  // namespace

std::vector<std::complex<double>> Encoder::decode(const Plaintext& pt) const {
  const std::size_t n = context_.n();
  if (pt.poly.n() != n || pt.poly.limbs() == 0 || pt.level() > context_.max_level())
    throw std::invalid_argument("decode: plaintext does not belong to this context");
  if (pt.log_slots < 0 || (std::size_t{1} << pt.log_slots) > n / 2)
    throw std::invalid_argument("decode: invalid slot count");
  ring::Poly coeffs = pt.poly;
  if (coeffs.ntt_form()) context_.ring_q().from_ntt(coeffs);
  const std::size_t slots = pt.slots(), gap = n / (2 * slots);
  const CrtComposer crt(context_.ring_q(), coeffs.limbs());
  std::vector<std::complex<double>> v(slots);
  const long double inv_scale = 1.0L / pt.scale;
  for (std::size_t i = 0; i < slots; ++i)
    v[i] = {static_cast<double>(crt.compose(coeffs, i * gap) * inv_scale),
            static_cast<double>(crt.compose(coeffs, (i + slots) * gap) * inv_scale)};
  fft_special(v);
  return v;
}

std::vector<double> Encoder::decode_real(const Plaintext& pt) const {
  const auto c = decode(pt);
  std::vector<double> r(c.size());
  for (std::size_t i = 0; i < c.size(); ++i) r[i] = c[i].real();
  return r;
}

}  // namespace pfhe::ckks
