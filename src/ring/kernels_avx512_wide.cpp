// AVX-512 element-wise kernels for primes from 2^50 to 2^61 (8 lanes of 64-bit products,
// ring/avx512_wide.h): the kernels' path for the primes the IFMA lanes cannot hold, such as
// bootstrapping's 60-bit EvalMod primes (they ran the scalar loops before).
#include <immintrin.h>

#include "ring/avx512_shoup.h"
#include "ring/avx512_wide.h"
#include "ring/kernels.h"

namespace pfhe::ring::kernels::detail {
namespace {

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

void multiply_constant_wide(const u64* a, u64 w, u64* out, std::size_t n, const Modulus& m) {
  avx512::multiply_constant<avx512::Shoup64>(a, w, out, n, m);
}

void subtract_multiply_constant_wide(const u64* a, const u64* b, u64 w, u64* out, std::size_t n,
                                     const Modulus& m) {
  avx512::subtract_multiply_constant<avx512::Shoup64>(a, b, w, out, n, m);
}

void subtract_multiply_add_permute_wide(const u64* a, const u64* b, u64 w, const u64* c,
                                        const std::uint32_t* perm, u64* out, std::size_t n, const Modulus& m) {
  avx512::subtract_multiply_add_permute<avx512::Shoup64>(a, b, w, c, perm, out, n, m);
}

void reduce_wide(const u64* x, u64* out, std::size_t n, const Modulus& m) {
  avx512::reduce<avx512::Shoup64>(x, out, n, m);
}

void reduce_signed_wide(const std::int64_t* x, u64* out, std::size_t n, const Modulus& m) {
  avx512::reduce_signed<avx512::Shoup64>(x, out, n, m);
}

void dot_constant_wide(const u64* const* y, const u64* w, const u64* w_shoup, std::size_t terms, u64* out,
                       std::size_t n, const Modulus& m) {
  avx512::dot_constant<avx512::Shoup64>(y, w, w_shoup, terms, out, n, m);
}

}  // namespace pfhe::ring::kernels::detail
