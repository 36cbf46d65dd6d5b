// AVX-512 element-wise kernels for primes from 2^50 to 2^61 (8 lanes of 64-bit products,
// ring/avx512_wide.h): the kernels' path for the primes the IFMA lanes cannot hold, such as
// bootstrapping's 60-bit EvalMod primes (they ran the scalar loops before).
#include <immintrin.h>

#include "ring/avx512_wide.h"
#include "ring/kernels.h"

// GCC 12 flags _mm512_undefined_epi32() inside the masked-min intrinsic; a false positive.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif

namespace pfhe::ring::kernels::detail {
namespace {

using wide::mul_shoup_lazy;
using wide::mulhi64;
using wide::reduce_once;

PFHE_AVX512_WIDE inline __m512i broadcast(u64 v) { return _mm512_set1_epi64(static_cast<long long>(v)); }

// Barrett reduction of products a * b (a, b < q) for a prime of b = bits() bits, with
// mu = floor(2^(2b) / q): the quotient estimate floor(floor(z / 2^(b-1)) mu / 2^(b+1)) is at
// most 2 below the true one.
struct Barrett {
  __m512i q, two_q, mu;
  unsigned bits;
  PFHE_AVX512_WIDE explicit Barrett(const Modulus& m)
      : q(broadcast(m.value())),
        two_q(broadcast(2 * m.value())),
        mu(broadcast(static_cast<u64>((u128{1} << (2 * m.bits())) / m.value()))),
        bits(static_cast<unsigned>(m.bits())) {}

