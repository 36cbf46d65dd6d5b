// AVX2 kernels on double lanes (ring/avx2_double.h) for primes below 2^50.
#include "ring/avx2_double.h"
#include "ring/kernels.h"

namespace pfhe::ring::kernels::detail {
using namespace avx2_double;

PFHE_AVX2_FMA void to_doubles_avx2(const u64* x, double* out, std::size_t n) {
  std::size_t j = 0;
  for (; j + 4 <= n; j += 4)
    _mm256_storeu_pd(out + j, load_integers(x + j));
  for (; j < n; ++j) out[j] = static_cast<double>(static_cast<std::int64_t>(x[j]));
}

// Each term's x w mod q in (-0.75q, 0.75q): its quotient estimate nearest(x fl(w/q)) is within
// 0.75 of x w / q (x w / q < x < 2^50 and two roundings of relative error 2^-53), and the
// remainder is exact (exact_remainder). Four terms, with the sum brought back to
// [-q/2, q/2] between them, keep every sum below 3.5q < 2^52.
PFHE_AVX2_FMA void dot_constant_avx2(const double* const* y, const double* w, const double* w_over_q,
                                     std::size_t terms, u64* out, std::size_t n, const Modulus& m) {
  constexpr std::size_t kTermsPerCentre = 4;
  const __m256d q = _mm256_set1_pd(static_cast<double>(m.value()));
  const __m256d q_inv = _mm256_set1_pd(1.0 / static_cast<double>(m.value()));
  std::size_t j = 0;
  for (; j + 4 <= n; j += 4) {
    __m256d sum = _mm256_setzero_pd();
    for (std::size_t t = 0; t < terms; ++t) {
      const __m256d x = _mm256_loadu_pd(y[t] + j), wt = _mm256_set1_pd(w[t]);
      const __m256d k = nearest(_mm256_mul_pd(x, _mm256_set1_pd(w_over_q[t])));
      sum = _mm256_add_pd(sum, exact_remainder(x, wt, _mm256_mul_pd(x, wt), k, q));
      if ((t + 1) % kTermsPerCentre == 0) sum = centre(sum, q, q_inv);
    }
    sum = make_non_negative(centre(sum, q, q_inv), q);
    store_integers(out + j, sum);
  }
  for (; j < n; ++j) {
    u64 acc = 0;
    for (std::size_t t = 0; t < terms; ++t)
      acc = add_mod(acc, mul_mod(static_cast<u64>(y[t][j]), static_cast<u64>(w[t]), m), m.value());
    out[j] = acc;
  }
}

// Each product a b mod q in (-0.9q, 0.9q): a b / q < q < 2^50, so the quotient estimate
// nearest(fl(fl(a b) q_inv)) is within 0.9 of it (three roundings of relative error 2^-53),
// and the remainder is exact (exact_remainder). Four products, with the sum brought
// back to [-q/2, q/2] (or [0, q) for the accumulator) between them, keep every sum below
// 4.6q < 2^53.
PFHE_AVX2_FMA void dot_product_avx2(const u64* const* a, const u64* const* b, std::size_t terms, u64* out,
                                    std::size_t n, const Modulus& m, bool accumulate) {
  constexpr std::size_t kTermsPerCentre = 4;
  const __m256d q = _mm256_set1_pd(static_cast<double>(m.value()));
  const __m256d q_inv = _mm256_set1_pd(1.0 / static_cast<double>(m.value()));
  std::size_t j = 0;
  for (; j + 4 <= n; j += 4) {
    __m256d sum = accumulate ? load_integers(out + j) : _mm256_setzero_pd();
    for (std::size_t t = 0; t < terms; ++t) {
      const __m256d x = load_integers(a[t] + j), y = load_integers(b[t] + j);
      const __m256d hi = _mm256_mul_pd(x, y);
      sum = _mm256_add_pd(sum, exact_remainder(x, y, hi, nearest(_mm256_mul_pd(hi, q_inv)), q));
      if ((t + 1) % kTermsPerCentre == 0) sum = centre(sum, q, q_inv);
    }
    sum = make_non_negative(centre(sum, q, q_inv), q);
    store_integers(out + j, sum);
  }
  for (; j < n; ++j) {
    u64 acc = accumulate ? out[j] : 0;
    for (std::size_t t = 0; t < terms; ++t) acc = add_mod(acc, mul_mod(a[t][j], b[t][j], m), m.value());
    out[j] = acc;
  }
}

namespace {
// x w mod q in [0, q) for integers 0 <= x < 2q, w < q, w_over_q = fl(w / q): the quotient
// estimate nearest(x w_over_q) is within 1 of x w / q (< 2^51, two roundings of relative
// error 2^-53), so x w - k q lies in (-q, q), computed exactly (exact_remainder).
PFHE_AVX2_FMA inline __m256d mul_constant(__m256d x, __m256d w, __m256d w_over_q, __m256d q) {
  return make_non_negative(exact_remainder(x, w, _mm256_mul_pd(x, w), nearest(_mm256_mul_pd(x, w_over_q)), q), q);
}

// x[index[j .. j + 3]] (a permutation, a table lookup), or x[j .. j + 3] without an index;
// loaded one by one.
template <class Index>
PFHE_AVX2_FMA inline __m256i gather4(const u64* x, const Index* index, std::size_t j) {
  if (!index) return _mm256_loadu_si256(reinterpret_cast<const __m256i*>(x + j));
  return _mm256_set_epi64x(static_cast<long long>(x[index[j + 3]]), static_cast<long long>(x[index[j + 2]]),
                           static_cast<long long>(x[index[j + 1]]), static_cast<long long>(x[index[j]]));
}
}  // namespace

PFHE_AVX2_FMA void subtract_multiply_add_permute_avx2(const u64* a, const u64* b, u64 w, const u64* c,
                                                      const std::uint32_t* perm, u64* out, std::size_t n,
                                                      const Modulus& m) {
  const u64 qs = m.value();
  const __m256d q = _mm256_set1_pd(static_cast<double>(qs)), wv = _mm256_set1_pd(static_cast<double>(w));
  const __m256d w_over_q = _mm256_set1_pd(static_cast<double>(w) / static_cast<double>(qs));
  const __m256i q_int = _mm256_set1_epi64x(static_cast<long long>(qs));
  std::size_t j = 0;
  for (; j + 4 <= n; j += 4) {
    const __m256i x = _mm256_sub_epi64(_mm256_add_epi64(gather4(a, perm, j), q_int), gather4(b, perm, j));  // < 2q
    __m256d v = mul_constant(from_u64(x), wv, w_over_q, q);
    if (c) v = reduce_once(_mm256_add_pd(v, from_u64(gather4(c, perm, j))), q);
    store_integers(out + j, v);
  }
  for (; j < n; ++j) {
    const std::size_t k = perm ? perm[j] : j;
    const u64 v = mul_mod(a[k] + qs - b[k], w, m);
    out[j] = c ? add_mod(v, c[k], qs) : v;
  }
}

// x mod q for |x| < 2^52: x as a double (load_signed), the quotient estimate nearest(x q_inv)
// within 1 of x / q (one rounding of relative error 2^-53 on a value below 2^52 / q, plus
// the rounding), so r = x - k q lies in (-q, q); k q
// is an integer below 2^52 + q < 2^53 in magnitude and r one below q, so the fused
// multiply-add computes r exactly.
PFHE_AVX2_FMA void reduce_signed_avx2(const std::int64_t* x, u64* out, std::size_t n, const Modulus& m) {
  const __m256d q = _mm256_set1_pd(static_cast<double>(m.value()));
  const __m256d q_inv = _mm256_set1_pd(1.0 / static_cast<double>(m.value()));
  std::size_t j = 0;
  for (; j + 4 <= n; j += 4) {
    const __m256d d = load_signed(x + j);
    const __m256d r = _mm256_fnmadd_pd(nearest(_mm256_mul_pd(d, q_inv)), q, d);
    store_integers(out + j, make_non_negative(r, q));
  }
  for (; j < n; ++j) out[j] = reduce_signed64(x[j], m);
}

// Additive kernels on 64-bit integer lanes, for any q < 2^62 (pfhe's primes are below 2^61):
// sums and differences offset by q stay below 2q < 2^63, where reduce_once's signed compare
// holds.
namespace {
PFHE_AVX2_FMA inline __m256i broadcast(u64 v) { return _mm256_set1_epi64x(static_cast<long long>(v)); }
PFHE_AVX2_FMA inline __m256i load4(const u64* p) { return _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)); }
PFHE_AVX2_FMA inline void store4(u64* p, __m256i v) { _mm256_storeu_si256(reinterpret_cast<__m256i*>(p), v); }
}  // namespace

