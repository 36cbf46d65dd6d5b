// Modular arithmetic on AVX2 double lanes, for primes q < 2^50 (Modulus::ifma_eligible),
// and the one conditional subtraction the 64-bit integer lanes share.
// AVX2 has no 64x64-bit integer multiply: an integer Shoup product takes ten 32x32-bit
// multiplies per four lanes. Its two FMA pipes do exact integer arithmetic on doubles
// instead: a double holds every integer below 2^53, and fma(x, w, -fl(x w)) is the exact
// rounding error of a product, so x w = hi + lo exactly (the error-free product). Values
// stay integers in doubles below 2^53 in magnitude (each kernel states its bounds).
// Included only by files compiled for AVX2 (callers' functions carry target("avx2,fma")).
#pragma once
#include <immintrin.h>

#include <cstdint>

#define PFHE_AVX2_FMA __attribute__((target("avx2,fma")))

namespace pfhe::ring::avx2_double {

// 2^52 as a double and as its bit pattern: for an integer 0 <= v < 2^52, the double
// 2^52 + v has the bits of 2^52 OR v, so the conversions are one integer and one
// floating-point operation (AVX2 has no 64-bit integer <-> double conversion).
inline constexpr double kTwo52 = 4503599627370496.0;
inline constexpr long long kTwo52Bits = 0x4330000000000000LL;

PFHE_AVX2_FMA inline __m256d from_u64(__m256i v) {
  return _mm256_sub_pd(_mm256_castsi256_pd(_mm256_or_si256(v, _mm256_set1_epi64x(kTwo52Bits))),
                       _mm256_set1_pd(kTwo52));
}

PFHE_AVX2_FMA inline __m256i to_u64(__m256d d) {
  return _mm256_xor_si256(_mm256_castpd_si256(_mm256_add_pd(d, _mm256_set1_pd(kTwo52))),
                          _mm256_set1_epi64x(kTwo52Bits));
}

// Four words below 2^52 as doubles, and four such doubles back as words.
PFHE_AVX2_FMA inline __m256d load_integers(const std::uint64_t* p) {
  return from_u64(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)));
}
PFHE_AVX2_FMA inline void store_integers(std::uint64_t* p, __m256d v) {
  _mm256_storeu_si256(reinterpret_cast<__m256i*>(p), to_u64(v));
}

// Four signed words with |v| < 2^52 as doubles: the magnitude converted, the sign put back.
PFHE_AVX2_FMA inline __m256d load_signed(const std::int64_t* p) {
  const __m256i v = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p));
  const __m256i negative = _mm256_cmpgt_epi64(_mm256_setzero_si256(), v);  // all ones where v < 0
  const __m256i magnitude = _mm256_sub_epi64(_mm256_xor_si256(v, negative), negative);
  return _mm256_xor_pd(from_u64(magnitude), _mm256_and_pd(_mm256_castsi256_pd(negative), _mm256_set1_pd(-0.0)));
}

// The nearest integer (the quotient estimates).
PFHE_AVX2_FMA inline __m256d nearest(__m256d v) {
  return _mm256_round_pd(v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
}

// x w - k q for hi = fl(x w), exact when the true value r = x w - k q is an integer with
// |r| < 2^51 and x w < 2^102: hi - k q = r - lo with lo = fma(x, w, -hi), |lo| <= 2^48, is an
// integer below 2^53 in magnitude, so the fused multiply-add computes it exactly, and adding
// lo back is exact.
PFHE_AVX2_FMA inline __m256d exact_remainder(__m256d x, __m256d w, __m256d hi, __m256d k, __m256d q) {
  return _mm256_add_pd(_mm256_fnmadd_pd(k, q, hi), _mm256_fmsub_pd(x, w, hi));
}

// x >= bound ? x - bound : x.
PFHE_AVX2_FMA inline __m256d reduce_once(__m256d x, __m256d bound) {
  return _mm256_sub_pd(x, _mm256_and_pd(_mm256_cmp_pd(x, bound, _CMP_GE_OQ), bound));
}

// The same on 64-bit integer lanes (the NTT of larger primes, the additive kernels), for
// 0 <= x < 2^63: AVX2 compares signed words only.
PFHE_AVX2_FMA inline __m256i reduce_once(__m256i x, __m256i bound) {
  return _mm256_sub_epi64(x, _mm256_andnot_si256(_mm256_cmpgt_epi64(bound, x), bound));
}

// s - nearest(s / q) q for an integer |s| < 2^52: within (-q, q), mostly [-q/2, q/2] (q is
// odd, so s / q is never a half; the rounding of s q_inv can only pick the other neighbour
// of a value next to a half).
PFHE_AVX2_FMA inline __m256d centre(__m256d s, __m256d q, __m256d q_inv) {
  return _mm256_fnmadd_pd(nearest(_mm256_mul_pd(s, q_inv)), q, s);
}

// x in (-q, q) to [0, q).
PFHE_AVX2_FMA inline __m256d make_non_negative(__m256d x, __m256d q) {
  return _mm256_add_pd(x, _mm256_and_pd(_mm256_cmp_pd(x, _mm256_setzero_pd(), _CMP_LT_OQ), q));
}

}  // namespace pfhe::ring::avx2_double
