// AVX2 kernels on double lanes (ring/avx2_double.h) for primes below 2^50.
#include "ring/avx2_double.h"
#include "ring/kernels.h"

namespace pfhe::ring::kernels::detail {
using avx2_double::centre;
using avx2_double::make_non_negative;

namespace {
PFHE_AVX2_FMA inline __m256d load_integers(const u64* p) {
  return avx2_double::from_u64(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)));
}
}  // namespace

PFHE_AVX2_FMA void to_doubles_avx2(const u64* x, double* out, std::size_t n) {
  std::size_t j = 0;
  for (; j + 4 <= n; j += 4)
    _mm256_storeu_pd(out + j, avx2_double::from_u64(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(x + j))));
  for (; j < n; ++j) out[j] = static_cast<double>(static_cast<std::int64_t>(x[j]));
}


// Each term's x w mod q in (-0.75q, 0.75q): its quotient estimate rint(x fl(w/q)) is within
// 0.75 of x w / q (x w / q < x < 2^50 and two roundings of relative error 2^-53); hi - k q
// is then exact as in avx2_double::mul_mod_lazy. Four terms, with the sum brought back to
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
      const __m256d hi = _mm256_mul_pd(x, wt), lo = _mm256_fmsub_pd(x, wt, hi);
      const __m256d k = _mm256_round_pd(_mm256_mul_pd(x, _mm256_set1_pd(w_over_q[t])),
                                        _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
      sum = _mm256_add_pd(sum, _mm256_add_pd(_mm256_fnmadd_pd(k, q, hi), lo));
      if ((t + 1) % kTermsPerCentre == 0) sum = centre(sum, q, q_inv);
    }
    sum = make_non_negative(centre(sum, q, q_inv), q);
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(out + j), avx2_double::to_u64(sum));
  }
  for (; j < n; ++j) {
    u64 acc = 0;
    for (std::size_t t = 0; t < terms; ++t)
      acc = add_mod(acc, mul_mod(static_cast<u64>(y[t][j]), static_cast<u64>(w[t]), m), m.value());
    out[j] = acc;
  }
}

// Each product a b mod q in (-0.9q, 0.9q): a b / q < q < 2^50, so the quotient estimate
// rint(fl(fl(a b) q_inv)) is within 0.9 of it (three roundings of relative error 2^-53);
// hi - k q is exact as in avx2_double::mul_mod_lazy. Four products, with the sum brought
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
      const __m256d hi = _mm256_mul_pd(x, y), lo = _mm256_fmsub_pd(x, y, hi);
      const __m256d k = _mm256_round_pd(_mm256_mul_pd(hi, q_inv), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
      sum = _mm256_add_pd(sum, _mm256_add_pd(_mm256_fnmadd_pd(k, q, hi), lo));
      if ((t + 1) % kTermsPerCentre == 0) sum = centre(sum, q, q_inv);
    }
    sum = make_non_negative(centre(sum, q, q_inv), q);
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(out + j), avx2_double::to_u64(sum));
  }
  for (; j < n; ++j) {
    u64 acc = accumulate ? out[j] : 0;
    for (std::size_t t = 0; t < terms; ++t) acc = add_mod(acc, mul_mod(a[t][j], b[t][j], m), m.value());
    out[j] = acc;
  }
}

namespace {
// x w mod q in [0, q) for integers 0 <= x < 2q, w < q, w_over_q = fl(w / q): the quotient
// estimate rint(x w_over_q) is within 1 of x w / q (< 2^51, two roundings of relative
// error 2^-53), so x w - k q lies in (-q, q); hi - k q is exact as in mul_mod_lazy.
PFHE_AVX2_FMA inline __m256d mul_constant(__m256d x, __m256d w, __m256d w_over_q, __m256d q) {
  const __m256d hi = _mm256_mul_pd(x, w), lo = _mm256_fmsub_pd(x, w, hi);
  const __m256d k = _mm256_round_pd(_mm256_mul_pd(x, w_over_q), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  return make_non_negative(_mm256_add_pd(_mm256_fnmadd_pd(k, q, hi), lo), q);
}

// x[perm[j .. j + 3]], or x[j .. j + 3] without a permutation.
PFHE_AVX2_FMA inline __m256i gather4(const u64* x, const std::uint32_t* perm, std::size_t j) {
  if (!perm) return _mm256_loadu_si256(reinterpret_cast<const __m256i*>(x + j));
  return _mm256_set_epi64x(static_cast<long long>(x[perm[j + 3]]), static_cast<long long>(x[perm[j + 2]]),
                           static_cast<long long>(x[perm[j + 1]]), static_cast<long long>(x[perm[j]]));
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
    __m256d v = mul_constant(avx2_double::from_u64(x), wv, w_over_q, q);
    if (c) v = avx2_double::reduce_once(_mm256_add_pd(v, avx2_double::from_u64(gather4(c, perm, j))), q);
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(out + j), avx2_double::to_u64(v));
  }
  for (; j < n; ++j) {
    const std::size_t k = perm ? perm[j] : j;
    const u64 v = mul_mod(a[k] + qs - b[k], w, m);
    out[j] = c ? add_mod(v, c[k], qs) : v;
  }
}

PFHE_AVX2_FMA void multiply_constant_avx2(const u64* a, u64 w, u64* out, std::size_t n, const Modulus& m) {
  const __m256d q = _mm256_set1_pd(static_cast<double>(m.value())), wv = _mm256_set1_pd(static_cast<double>(w));
  const __m256d w_over_q = _mm256_set1_pd(static_cast<double>(w) / static_cast<double>(m.value()));
  std::size_t j = 0;
  for (; j + 4 <= n; j += 4)
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(out + j),
                        avx2_double::to_u64(mul_constant(load_integers(a + j), wv, w_over_q, q)));
  for (; j < n; ++j) out[j] = mul_mod(a[j], w, m);
}

}  // namespace pfhe::ring::kernels::detail