PFHE_AVX2_FMA void add_avx2(const u64* a, const u64* b, u64* out, std::size_t n, u64 q) {
  const __m256i qv = broadcast(q);
  std::size_t j = 0;
  for (; j + 4 <= n; j += 4) store4(out + j, reduce_once(_mm256_add_epi64(load4(a + j), load4(b + j)), qv));
  for (; j < n; ++j) out[j] = add_mod(a[j], b[j], q);
}

PFHE_AVX2_FMA void sub_avx2(const u64* a, const u64* b, u64* out, std::size_t n, u64 q) {
  const __m256i qv = broadcast(q);
  std::size_t j = 0;
  for (; j + 4 <= n; j += 4)
    store4(out + j, reduce_once(_mm256_sub_epi64(_mm256_add_epi64(load4(a + j), qv), load4(b + j)), qv));
  for (; j < n; ++j) out[j] = sub_mod(a[j], b[j], q);
}

PFHE_AVX2_FMA void add_constant_avx2(const u64* a, u64 c, u64* out, std::size_t n, u64 q) {
  const __m256i qv = broadcast(q), cv = broadcast(c);
  std::size_t j = 0;
  for (; j + 4 <= n; j += 4) store4(out + j, reduce_once(_mm256_add_epi64(load4(a + j), cv), qv));
  for (; j < n; ++j) out[j] = add_mod(a[j], c, q);
}

