// AVX-512 IFMA element-wise kernels (primes below 2^50, 8 lanes of 52-bit products).
#include <immintrin.h>

#include <algorithm>
#include <array>

#include "ring/avx512_shoup.h"
#include "ring/kernels.h"

namespace pfhe::ring::kernels::detail {
namespace {

using avx512::reduce_once;

struct Lanes {
  PFHE_AVX512 explicit Lanes(const Modulus& m)
      : q(_mm512_set1_epi64(static_cast<long long>(m.value()))),
        mu(_mm512_set1_epi64(static_cast<long long>(m.barrett52()))),
        one_shoup(_mm512_set1_epi64(static_cast<long long>(m.one_shoup52()))),
        bits(m.bits()) {}
  __m512i q, mu, one_shoup;
  int bits;
};

PFHE_AVX512 inline __m512i mask52() { return _mm512_set1_epi64((1LL << 52) - 1); }

// a * b mod q for a, b < q < 2^50 (Barrett on the 104-bit product; estimate off by <= 2).
PFHE_AVX512 inline __m512i mul_barrett(__m512i a, __m512i b, const Lanes& l) {
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



}  // namespace

namespace {
// The 8 inputs of output block j: one aligned line of x, its lanes in perm's order.
PFHE_AVX512 inline __m512i permuted_block(const u64* x, const std::uint32_t* perm, std::size_t j) {
  const __m256i lanes = _mm256_and_si256(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(perm + j)),
                                         _mm256_set1_epi32(7));
  return _mm512_permutexvar_epi64(_mm512_cvtepu32_epi64(lanes), _mm512_loadu_si512(x + (perm[j] & ~7U)));
}
}  // namespace

PFHE_AVX512 void permute_blocks_avx512(const u64* x, const std::uint32_t* perm, u64* out, std::size_t n) {
  for (std::size_t j = 0; j < n; j += 8) _mm512_storeu_si512(out + j, permuted_block(x, perm, j));
}

PFHE_AVX512 void permute_blocks_add_avx512(const u64* x, const std::uint32_t* perm, u64* acc, std::size_t n, u64 q) {
  const __m512i qv = _mm512_set1_epi64(static_cast<long long>(q));
  for (std::size_t j = 0; j < n; j += 8)
    _mm512_storeu_si512(acc + j, reduce_once(_mm512_add_epi64(_mm512_loadu_si512(acc + j), permuted_block(x, perm, j)), qv));
}

PFHE_AVX512 void add_avx512(const u64* a, const u64* b, u64* out, std::size_t n, u64 q) {
  const __m512i qv = _mm512_set1_epi64(static_cast<long long>(q));
  std::size_t j = 0;
  for (; j + 8 <= n; j += 8)
    _mm512_storeu_si512(out + j, reduce_once(_mm512_add_epi64(_mm512_loadu_si512(a + j), _mm512_loadu_si512(b + j)), qv));
  for (; j < n; ++j) out[j] = add_mod(a[j], b[j], q);
}

PFHE_AVX512 void sub_avx512(const u64* a, const u64* b, u64* out, std::size_t n, u64 q) {
  const __m512i qv = _mm512_set1_epi64(static_cast<long long>(q));
  std::size_t j = 0;
  for (; j + 8 <= n; j += 8) {
    const __m512i d = _mm512_sub_epi64(_mm512_add_epi64(_mm512_loadu_si512(a + j), qv), _mm512_loadu_si512(b + j));
    _mm512_storeu_si512(out + j, reduce_once(d, qv));
  }
  for (; j < n; ++j) out[j] = sub_mod(a[j], b[j], q);
}

PFHE_AVX512 void subtract_indexed_avx512(const u64* table, std::size_t table_size, const u64* index, u64* acc,
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

PFHE_AVX512 void add_constant_avx512(const u64* a, u64 c, u64* out, std::size_t n, u64 q) {
  const __m512i qv = _mm512_set1_epi64(static_cast<long long>(q));
  const __m512i cv = _mm512_set1_epi64(static_cast<long long>(c));
  std::size_t j = 0;
  for (; j + 8 <= n; j += 8)
    _mm512_storeu_si512(out + j, reduce_once(_mm512_add_epi64(_mm512_loadu_si512(a + j), cv), qv));
  for (; j < n; ++j) out[j] = add_mod(a[j], c, q);
}

// The vector loops run over n rounded down to 8 lanes; the scalar tail keeps odd sizes
// correct (polynomials always have n >= 16, but the kernels do not rely on it).
PFHE_AVX512 void multiply_ifma(const u64* a, const u64* b, u64* out, std::size_t n, const Modulus& m) {
  const Lanes l(m);
  std::size_t j = 0;
  for (; j + 8 <= n; j += 8)
    _mm512_storeu_si512(out + j, mul_barrett(_mm512_loadu_si512(a + j), _mm512_loadu_si512(b + j), l));
  for (; j < n; ++j) out[j] = mul_mod(a[j], b[j], m);
}

PFHE_AVX512 void multiply_add_ifma(const u64* a, const u64* b, u64* acc, std::size_t n, const Modulus& m) {
  const Lanes l(m);
  std::size_t j = 0;
  for (; j + 8 <= n; j += 8) {
    const __m512i p = mul_barrett(_mm512_loadu_si512(a + j), _mm512_loadu_si512(b + j), l);
    _mm512_storeu_si512(acc + j, reduce_once(_mm512_add_epi64(p, _mm512_loadu_si512(acc + j)), l.q));
  }
  for (; j < n; ++j) acc[j] = add_mod(mul_mod(a[j], b[j], m), acc[j], m.value());
}

// A sum of at most kIfmaDotTerms products of words below 2^50, kept as the sums of their
// low and high 52-bit halves (lo, hi), reduced once: z = hi 2^52 + lo = hi radix + lo mod q.
struct LazySum {
  PFHE_AVX512 explicit LazySum(const Modulus& m)
      : q(_mm512_set1_epi64(static_cast<long long>(m.value()))), mul(avx512::Shoup52::of(q)),
        radix(_mm512_set1_epi64(static_cast<long long>((u64{1} << 52) % m.value()))),
        radix_shoup(_mm512_set1_epi64(
            static_cast<long long>(avx512::Shoup52::shoup_of((u64{1} << 52) % m.value(), m)))),
        one_shoup(_mm512_set1_epi64(static_cast<long long>(m.one_shoup52()))) {}
  PFHE_AVX512 __m512i reduce(__m512i lo, __m512i hi) const {
    hi = _mm512_add_epi64(hi, _mm512_srli_epi64(lo, 52));  // < terms 2^48 + terms < 2^52
    lo = _mm512_and_si512(lo, mask52());
    const __m512i h = reduce_once(mul(hi, radix, radix_shoup), q);
    const __m512i l = reduce_once(mul(lo, _mm512_set1_epi64(1), one_shoup), q);
    return reduce_once(_mm512_add_epi64(h, l), q);
  }
  __m512i q;
  avx512::Shoup52 mul;
  __m512i radix, radix_shoup, one_shoup;
};

PFHE_AVX512 void dot_product_ifma(const u64* const* a, const u64* const* b, std::size_t terms, u64* out,
                                  std::size_t n, const Modulus& m, bool accumulate) {
  const LazySum sum(m);
  std::size_t j = 0;
  for (; j + 8 <= n; j += 8) {
    // out < q adds less than one more 2^52 to the low sum (its carry stays <= terms)
    __m512i lo = accumulate ? _mm512_loadu_si512(out + j) : _mm512_setzero_si512(), hi = _mm512_setzero_si512();
    for (std::size_t t = 0; t < terms; ++t) {
      const __m512i x = _mm512_loadu_si512(a[t] + j), y = _mm512_loadu_si512(b[t] + j);
      lo = _mm512_madd52lo_epu64(lo, x, y);
      hi = _mm512_madd52hi_epu64(hi, x, y);
    }
    _mm512_storeu_si512(out + j, sum.reduce(lo, hi));
  }
  for (; j < n; ++j) {
    u64 acc = accumulate ? out[j] : 0;
    for (std::size_t t = 0; t < terms; ++t) acc = add_mod(acc, mul_mod(a[t][j], b[t][j], m), m.value());
    out[j] = acc;
  }
}

void multiply_constant_ifma(const u64* a, u64 w, u64* out, std::size_t n, const Modulus& m) {
  avx512::multiply_constant<avx512::Shoup52>(a, w, out, n, m);
}

void subtract_multiply_constant_ifma(const u64* a, const u64* b, u64 w, u64* out, std::size_t n,
                                     const Modulus& m) {
  avx512::subtract_multiply_constant<avx512::Shoup52>(a, b, w, out, n, m);
}

void subtract_multiply_add_permute_ifma(const u64* a, const u64* b, u64 w, const u64* c,
                                        const std::uint32_t* perm, u64* out, std::size_t n, const Modulus& m) {
  avx512::subtract_multiply_add_permute<avx512::Shoup52>(a, b, w, c, perm, out, n, m);
}

void reduce_ifma(const u64* x, u64* out, std::size_t n, const Modulus& m) {
  avx512::reduce<avx512::Shoup52>(x, out, n, m);
}

void reduce_signed_ifma(const std::int64_t* x, u64* out, std::size_t n, const Modulus& m) {
  avx512::reduce_signed<avx512::Shoup52>(x, out, n, m);
}

PFHE_AVX512 void dot_constant_ifma(const u64* const* y, const u64* w, const u64* w_shoup52, std::size_t terms,
                                   u64* out, std::size_t n, const Modulus& m) {
  if (terms > kIfmaDotTerms) return avx512::dot_constant<avx512::Shoup52>(y, w, w_shoup52, terms, out, n, m);
  // A base conversion's row: the same lazy sum as dot_product_ifma, the constants broadcast.
  const LazySum sum(m);
  std::array<__m512i, kIfmaDotTerms> wv;
  for (std::size_t i = 0; i < terms; ++i) wv[i] = _mm512_set1_epi64(static_cast<long long>(w[i]));
  std::size_t j = 0;
  for (; j + 8 <= n; j += 8) {
    __m512i lo = _mm512_setzero_si512(), hi = _mm512_setzero_si512();
    for (std::size_t i = 0; i < terms; ++i) {
      const __m512i x = _mm512_loadu_si512(y[i] + j);
      lo = _mm512_madd52lo_epu64(lo, x, wv[i]);
      hi = _mm512_madd52hi_epu64(hi, x, wv[i]);
    }
    _mm512_storeu_si512(out + j, sum.reduce(lo, hi));
  }
  for (; j < n; ++j) {
    u64 acc = 0;
    for (std::size_t i = 0; i < terms; ++i) acc = add_mod(acc, mul_mod(y[i][j], w[i], m), m.value());
    out[j] = acc;
  }
}

}  // namespace pfhe::ring::kernels::detail
