// AVX2 NTT kernels: 4 lanes of 64-bit Shoup multiplication. AVX2 has no 64x64-bit
// multiply, so the high and low halves are assembled from 32x32-bit products; stages whose
// butterfly span is below 4 run the portable scalar butterflies.
#include <immintrin.h>

#include "ring/ntt.h"

#define PFHE_AVX2 __attribute__((target("avx2")))

namespace pfhe::ring::detail {
namespace {

PFHE_AVX2 inline __m256i mulhi64(__m256i a, __m256i b) {
  const __m256i lo32 = _mm256_set1_epi64x(0xffffffffLL);
  const __m256i a_hi = _mm256_srli_epi64(a, 32), b_hi = _mm256_srli_epi64(b, 32);
  const __m256i ll = _mm256_mul_epu32(a, b);
  const __m256i hl = _mm256_mul_epu32(a_hi, b);
  const __m256i lh = _mm256_mul_epu32(a, b_hi);
  const __m256i hh = _mm256_mul_epu32(a_hi, b_hi);
  const __m256i cross = _mm256_add_epi64(_mm256_add_epi64(_mm256_srli_epi64(ll, 32),
                                                          _mm256_and_si256(hl, lo32)),
                                         _mm256_and_si256(lh, lo32));
  return _mm256_add_epi64(_mm256_add_epi64(hh, _mm256_srli_epi64(hl, 32)),
                          _mm256_add_epi64(_mm256_srli_epi64(lh, 32), _mm256_srli_epi64(cross, 32)));
}

PFHE_AVX2 inline __m256i mullo64(__m256i a, __m256i b) {
  const __m256i ll = _mm256_mul_epu32(a, b);
  const __m256i cross = _mm256_add_epi64(_mm256_mul_epu32(_mm256_srli_epi64(a, 32), b),
                                         _mm256_mul_epu32(a, _mm256_srli_epi64(b, 32)));
  return _mm256_add_epi64(ll, _mm256_slli_epi64(cross, 32));
}

// x * w mod q in [0, 2q).
PFHE_AVX2 inline __m256i mul_shoup_lazy4(__m256i x, __m256i w, __m256i w_shoup, __m256i q) {
  const __m256i quot = mulhi64(x, w_shoup);
  return _mm256_sub_epi64(mullo64(x, w), mullo64(quot, q));
}

// x >= bound ? x - bound : x for x < 2^63 (signed compare is safe below 2^63).
PFHE_AVX2 inline __m256i reduce_once4(__m256i x, __m256i bound) {
  const __m256i ge = _mm256_cmpgt_epi64(bound, x);  // bound > x
  return _mm256_sub_epi64(x, _mm256_andnot_si256(ge, bound));
}

}  // namespace

PFHE_AVX2 void ntt_forward_avx2(const NttTables& tab, u64* a) {
  const std::size_t n = tab.n();
  const u64 qs = tab.modulus().value();
  const __m256i q = _mm256_set1_epi64x(static_cast<long long>(qs));
  const __m256i two_q = _mm256_add_epi64(q, q);
  const u64* w = tab.root_powers().data();
  const u64* ws = tab.root_powers_shoup().data();
  std::size_t m = 1, t = n / 2;
  for (; t >= 4; m <<= 1, t >>= 1) {
    for (std::size_t i = 0; i < m; ++i) {
      const __m256i wv = _mm256_set1_epi64x(static_cast<long long>(w[m + i]));
      const __m256i wsv = _mm256_set1_epi64x(static_cast<long long>(ws[m + i]));
      u64* x = a + 2 * i * t;
      u64* y = x + t;
      for (std::size_t j = 0; j < t; j += 4) {
        __m256i xv = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(x + j));
        const __m256i yv = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(y + j));
        xv = reduce_once4(xv, two_q);
        const __m256i tv = mul_shoup_lazy4(yv, wv, wsv, q);
        _mm256_storeu_si256(reinterpret_cast<__m256i*>(x + j), _mm256_add_epi64(xv, tv));
        _mm256_storeu_si256(reinterpret_cast<__m256i*>(y + j),
                            _mm256_sub_epi64(_mm256_add_epi64(xv, two_q), tv));
      }
    }
  }
  forward_stages_scalar(tab, a, 2, 1);
  for (std::size_t j = 0; j < n; j += 4) {
    __m256i v = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(a + j));
    v = reduce_once4(reduce_once4(v, two_q), q);
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(a + j), v);
  }
}

PFHE_AVX2 void ntt_inverse_avx2(const NttTables& tab, u64* a) {
  const std::size_t n = tab.n();
  const u64 qs = tab.modulus().value();
  const __m256i q = _mm256_set1_epi64x(static_cast<long long>(qs));
  const __m256i two_q = _mm256_add_epi64(q, q);
  const u64* w = tab.inv_root_powers().data();
  const u64* ws = tab.inv_root_powers_shoup().data();
  inverse_stages_scalar(tab, a, 1, 2);
  std::size_t h = n / 8, t = 4;
  for (; h >= 1; h >>= 1, t <<= 1) {
    for (std::size_t i = 0; i < h; ++i) {
      const __m256i wv = _mm256_set1_epi64x(static_cast<long long>(w[h + i]));
      const __m256i wsv = _mm256_set1_epi64x(static_cast<long long>(ws[h + i]));
      u64* x = a + 2 * i * t;
      u64* y = x + t;
      for (std::size_t j = 0; j < t; j += 4) {
        const __m256i xv = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(x + j));
        const __m256i yv = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(y + j));
        _mm256_storeu_si256(reinterpret_cast<__m256i*>(x + j),
                            reduce_once4(_mm256_add_epi64(xv, yv), two_q));
        _mm256_storeu_si256(
            reinterpret_cast<__m256i*>(y + j),
            mul_shoup_lazy4(_mm256_sub_epi64(_mm256_add_epi64(xv, two_q), yv), wv, wsv, q));
      }
    }
  }
  const __m256i ni = _mm256_set1_epi64x(static_cast<long long>(tab.n_inv()));
  const __m256i nis = _mm256_set1_epi64x(static_cast<long long>(tab.n_inv_shoup()));
  for (std::size_t j = 0; j < n; j += 4) {
    const __m256i v = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(a + j));
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(a + j),
                        reduce_once4(mul_shoup_lazy4(v, ni, nis, q), q));
  }
}

}  // namespace pfhe::ring::detail
