// AVX-512 IFMA element-wise kernels (primes below 2^50, 8 lanes of 52-bit products).
#include <immintrin.h>

#include <algorithm>
#include <array>

#include "ring/kernels.h"

// GCC 12 flags _mm512_undefined_epi32() inside the masked-min intrinsic; a false positive.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif

#define PFHE_IFMA __attribute__((target("avx512f,avx512ifma")))

namespace pfhe::ring::kernels::detail {
namespace {

struct Lanes {
  PFHE_IFMA explicit Lanes(const Modulus& m)
      : q(_mm512_set1_epi64(static_cast<long long>(m.value()))),
        mu(_mm512_set1_epi64(static_cast<long long>(m.barrett52()))),
        one_shoup(_mm512_set1_epi64(static_cast<long long>(m.one_shoup52()))),
        bits(m.bits()) {}
  __m512i q, mu, one_shoup;
  int bits;
};

PFHE_IFMA inline __m512i mask52() { return _mm512_set1_epi64((1LL << 52) - 1); }

PFHE_IFMA inline __m512i reduce_once(__m512i x, __m512i bound) {
  return _mm512_min_epu64(x, _mm512_sub_epi64(x, bound));
}

// a * b mod q for a, b < q < 2^50 (Barrett on the 104-bit product; estimate off by <= 2).
PFHE_IFMA inline __m512i mul_barrett(__m512i a, __m512i b, const Lanes& l) {
  const __m512i zero = _mm512_setzero_si512();
  const __m512i zl = _mm512_madd52lo_epu64(zero, a, b);
  const __m512i zh = _mm512_madd52hi_epu64(zero, a, b);
  // z' = floor(z / 2^(b-1)) < 2^(b+1)
  const __m512i zs = _mm512_or_si512(_mm512_slli_epi64(zh, static_cast<unsigned>(53 - l.bits)),
                                     _mm512_srli_epi64(zl, static_cast<unsigned>(l.bits - 1)));
  const __m512i tl = _mm512_madd52lo_epu64(zero, zs, l.mu);
  const __m512i th = _mm512_madd52hi_epu64(zero, zs, l.mu);
  // quotient = floor(z' * mu / 2^(b+1))
  const __m512i quot = _mm512_or_si512(_mm512_slli_epi64(th, static_cast<unsigned>(51 - l.bits)),
                                       _mm512_srli_epi64(tl, static_cast<unsigned>(l.bits + 1)));
  __m512i r = _mm512_and_si512(_mm512_sub_epi64(zl, _mm512_madd52lo_epu64(zero, quot, l.q)), mask52());
  const __m512i two_q = _mm512_add_epi64(l.q, l.q);
  r = reduce_once(r, two_q);
  return reduce_once(r, l.q);
}

// x * w mod q in [0, 2q) for a fixed w (Shoup, 52-bit), x < 2^52.
PFHE_IFMA inline __m512i mul_shoup_lazy(__m512i x, __m512i w, __m512i w_shoup, __m512i q) {
  const __m512i zero = _mm512_setzero_si512();
  const __m512i quot = _mm512_madd52hi_epu64(zero, x, w_shoup);
  const __m512i prod = _mm512_madd52lo_epu64(zero, x, w);
  return _mm512_and_si512(_mm512_sub_epi64(prod, _mm512_madd52lo_epu64(zero, quot, q)), mask52());
}

inline u64 shoup52(u64 w, u64 q) { return static_cast<u64>((static_cast<u128>(w) << 52) / q); }

}  // namespace

namespace {
// The 8 inputs of output block j: one aligned line of x, its lanes in perm's order.
PFHE_IFMA inline __m512i permuted_block(const u64* x, const std::uint32_t* perm, std::size_t j) {
  const __m256i lanes = _mm256_and_si256(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(perm + j)),
                                         _mm256_set1_epi32(7));
  return _mm512_permutexvar_epi64(_mm512_cvtepu32_epi64(lanes), _mm512_loadu_si512(x + (perm[j] & ~7U)));
}
}  // namespace

PFHE_IFMA void permute_blocks_avx512(const u64* x, const std::uint32_t* perm, u64* out, std::size_t n) {
  for (std::size_t j = 0; j < n; j += 8) _mm512_storeu_si512(out + j, permuted_block(x, perm, j));
}

PFHE_IFMA void permute_blocks_add_avx512(const u64* x, const std::uint32_t* perm, u64* acc, std::size_t n, u64 q) {
  const __m512i qv = _mm512_set1_epi64(static_cast<long long>(q));
  for (std::size_t j = 0; j < n; j += 8)
    _mm512_storeu_si512(acc + j, reduce_once(_mm512_add_epi64(_mm512_loadu_si512(acc + j), permuted_block(x, perm, j)), qv));
}