PFHE_AVX2_FMA void subtract_indexed_avx2(const u64* table, const u64* index, u64* acc, std::size_t n, u64 q) {
  const __m256i qv = broadcast(q);
  std::size_t j = 0;
  for (; j + 4 <= n; j += 4)
    store4(acc + j, reduce_once(_mm256_sub_epi64(_mm256_add_epi64(load4(acc + j), qv), gather4(table, index, j)), qv));
  for (; j < n; ++j) acc[j] = sub_mod(acc[j], table[index[j]], q);
}

PFHE_AVX2_FMA void permute_add_avx2(const u64* x, const std::uint32_t* perm, u64* acc, std::size_t n, u64 q) {
  const __m256i qv = broadcast(q);
  std::size_t j = 0;
  for (; j + 4 <= n; j += 4) store4(acc + j, reduce_once(_mm256_add_epi64(load4(acc + j), gather4(x, perm, j)), qv));
  for (; j < n; ++j) acc[j] = add_mod(acc[j], x[perm[j]], q);
}

PFHE_AVX2_FMA void multiply_constant_avx2(const u64* a, u64 w, u64* out, std::size_t n, const Modulus& m) {
  const __m256d q = _mm256_set1_pd(static_cast<double>(m.value())), wv = _mm256_set1_pd(static_cast<double>(w));
  const __m256d w_over_q = _mm256_set1_pd(static_cast<double>(w) / static_cast<double>(m.value()));
  std::size_t j = 0;
  for (; j + 4 <= n; j += 4)
    store_integers(out + j, mul_constant(load_integers(a + j), wv, w_over_q, q));
  for (; j < n; ++j) out[j] = mul_mod(a[j], w, m);
}

}  // namespace pfhe::ring::kernels::detail
