#include "ring/modarith.h"

#include <cmath>
#include <stdexcept>
#include <string>

namespace pfhe::ring {

Modulus::Modulus(u64 q) : q_(q) {
  if (q < 2) throw std::invalid_argument("modulus must be at least 2");
  bits_ = 64 - __builtin_clzll(q);
  if (bits_ > kMaxModulusBits)
    throw std::invalid_argument("modulus has " + std::to_string(bits_) +
                                " bits; at most " + std::to_string(kMaxModulusBits) + " are supported");
  // floor(2^128 / q) equals floor((2^128 - 1) / q) unless q is a power of two.
  const u128 all_ones = ~static_cast<u128>(0);
  const u128 ratio = all_ones / q + (((q & (q - 1)) == 0) ? 1 : 0);
  ratio_hi_ = static_cast<u64>(ratio >> 64);
  ratio_lo_ = static_cast<u64>(ratio);
  if (ifma_eligible()) {
    barrett52_ = static_cast<u64>((static_cast<u128>(1) << (2 * bits_)) / q);
    one_shoup52_ = (u64{1} << 52) / q;
  }
}

u64 pow_mod(u64 base, u64 exp, const Modulus& m) {
  u64 result = 1 % m.value();
  base = reduce64(base, m);
  while (exp) {
    if (exp & 1) result = mul_mod(result, base, m);
    base = mul_mod(base, base, m);
    exp >>= 1;
  }
  return result;
}

u64 inv_mod(u64 a, const Modulus& m) {
  a = reduce64(a, m);
  if (a == 0) throw std::invalid_argument("zero has no inverse modulo " + std::to_string(m.value()));
  return pow_mod(a, m.value() - 2, m);  // Fermat: every Modulus used for inverses is prime
}

u64 residue_of_rounded(double x, const Modulus& m) {
  if (!std::isfinite(x)) throw std::invalid_argument("cannot reduce a non-finite value");
  const double r = std::nearbyint(x);
  if (std::fabs(r) < 9.2e18) return from_signed(static_cast<std::int64_t>(r), m.value());
  int e = 0;
  const double frac = std::frexp(r, &e);                              // r = frac * 2^e, e > 62
  const auto mant = static_cast<std::int64_t>(std::ldexp(frac, 62));  // exact: 53 significant bits
  return mul_mod(from_signed(mant, m.value()), pow_mod(2, static_cast<u64>(e - 62), m), m);
}

}  // namespace pfhe::ring
