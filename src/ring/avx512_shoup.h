// The two AVX-512 Shoup multiplications, x * w mod q in [0, 2q) for a fixed w < q, as
// policies that kernels are templated on, so that each kernel is written once for both
// kinds of lanes:
//   Shoup52: the IFMA units, primes below 2^50, x < 2^52, constants floor(w 2^52 / q);
//   Shoup64: 64-bit lanes (ring/avx512_wide.h), primes below 2^61, any 64-bit x,
//            constants floor(w 2^64 / q).
// Included only by the AVX-512 translation units (the NTT and the element-wise kernels);
// every function carries the target attribute, so nothing reaches the portable build. The
// dispatchers call these only where SimdPath::kAvx512Ifma runs, which needs both IFMA
// and AVX-512DQ (cpu_supports).
#pragma once
#include <immintrin.h>

// GCC 12 flags _mm512_undefined_epi32() inside the masked-min intrinsic; a false positive
// (for every AVX-512 translation unit: each includes this header first).
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif

#include <cstdint>

#include "ring/avx512_wide.h"
#include "ring/modarith.h"
#include "ring/ntt.h"

#define PFHE_AVX512 __attribute__((target("avx512f,avx512dq,avx512ifma")))

namespace pfhe::ring::avx512 {

PFHE_AVX512 inline __m512i broadcast(u64 v) { return _mm512_set1_epi64(static_cast<long long>(v)); }

// x >= bound ? x - bound : x, for x < 2 * bound (unsigned min: x - bound wraps otherwise).
PFHE_AVX512 inline __m512i reduce_once(__m512i x, __m512i bound) {
  return _mm512_min_epu64(x, _mm512_sub_epi64(x, bound));
}

struct Shoup52 {
  // 2^52 - q: adding quot * neg_q to the low product subtracts quot * q modulo 2^52 inside
  // the multiply-add, one instruction fewer than a separate subtraction.
  __m512i neg_q;
  PFHE_AVX512 static Shoup52 of(__m512i q) { return {_mm512_sub_epi64(_mm512_set1_epi64(1LL << 52), q)}; }
  PFHE_AVX512 __m512i operator()(__m512i x, __m512i w, __m512i w_shoup) const {
    const __m512i zero = _mm512_setzero_si512();
    const __m512i quot = _mm512_madd52hi_epu64(zero, x, w_shoup);
    const __m512i prod = _mm512_madd52lo_epu64(zero, x, w);
    return _mm512_and_si512(_mm512_madd52lo_epu64(prod, quot, neg_q), _mm512_set1_epi64((1LL << 52) - 1));
  }
  static u64 shoup_of(u64 w, const Modulus& m) { return static_cast<u64>((static_cast<u128>(w) << 52) / m.value()); }
  static u64 one_shoup(const Modulus& m) { return m.one_shoup52(); }
  static const u64* forward_shoup(const NttTables& t) { return t.root_powers_shoup52().data(); }
  static const u64* inverse_shoup(const NttTables& t) { return t.inv_root_powers_shoup52().data(); }
  static u64 n_inv_shoup(const NttTables& t) { return t.n_inv_shoup52(); }
};

struct Shoup64 {
  __m512i q;
  PFHE_AVX512 static Shoup64 of(__m512i q) { return {q}; }
  PFHE_AVX512 __m512i operator()(__m512i x, __m512i w, __m512i w_shoup) const {
    return wide::mul_shoup_lazy(x, w, w_shoup, q);
  }
  static u64 shoup_of(u64 w, const Modulus& m) { return shoup(w, m); }
  static u64 one_shoup(const Modulus& m) { return shoup(1, m); }
  static const u64* forward_shoup(const NttTables& t) { return t.root_powers_shoup().data(); }
  static const u64* inverse_shoup(const NttTables& t) { return t.inv_root_powers_shoup().data(); }
  static u64 n_inv_shoup(const NttTables& t) { return t.n_inv_shoup(); }
};

// The element-wise kernels built on one multiplication by a constant. The vector loops run
// over n rounded down to 8 lanes; a scalar tail keeps odd sizes correct.

// out = a * w mod q.
template <class Mul>
PFHE_AVX512 void multiply_constant(const u64* a, u64 w, u64* out, std::size_t n, const Modulus& m) {
  const __m512i q = broadcast(m.value()), wv = broadcast(w), ws = broadcast(Mul::shoup_of(w, m));
  const Mul mul = Mul::of(q);
  std::size_t j = 0;
  for (; j + 8 <= n; j += 8) _mm512_storeu_si512(out + j, reduce_once(mul(_mm512_loadu_si512(a + j), wv, ws), q));
  for (; j < n; ++j) out[j] = mul_mod(a[j], w, m);
}

// out = (a - b) * w mod q.
template <class Mul>
PFHE_AVX512 void subtract_multiply_constant(const u64* a, const u64* b, u64 w, u64* out, std::size_t n,
                                            const Modulus& m) {
  const __m512i q = broadcast(m.value()), wv = broadcast(w), ws = broadcast(Mul::shoup_of(w, m));
  const Mul mul = Mul::of(q);
  std::size_t j = 0;
  for (; j + 8 <= n; j += 8) {
    const __m512i diff = _mm512_sub_epi64(_mm512_add_epi64(_mm512_loadu_si512(a + j), q), _mm512_loadu_si512(b + j));
    _mm512_storeu_si512(out + j, reduce_once(mul(diff, wv, ws), q));
  }
  for (; j < n; ++j) out[j] = mul_mod(sub_mod(a[j], b[j], m.value()), w, m);
}

// (a - b) * w (+ c) mod q at the 8 words from k (c may be null).
template <class Mul>
PFHE_AVX512 inline __m512i subtract_multiply_add_block(const u64* a, const u64* b, const u64* c, std::size_t k,
                                                       __m512i q, __m512i w, __m512i w_shoup, const Mul& mul) {
  const __m512i diff = _mm512_sub_epi64(_mm512_add_epi64(_mm512_loadu_si512(a + k), q), _mm512_loadu_si512(b + k));
  __m512i v = reduce_once(mul(diff, w, w_shoup), q);
  if (c) v = reduce_once(_mm512_add_epi64(v, _mm512_loadu_si512(c + k)), q);
  return v;
}

// out[j] = v[perm[j]] for v = (a - b) * w (+ c) mod q; perm and c may be null (the
// identity, no addend). perm: every aligned block of 8 outputs reads one aligned block of
// 8 inputs (kernels::permute); n % 8 == 0.
template <class Mul>
PFHE_AVX512 void subtract_multiply_add_permute(const u64* a, const u64* b, u64 w, const u64* c,
                                               const std::uint32_t* perm, u64* out, std::size_t n, const Modulus& m) {
  const __m512i q = broadcast(m.value()), wv = broadcast(w), ws = broadcast(Mul::shoup_of(w, m));
  const Mul mul = Mul::of(q);
  if (!perm) {
    for (std::size_t j = 0; j < n; j += 8)
      _mm512_storeu_si512(out + j, subtract_multiply_add_block(a, b, c, j, q, wv, ws, mul));
    return;
  }
  // The blocks are read in the permutation's order, which the hardware prefetcher cannot
  // follow: each is fetched kAhead blocks before its turn.
  constexpr std::size_t kAhead = 16 * 8;
  for (std::size_t j = 0; j < n; j += 8) {
    if (j + kAhead < n) {
      const std::size_t next = perm[j + kAhead] & ~7U;
      _mm_prefetch(reinterpret_cast<const char*>(a + next), _MM_HINT_T0);
      _mm_prefetch(reinterpret_cast<const char*>(b + next), _MM_HINT_T0);
      if (c) _mm_prefetch(reinterpret_cast<const char*>(c + next), _MM_HINT_T0);
    }
    const __m256i lanes = _mm256_and_si256(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(perm + j)),
                                           _mm256_set1_epi32(7));
    const __m512i v = subtract_multiply_add_block(a, b, c, perm[j] & ~7U, q, wv, ws, mul);
    _mm512_storeu_si512(out + j, _mm512_permutexvar_epi64(_mm512_cvtepu32_epi64(lanes), v));
  }
}