  PFHE_AVX512_WIDE __m512i operator()(__m512i a, __m512i b) const {
    const __m512i lo = _mm512_mullo_epi64(a, b), hi = mulhi64(a, b);
    const __m512i z_shifted = _mm512_or_si512(_mm512_slli_epi64(hi, 65 - bits), _mm512_srli_epi64(lo, bits - 1));
    const __m512i quot = _mm512_or_si512(_mm512_slli_epi64(mulhi64(z_shifted, mu), 63 - bits),
                                         _mm512_srli_epi64(_mm512_mullo_epi64(z_shifted, mu), bits + 1));
    const __m512i r = _mm512_sub_epi64(lo, _mm512_mullo_epi64(quot, q));  // in [0, 3q)
    return reduce_once(reduce_once(r, two_q), q);
  }
};

}  // namespace

// As in kernels_ifma.cpp, the vector loops run over n rounded down to 8 lanes and a scalar
// tail keeps odd sizes correct.
PFHE_AVX512_WIDE void multiply_wide(const u64* a, const u64* b, u64* out, std::size_t n, const Modulus& m) {
  const Barrett barrett(m);
  std::size_t j = 0;
  for (; j + 8 <= n; j += 8)
    _mm512_storeu_si512(out + j, barrett(_mm512_loadu_si512(a + j), _mm512_loadu_si512(b + j)));
  for (; j < n; ++j) out[j] = mul_mod(a[j], b[j], m);
}

PFHE_AVX512_WIDE void multiply_add_wide(const u64* a, const u64* b, u64* acc, std::size_t n, const Modulus& m) {
  const Barrett barrett(m);
  std::size_t j = 0;
  for (; j + 8 <= n; j += 8) {
    const __m512i p = barrett(_mm512_loadu_si512(a + j), _mm512_loadu_si512(b + j));
    _mm512_storeu_si512(acc + j, reduce_once(_mm512_add_epi64(p, _mm512_loadu_si512(acc + j)), barrett.q));
  }
  for (; j < n; ++j) acc[j] = add_mod(mul_mod(a[j], b[j], m), acc[j], m.value());
}

PFHE_AVX512_WIDE void multiply_constant_wide(const u64* a, u64 w, u64* out, std::size_t n, const Modulus& m) {
  const __m512i q = broadcast(m.value()), wv = broadcast(w), ws = broadcast(shoup(w, m));
  std::size_t j = 0;
  for (; j + 8 <= n; j += 8)
    _mm512_storeu_si512(out + j, reduce_once(mul_shoup_lazy(_mm512_loadu_si512(a + j), wv, ws, q), q));
  for (; j < n; ++j) out[j] = mul_mod(a[j], w, m);
}

PFHE_AVX512_WIDE void subtract_multiply_constant_wide(const u64* a, const u64* b, u64 w, u64* out, std::size_t n,
                                                      const Modulus& m) {
  const __m512i q = broadcast(m.value()), wv = broadcast(w), ws = broadcast(shoup(w, m));
  std::size_t j = 0;
  for (; j + 8 <= n; j += 8) {
    const __m512i diff = _mm512_sub_epi64(_mm512_add_epi64(_mm512_loadu_si512(a + j), q), _mm512_loadu_si512(b + j));
    _mm512_storeu_si512(out + j, reduce_once(mul_shoup_lazy(diff, wv, ws, q), q));
  }
  for (; j < n; ++j) out[j] = mul_mod(sub_mod(a[j], b[j], m.value()), w, m);
}

// x mod q for any 64-bit x: Shoup multiplication by 1.
PFHE_AVX512_WIDE void reduce_wide(const u64* x, u64* out, std::size_t n, const Modulus& m) {
  const __m512i q = broadcast(m.value()), one = broadcast(1), one_shoup = broadcast(shoup(1, m));
  std::size_t j = 0;
  for (; j + 8 <= n; j += 8)
    _mm512_storeu_si512(out + j, reduce_once(mul_shoup_lazy(_mm512_loadu_si512(x + j), one, one_shoup, q), q));
  for (; j < n; ++j) out[j] = reduce64(x[j], m);
}

PFHE_AVX512_WIDE void reduce_signed_wide(const std::int64_t* x, u64* out, std::size_t n, const Modulus& m) {
  const __m512i q = broadcast(m.value()), one = broadcast(1), one_shoup = broadcast(shoup(1, m));
  const __m512i zero = _mm512_setzero_si512();
  std::size_t j = 0;
  for (; j + 8 <= n; j += 8) {
    const __m512i v = _mm512_loadu_si512(x + j);
    // |INT64_MIN| is 2^63 read unsigned: the magnitude is right for every input.
    const __m512i r = reduce_once(mul_shoup_lazy(_mm512_abs_epi64(v), one, one_shoup, q), q);
    const __mmask8 flip = _mm512_cmplt_epi64_mask(v, zero) & _mm512_cmpneq_epi64_mask(r, zero);
    _mm512_storeu_si512(out + j, _mm512_mask_sub_epi64(r, flip, q, r));
  }
  for (; j < n; ++j) out[j] = reduce_signed64(x[j], m);
}

PFHE_AVX512_WIDE void dot_constant_wide(const u64* const* y, const u64* w, const u64* w_shoup, std::size_t terms,
                                        u64* out, std::size_t n, const Modulus& m) {
  const __m512i q = broadcast(m.value()), two_q = broadcast(2 * m.value());
  std::size_t j = 0;
  for (; j + 8 <= n; j += 8) {
    __m512i acc = _mm512_setzero_si512();  // kept in [0, 2q)
    for (std::size_t i = 0; i < terms; ++i)
      acc = reduce_once(_mm512_add_epi64(acc, mul_shoup_lazy(_mm512_loadu_si512(y[i] + j), broadcast(w[i]),
                                                             broadcast(w_shoup[i]), q)),
                        two_q);
    _mm512_storeu_si512(out + j, reduce_once(acc, q));
  }
  for (; j < n; ++j) {
    u64 acc = 0;
    for (std::size_t i = 0; i < terms; ++i) acc = add_mod(acc, mul_mod(y[i][j], w[i], m), m.value());
    out[j] = acc;
  }
}

}  // namespace pfhe::ring::kernels::detail
