// Word-size modular arithmetic for primes below 2^62 (ring layer; no dependencies).
// Two reductions are provided: Barrett (any 128-bit value, used when both operands vary)
// and Shoup (one operand fixed and precomputed, used for twiddles and constants).
#pragma once
#include <cstdint>

namespace pfhe::ring {

using u64 = std::uint64_t;
__extension__ typedef unsigned __int128 u128;  // GCC/Clang extension, silences -Wpedantic

inline constexpr int kMaxModulusBits = 61;  // keeps 4q < 2^64 for lazy butterflies
inline constexpr int kIfmaMaxBits = 50;     // lazy values < 4q fit the 52-bit IFMA lanes

// A prime modulus with its Barrett constant floor(2^128 / q).
class Modulus {
 public:
  Modulus() = default;
  explicit Modulus(u64 q);

  u64 value() const { return q_; }
  int bits() const { return bits_; }
  u64 ratio_hi() const { return ratio_hi_; }
  u64 ratio_lo() const { return ratio_lo_; }
  // For the 52-bit (AVX-512 IFMA) kernels, primes below 2^50 only: floor(2^(2b) / q) with
  // b = bits(), and floor(2^52 / q) (Shoup constant of 1, used to reduce values < 2^52).
  bool ifma_eligible() const { return bits_ <= kIfmaMaxBits; }
  u64 barrett52() const { return barrett52_; }
  u64 one_shoup52() const { return one_shoup52_; }

 private:
  u64 q_ = 0;
  u64 ratio_hi_ = 0, ratio_lo_ = 0;
  u64 barrett52_ = 0, one_shoup52_ = 0;
  int bits_ = 0;
};

// Reduces any 128-bit value modulo q (Barrett; the quotient estimate is off by at most 2).
inline u64 reduce128(u128 z, const Modulus& m) {
  const u64 lo = static_cast<u64>(z), hi = static_cast<u64>(z >> 64);
  const u64 rlo = m.ratio_lo(), rhi = m.ratio_hi();
  // quotient ~= floor(z * ratio / 2^128), dropping the lowest partial product's low half.
  const u128 lo_lo_hi = (static_cast<u128>(lo) * rlo) >> 64;
  const u128 mid1 = static_cast<u128>(lo) * rhi;
  const u128 mid2 = static_cast<u128>(hi) * rlo;
  const u128 mid = (mid1 & ~u64{0}) + (mid2 & ~u64{0}) + lo_lo_hi;
  const u64 quotient = static_cast<u64>(hi) * rhi + static_cast<u64>(mid1 >> 64) +
                       static_cast<u64>(mid2 >> 64) + static_cast<u64>(mid >> 64);
  u64 r = lo - quotient * m.value();
  if (r >= m.value()) r -= m.value();
  if (r >= m.value()) r -= m.value();
  return r;
}

inline u64 reduce64(u64 x, const Modulus& m) { return reduce128(x, m); }

inline u64 mul_mod(u64 a, u64 b, const Modulus& m) {
  return reduce128(static_cast<u128>(a) * b, m);
}

inline u64 add_mod(u64 a, u64 b, u64 q) {
  const u64 s = a + b;
  return s >= q ? s - q : s;
}

inline u64 sub_mod(u64 a, u64 b, u64 q) { return a >= b ? a - b : a + q - b; }

inline u64 neg_mod(u64 a, u64 q) { return a == 0 ? 0 : q - a; }

// x mod q in [0, q) for any signed 64-bit x (the magnitude is taken in unsigned arithmetic,
// so INT64_MIN is fine).
inline u64 reduce_signed64(std::int64_t x, const Modulus& m) {
  const u64 magnitude = x < 0 ? u64{0} - static_cast<u64>(x) : static_cast<u64>(x);
  const u64 r = reduce64(magnitude, m);
  return x < 0 ? neg_mod(r, m.value()) : r;
}

// Shoup: w_shoup = floor(w * 2^64 / q) for a fixed w < q.
inline u64 shoup(u64 w, u64 q) { return static_cast<u64>((static_cast<u128>(w) << 64) / q); }
// The same without a 128-bit division (building a ring's NTT tables took N x 6 of them per
// prime, most of the time CryptoFaceNet4's server took to start): the modulus's
// floor(2^128 / q) gives an estimate at most 2 below, which the remainder corrects.
inline u64 shoup(u64 w, const Modulus& m) {
  const u64 q = m.value();
  u64 estimate = w * m.ratio_hi() + static_cast<u64>((static_cast<u128>(w) * m.ratio_lo()) >> 64);
  u64 remainder = u64{0} - estimate * q;  // w * 2^64 - estimate * q, exact: it is below 3q < 2^64
  while (remainder >= q) {
    remainder -= q;
    ++estimate;
  }
  return estimate;
}

// x * w mod q in [0, 2q) for any 64-bit x.
inline u64 mul_shoup_lazy(u64 x, u64 w, u64 w_shoup, u64 q) {
  const u64 hi = static_cast<u64>((static_cast<u128>(x) * w_shoup) >> 64);
  return x * w - hi * q;
}

inline u64 mul_shoup(u64 x, u64 w, u64 w_shoup, u64 q) {
  const u64 r = mul_shoup_lazy(x, w, w_shoup, q);
  return r >= q ? r - q : r;
}

u64 pow_mod(u64 base, u64 exp, const Modulus& m);
// Inverse modulo a prime; throws std::invalid_argument when a == 0 mod q.
u64 inv_mod(u64 a, const Modulus& m);

// Centred lift of x in [0, q) to (-q/2, q/2].
inline std::int64_t centered(u64 x, u64 q) {
  return x > q / 2 ? static_cast<std::int64_t>(x) - static_cast<std::int64_t>(q)
                   : static_cast<std::int64_t>(x);
}

// Signed value reduced into [0, q).
inline u64 from_signed(std::int64_t v, u64 q) {
  if (v >= 0) return static_cast<u64>(v) % q;
  const u64 r = static_cast<u64>(-(v + 1)) % q;  // avoids overflow at INT64_MIN
  return q - 1 - r;
}

// round(x) modulo q for any finite x, exactly (x = m * 2^e with a 53-bit integer m).
u64 residue_of_rounded(double x, const Modulus& m);

}  // namespace pfhe::ring