// out = x mod q for the inputs Mul takes: a multiplication by 1.
template <class Mul>
PFHE_AVX512 void reduce(const u64* x, u64* out, std::size_t n, const Modulus& m) {
  const __m512i q = broadcast(m.value()), one = broadcast(1), one_shoup = broadcast(Mul::one_shoup(m));
  const Mul mul = Mul::of(q);
  std::size_t j = 0;
  for (; j + 8 <= n; j += 8) _mm512_storeu_si512(out + j, reduce_once(mul(_mm512_loadu_si512(x + j), one, one_shoup), q));
  for (; j < n; ++j) out[j] = reduce64(x[j], m);
}

// out = x mod q for signed x whose magnitude Mul takes (|INT64_MIN| is 2^63 read unsigned:
// right for Shoup64).
template <class Mul>
PFHE_AVX512 void reduce_signed(const std::int64_t* x, u64* out, std::size_t n, const Modulus& m) {
  const __m512i q = broadcast(m.value()), one = broadcast(1), one_shoup = broadcast(Mul::one_shoup(m));
  const __m512i zero = _mm512_setzero_si512();
  const Mul mul = Mul::of(q);
  std::size_t j = 0;
  for (; j + 8 <= n; j += 8) {
    const __m512i v = _mm512_loadu_si512(x + j);
    const __m512i r = reduce_once(mul(_mm512_abs_epi64(v), one, one_shoup), q);
    // Negative inputs with a non-zero residue become q - r.
    const __mmask8 flip = _mm512_cmplt_epi64_mask(v, zero) & _mm512_cmpneq_epi64_mask(r, zero);
    _mm512_storeu_si512(out + j, _mm512_mask_sub_epi64(r, flip, q, r));
  }
  for (; j < n; ++j) out[j] = reduce_signed64(x[j], m);
}

// out = sum_i y_i * w_i mod q, with the w_i's constants for Mul (a base conversion's row).
template <class Mul>
PFHE_AVX512 void dot_constant(const u64* const* y, const u64* w, const u64* w_shoup, std::size_t terms, u64* out,
                              std::size_t n, const Modulus& m) {
  const __m512i q = broadcast(m.value()), two_q = broadcast(2 * m.value());
  const Mul mul = Mul::of(q);
  std::size_t j = 0;
  for (; j + 8 <= n; j += 8) {
    __m512i acc = _mm512_setzero_si512();  // kept in [0, 2q)
    for (std::size_t i = 0; i < terms; ++i)
      acc = reduce_once(_mm512_add_epi64(acc, mul(_mm512_loadu_si512(y[i] + j), broadcast(w[i]), broadcast(w_shoup[i]))),
                        two_q);
    _mm512_storeu_si512(out + j, reduce_once(acc, q));
  }
  for (; j < n; ++j) {
    u64 acc = 0;
    for (std::size_t i = 0; i < terms; ++i) acc = add_mod(acc, mul_mod(y[i][j], w[i], m), m.value());
    out[j] = acc;
  }
}

}  // namespace pfhe::ring::avx512
