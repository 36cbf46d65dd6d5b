// 64-bit AVX-512 lane arithmetic for primes from 2^50 up to 2^61 (above the IFMA lanes'
// 52 bits): the low half of a 64x64-bit product is native (AVX-512DQ), the high half is
// assembled from four 32x32-bit products. Included only by the AVX-512 translation units;
// every function carries its target attribute, so nothing here reaches the portable build.
#pragma once
#include <immintrin.h>

#define PFHE_AVX512_WIDE __attribute__((target("avx512f,avx512dq")))

namespace pfhe::ring::wide {

PFHE_AVX512_WIDE inline __m512i mulhi64(__m512i a, __m512i b) {
  const __m512i lo32 = _mm512_set1_epi64(0xffffffffLL);
  const __m512i a_hi = _mm512_srli_epi64(a, 32), b_hi = _mm512_srli_epi64(b, 32);
  const __m512i ll = _mm512_mul_epu32(a, b), hl = _mm512_mul_epu32(a_hi, b);
  const __m512i lh = _mm512_mul_epu32(a, b_hi), hh = _mm512_mul_epu32(a_hi, b_hi);
  const __m512i cross = _mm512_add_epi64(_mm512_add_epi64(_mm512_srli_epi64(ll, 32), _mm512_and_si512(hl, lo32)),
                                         _mm512_and_si512(lh, lo32));
  return _mm512_add_epi64(_mm512_add_epi64(hh, _mm512_srli_epi64(hl, 32)),
                          _mm512_add_epi64(_mm512_srli_epi64(lh, 32), _mm512_srli_epi64(cross, 32)));
}

// x * w mod q in [0, 2q) for any 64-bit x and a fixed w < q, w_shoup = floor(w 2^64 / q).
PFHE_AVX512_WIDE inline __m512i mul_shoup_lazy(__m512i x, __m512i w, __m512i w_shoup, __m512i q) {
  return _mm512_sub_epi64(_mm512_mullo_epi64(x, w), _mm512_mullo_epi64(mulhi64(x, w_shoup), q));
}

// x >= bound ? x - bound : x, for x < 2 * bound (unsigned min: x - bound wraps otherwise).
PFHE_AVX512_WIDE inline __m512i reduce_once(__m512i x, __m512i bound) {
  return _mm512_min_epu64(x, _mm512_sub_epi64(x, bound));
}

}  // namespace pfhe::ring::wide