PFHE_IFMA void add_avx512(const u64* a, const u64* b, u64* out, std::size_t n, u64 q) {
  const __m512i qv = _mm512_set1_epi64(static_cast<long long>(q));
  std::size_t j = 0;
  for (; j + 8 <= n; j += 8)
    _mm512_storeu_si512(out + j, reduce_once(_mm512_add_epi64(_mm512_loadu_si512(a + j), _mm512_loadu_si512(b + j)), qv));
  for (; j < n; ++j) out[j] = add_mod(a[j], b[j], q);
}

PFHE_IFMA void sub_avx512(const u64* a, const u64* b, u64* out, std::size_t n, u64 q) {
  const __m512i qv = _mm512_set1_epi64(static_cast<long long>(q));
  std::size_t j = 0;
  for (; j + 8 <= n; j += 8) {
    const __m512i d = _mm512_sub_epi64(_mm512_add_epi64(_mm512_loadu_si512(a + j), qv), _mm512_loadu_si512(b + j));
    _mm512_storeu_si512(out + j, reduce_once(d, qv));
  }
  for (; j < n; ++j) out[j] = sub_mod(a[j], b[j], q);
}

PFHE_IFMA void subtract_indexed_avx512(const u64* table, std::size_t table_size, const u64* index, u64* acc,
                                       std::size_t n, u64 q) {
  const __m512i qv = _mm512_set1_epi64(static_cast<long long>(q));
  alignas(64) std::array<u64, 16> padded{};  // up to 16 entries: two registers, one permute
  const bool in_registers = table_size <= padded.size();
  if (in_registers) std::copy(table, table + table_size, padded.begin());
  const __m512i lo = _mm512_load_si512(padded.data()), hi = _mm512_load_si512(padded.data() + 8);
  std::size_t j = 0;
  for (; j + 8 <= n; j += 8) {
    const __m512i i = _mm512_loadu_si512(index + j);
    const __m512i t = in_registers ? _mm512_permutex2var_epi64(lo, i, hi) : _mm512_i64gather_epi64(i, table, 8);
    const __m512i d = _mm512_sub_epi64(_mm512_add_epi64(_mm512_loadu_si512(acc + j), qv), t);
    _mm512_storeu_si512(acc + j, reduce_once(d, qv));
  }
  for (; j < n; ++j) acc[j] = sub_mod(acc[j], table[index[j]], q);
}

PFHE_IFMA void add_constant_avx512(const u64* a, u64 c, u64* out, std::size_t n, u64 q) {
  const __m512i qv = _mm512_set1_epi64(static_cast<long long>(q));
  const __m512i cv = _mm512_set1_epi64(static_cast<long long>(c));
  std::size_t j = 0;
  for (; j + 8 <= n; j += 8)
    _mm512_storeu_si512(out + j, reduce_once(_mm512_add_epi64(_mm512_loadu_si512(a + j), cv), qv));
  for (; j < n; ++j) out[j] = add_mod(a[j], c, q);
}

// The vector loops run over n rounded down to 8 lanes; the scalar tail keeps odd sizes
// correct (polynomials always have n >= 16, but the kernels do not rely on it).
PFHE_IFMA void multiply_ifma(const u64* a, const u64* b, u64* out, std::size_t n, const Modulus& m) {
  const Lanes l(m);
  std::size_t j = 0;
  for (; j + 8 <= n; j += 8)
    _mm512_storeu_si512(out + j, mul_barrett(_mm512_loadu_si512(a + j), _mm512_loadu_si512(b + j), l));
  for (; j < n; ++j) out[j] = mul_mod(a[j], b[j], m);
}

PFHE_IFMA void multiply_add_ifma(const u64* a, const u64* b, u64* acc, std::size_t n, const Modulus& m) {
  const Lanes l(m);
  std::size_t j = 0;
  for (; j + 8 <= n; j += 8) {
    const __m512i p = mul_barrett(_mm512_loadu_si512(a + j), _mm512_loadu_si512(b + j), l);
    _mm512_storeu_si512(acc + j, reduce_once(_mm512_add_epi64(p, _mm512_loadu_si512(acc + j)), l.q));
  }
  for (; j < n; ++j) acc[j] = add_mod(mul_mod(a[j], b[j], m), acc[j], m.value());
}

