// AVX-512 IFMA NTT kernels: 8 lanes of 52-bit Shoup multiplication (primes < 2^50).
// Functions carry target attributes instead of per-file flags, so no AVX-512 code can leak
// into inline functions shared with the portable build.
#include <immintrin.h>

// GCC 12 flags _mm512_undefined_epi32() inside the masked-min intrinsic; a false positive.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif

#include <array>

#include "ring/ntt.h"

#define PFHE_IFMA __attribute__((target("avx512f,avx512ifma")))

namespace pfhe::ring::detail {
namespace {

// y * w mod q in [0, 2q) for y < 2^52 (Shoup with 52-bit precision).
PFHE_IFMA inline __m512i mul_shoup52(__m512i y, __m512i w, __m512i w_shoup, __m512i q) {
  const __m512i zero = _mm512_setzero_si512();
  const __m512i mask52 = _mm512_set1_epi64((1LL << 52) - 1);
  const __m512i quot = _mm512_madd52hi_epu64(zero, y, w_shoup);
  const __m512i prod = _mm512_madd52lo_epu64(zero, y, w);
  const __m512i qq = _mm512_madd52lo_epu64(zero, quot, q);
  return _mm512_and_si512(_mm512_sub_epi64(prod, qq), mask52);
}

// x >= bound ? x - bound : x, for x < 2 * bound (unsigned min trick).
PFHE_IFMA inline __m512i reduce_once(__m512i x, __m512i bound) {
  return _mm512_min_epu64(x, _mm512_sub_epi64(x, bound));
}

// Lane permutations for stages whose butterfly pairs lie in one 16-element block.
// gather_x/gather_y pick the X/Y operands of 8 butterflies from (A, B); scatter_a/scatter_b
// put the results (X', Y') back into A and B.
struct SmallStagePerm {
  __m512i gather_x, gather_y, scatter_a, scatter_b;
};

PFHE_IFMA SmallStagePerm make_perm(int t) {
  alignas(64) std::array<long long, 8> gx{}, gy{}, sa{}, sb{};
  std::array<int, 16> source{};  // element -> index into (X' lanes 0..7, Y' lanes 8..15)
  for (int l = 0; l < 8; ++l) {
    const int xi = 2 * (l / t) * t + l % t;
    gx[l] = xi;
    gy[l] = xi + t;
    source[xi] = l;
    source[xi + t] = 8 + l;
  }
  for (int p = 0; p < 8; ++p) { sa[p] = source[p]; sb[p] = source[8 + p]; }
  return {_mm512_load_si512(gx.data()), _mm512_load_si512(gy.data()),
          _mm512_load_si512(sa.data()), _mm512_load_si512(sb.data())};
}

}  // namespace

PFHE_IFMA void ntt_forward_ifma(const NttTables& tab, u64* a) {
  const std::size_t n = tab.n();
  const __m512i q = _mm512_set1_epi64(static_cast<long long>(tab.modulus().value()));
  const __m512i two_q = _mm512_add_epi64(q, q);
  const u64* w = tab.root_powers().data();
  const u64* ws = tab.root_powers_shoup52().data();
  std::size_t m = 1, t = n / 2;
  for (; t >= 8; m <<= 1, t >>= 1) {
    for (std::size_t i = 0; i < m; ++i) {
      const __m512i wv = _mm512_set1_epi64(static_cast<long long>(w[m + i]));
      const __m512i wsv = _mm512_set1_epi64(static_cast<long long>(ws[m + i]));
      u64* x = a + 2 * i * t;
      u64* y = x + t;
      for (std::size_t j = 0; j < t; j += 8) {
        __m512i xv = _mm512_loadu_si512(x + j);
        const __m512i yv = _mm512_loadu_si512(y + j);
        xv = reduce_once(xv, two_q);
        const __m512i tv = mul_shoup52(yv, wv, wsv, q);
        _mm512_storeu_si512(x + j, _mm512_add_epi64(xv, tv));
        _mm512_storeu_si512(y + j, _mm512_sub_epi64(_mm512_add_epi64(xv, two_q), tv));
      }
    }
  }
  for (int s = 0; s < 3; ++s) {  // t = 4, 2, 1
    const SmallStagePerm perm = make_perm(4 >> s);
    const auto& stage = tab.forward_small_stage(s);
    for (std::size_t b = 0; b < n / 16; ++b) {
      u64* blk = a + 16 * b;
      const __m512i av = _mm512_loadu_si512(blk), bv = _mm512_loadu_si512(blk + 8);
      __m512i xv = _mm512_permutex2var_epi64(av, perm.gather_x, bv);
      const __m512i yv = _mm512_permutex2var_epi64(av, perm.gather_y, bv);
      const __m512i wv = _mm512_loadu_si512(stage.w.data() + 8 * b);
      const __m512i wsv = _mm512_loadu_si512(stage.w_shoup52.data() + 8 * b);
      xv = reduce_once(xv, two_q);
      const __m512i tv = mul_shoup52(yv, wv, wsv, q);
      const __m512i x_out = _mm512_add_epi64(xv, tv);
      __m512i y_out = _mm512_sub_epi64(_mm512_add_epi64(xv, two_q), tv);
      __m512i a_out = _mm512_permutex2var_epi64(x_out, perm.scatter_a, y_out);
      __m512i b_out = _mm512_permutex2var_epi64(x_out, perm.scatter_b, y_out);
      if (s == 2) {  // last stage: reduce [0, 4q) -> [0, q)
        a_out = reduce_once(reduce_once(a_out, two_q), q);
        b_out = reduce_once(reduce_once(b_out, two_q), q);
      }
      _mm512_storeu_si512(blk, a_out);
      _mm512_storeu_si512(blk + 8, b_out);
    }
  }
}

PFHE_IFMA void ntt_inverse_ifma(const NttTables& tab, u64* a) {
  const std::size_t n = tab.n();
  const __m512i q = _mm512_set1_epi64(static_cast<long long>(tab.modulus().value()));
  const __m512i two_q = _mm512_add_epi64(q, q);
  for (int s = 2; s >= 0; --s) {  // t = 1, 2, 4
    const SmallStagePerm perm = make_perm(4 >> s);
    const auto& stage = tab.inverse_small_stage(s);
    for (std::size_t b = 0; b < n / 16; ++b) {
      u64* blk = a + 16 * b;
      const __m512i av = _mm512_loadu_si512(blk), bv = _mm512_loadu_si512(blk + 8);
      const __m512i xv = _mm512_permutex2var_epi64(av, perm.gather_x, bv);
      const __m512i yv = _mm512_permutex2var_epi64(av, perm.gather_y, bv);
      const __m512i wv = _mm512_loadu_si512(stage.w.data() + 8 * b);
      const __m512i wsv = _mm512_loadu_si512(stage.w_shoup52.data() + 8 * b);
      const __m512i x_out = reduce_once(_mm512_add_epi64(xv, yv), two_q);
      const __m512i y_out = mul_shoup52(_mm512_sub_epi64(_mm512_add_epi64(xv, two_q), yv), wv, wsv, q);
      _mm512_storeu_si512(blk, _mm512_permutex2var_epi64(x_out, perm.scatter_a, y_out));
      _mm512_storeu_si512(blk + 8, _mm512_permutex2var_epi64(x_out, perm.scatter_b, y_out));
    }
  }
  const u64* w = tab.inv_root_powers().data();
  const u64* ws = tab.inv_root_powers_shoup52().data();
  for (std::size_t h = n / 16, t = 8; h >= 1; h >>= 1, t <<= 1) {
    for (std::size_t i = 0; i < h; ++i) {
      const __m512i wv = _mm512_set1_epi64(static_cast<long long>(w[h + i]));
      const __m512i wsv = _mm512_set1_epi64(static_cast<long long>(ws[h + i]));
      u64* x = a + 2 * i * t;
      u64* y = x + t;
      for (std::size_t j = 0; j < t; j += 8) {
        const __m512i xv = _mm512_loadu_si512(x + j), yv = _mm512_loadu_si512(y + j);
        _mm512_storeu_si512(x + j, reduce_once(_mm512_add_epi64(xv, yv), two_q));
        _mm512_storeu_si512(
            y + j, mul_shoup52(_mm512_sub_epi64(_mm512_add_epi64(xv, two_q), yv), wv, wsv, q));
      }
    }
  }
  const __m512i ni = _mm512_set1_epi64(static_cast<long long>(tab.n_inv()));
  const __m512i nis = _mm512_set1_epi64(static_cast<long long>(tab.n_inv_shoup52()));
  for (std::size_t j = 0; j < n; j += 8) {
    const __m512i v = _mm512_loadu_si512(a + j);
    _mm512_storeu_si512(a + j, reduce_once(mul_shoup52(v, ni, nis, q), q));
  }
}

}  // namespace pfhe::ring::detail