PFHE_IFMA void multiply_constant_ifma(const u64* a, u64 w, u64* out, std::size_t n, const Modulus& m) {
  const __m512i q = _mm512_set1_epi64(static_cast<long long>(m.value()));
  const __m512i wv = _mm512_set1_epi64(static_cast<long long>(w));
  const __m512i ws = _mm512_set1_epi64(static_cast<long long>(shoup52(w, m.value())));
  std::size_t j = 0;
  for (; j + 8 <= n; j += 8)
    _mm512_storeu_si512(out + j, reduce_once(mul_shoup_lazy(_mm512_loadu_si512(a + j), wv, ws, q), q));
  for (; j < n; ++j) out[j] = mul_mod(a[j], w, m);
}

PFHE_IFMA void subtract_multiply_constant_ifma(const u64* a, const u64* b, u64 w, u64* out, std::size_t n,
                                               const Modulus& m) {
  const __m512i q = _mm512_set1_epi64(static_cast<long long>(m.value()));
  const __m512i wv = _mm512_set1_epi64(static_cast<long long>(w));
  const __m512i ws = _mm512_set1_epi64(static_cast<long long>(shoup52(w, m.value())));
  std::size_t j = 0;
  for (; j + 8 <= n; j += 8) {
    const __m512i diff = _mm512_sub_epi64(_mm512_add_epi64(_mm512_loadu_si512(a + j), q), _mm512_loadu_si512(b + j));
    _mm512_storeu_si512(out + j, reduce_once(mul_shoup_lazy(diff, wv, ws, q), q));
  }
  for (; j < n; ++j) out[j] = mul_mod(sub_mod(a[j], b[j], m.value()), w, m);
}

PFHE_IFMA void reduce_ifma(const u64* x, u64* out, std::size_t n, const Modulus& m) {
  const __m512i q = _mm512_set1_epi64(static_cast<long long>(m.value()));
  const __m512i one = _mm512_set1_epi64(1);
  const __m512i os = _mm512_set1_epi64(static_cast<long long>(m.one_shoup52()));
  std::size_t j = 0;
  for (; j + 8 <= n; j += 8)
    _mm512_storeu_si512(out + j, reduce_once(mul_shoup_lazy(_mm512_loadu_si512(x + j), one, os, q), q));
  for (; j < n; ++j) out[j] = reduce64(x[j], m);
}

PFHE_IFMA void reduce_signed_ifma(const std::int64_t* x, u64* out, std::size_t n, const Modulus& m) {
  const __m512i q = _mm512_set1_epi64(static_cast<long long>(m.value()));
  const __m512i one = _mm512_set1_epi64(1);
  const __m512i os = _mm512_set1_epi64(static_cast<long long>(m.one_shoup52()));
  const __m512i zero = _mm512_setzero_si512();
  std::size_t j = 0;
  for (; j + 8 <= n; j += 8) {
    const __m512i v = _mm512_loadu_si512(x + j);
    const __m512i r = reduce_once(mul_shoup_lazy(_mm512_abs_epi64(v), one, os, q), q);
    // Negative inputs with a non-zero residue become q - r.
    const __mmask8 flip = _mm512_cmplt_epi64_mask(v, zero) & _mm512_cmpneq_epi64_mask(r, zero);
    _mm512_storeu_si512(out + j, _mm512_mask_sub_epi64(r, flip, q, r));
  }
  for (; j < n; ++j) out[j] = reduce_signed64(x[j], m);
}

PFHE_IFMA void dot_constant_ifma(const u64* const* y, const u64* w, const u64* w_shoup52, std::size_t terms,
                                 u64* out, std::size_t n, const Modulus& m) {
  const __m512i q = _mm512_set1_epi64(static_cast<long long>(m.value()));
  const __m512i two_q = _mm512_add_epi64(q, q);
  std::size_t j = 0;
  for (; j + 8 <= n; j += 8) {
    __m512i acc = _mm512_setzero_si512();  // kept in [0, 2q)
    for (std::size_t i = 0; i < terms; ++i) {
      const __m512i p = mul_shoup_lazy(_mm512_loadu_si512(y[i] + j), _mm512_set1_epi64(static_cast<long long>(w[i])),
                                       _mm512_set1_epi64(static_cast<long long>(w_shoup52[i])), q);
      acc = reduce_once(_mm512_add_epi64(acc, p), two_q);
    }
    _mm512_storeu_si512(out + j, reduce_once(acc, q));
  }
  for (; j < n; ++j) {
    u64 acc = 0;
    for (std::size_t i = 0; i < terms; ++i) acc = add_mod(acc, mul_mod(y[i][j], w[i], m), m.value());
    out[j] = acc;
  }
}

}  // namespace pfhe::ring::kernels::detail
