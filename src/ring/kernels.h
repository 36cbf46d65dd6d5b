// Element-wise kernels over one limb (n coefficients modulo one prime), in three versions:
// portable scalar, AVX-512 IFMA (52-bit lanes, primes below 2^50) and AVX-512 with 64-bit
// lanes (the "wide" kernels, primes from 2^50 up). The caller passes the path; on the
// AVX-512 IFMA path a limb takes the IFMA or the wide kernels by its prime's size, and the
// AVX2 path runs double-lane kernels for primes below 2^50 (kernels_avx2.cpp) where it has
// them and the scalar versions otherwise. All inputs < q, all outputs < q, and `out` may
// alias an input.
#pragma once
#include <cstddef>
#include <cstdint>

#include "ring/cpu.h"
#include "ring/modarith.h"

namespace pfhe::ring::kernels {

// The path a kernel really runs for a request (IFMA only for eligible primes).
inline bool use_ifma(SimdPath path, const Modulus& m) {
  return path == SimdPath::kAvx512Ifma && m.ifma_eligible();
}
// The AVX2 path runs its double-lane kernels for this prime (below 2^50, like IFMA's).
inline bool use_avx2_double(SimdPath path, const Modulus& m) {
  return path == SimdPath::kAvx2 && m.ifma_eligible();
}
// The path runs the 64-bit-lane AVX-512 kernels for this prime.
inline bool use_avx512_wide(SimdPath path, const Modulus& m) {
  return path == SimdPath::kAvx512Ifma && !m.ifma_eligible();
}

// Additive kernels (any prime): on the IFMA path they use plain AVX-512F lanes, on the
// AVX2 path 64-bit integer lanes.
void add(const u64* a, const u64* b, u64* out, std::size_t n, const Modulus& m, SimdPath path);
void sub(const u64* a, const u64* b, u64* out, std::size_t n, const Modulus& m, SimdPath path);
void add_constant(const u64* a, u64 c, u64* out, std::size_t n, const Modulus& m, SimdPath path);
// acc[j] = acc[j] - table[index[j]] mod q (entries < q, index[j] < table_size): a
// correction chosen per coefficient, such as the overflow multiple of an exact base
// conversion. Branch-free (the choice is data-dependent: a branch was mispredicted about
// every other time); AVX-512 looks tables of up to 16 entries up in registers.
void subtract_indexed(const u64* table, std::size_t table_size, const u64* index, u64* acc, std::size_t n,
                      const Modulus& m, SimdPath path);

void multiply(const u64* a, const u64* b, u64* out, std::size_t n, const Modulus& m, SimdPath path);
void multiply_add(const u64* a, const u64* b, u64* acc, std::size_t n, const Modulus& m, SimdPath path);
// out[j] = sum_t a[t][j] * b[t][j] mod q, plus out[j] itself with `accumulate` (terms >= 1;
// out may alias no input). The scalar loop sums the 128-bit products and reduces once per
// 32 terms: the key-switching inner product then pays one Barrett reduction per coefficient
// instead of one per digit (1.8x faster at 4 digits, measured); IFMA lanes sum the 52-bit
// halves (detail::dot_product_ifma); the 64-bit lanes reduce every product.
void dot_product(const u64* const* a, const u64* const* b, std::size_t terms, u64* out, std::size_t n,
                 const Modulus& m, SimdPath path, bool accumulate = false);
// out = a * w for a fixed w < q (Shoup).
void multiply_constant(const u64* a, u64 w, u64* out, std::size_t n, const Modulus& m, SimdPath path);
// out = (a - b) * w for a fixed w (the last step of rescale and ModDown).
void subtract_multiply_constant(const u64* a, const u64* b, u64 w, u64* out, std::size_t n, const Modulus& m,
                                SimdPath path);
// out[j] = v[perm[j]] for v = (a - b) * w (+ c), with w < q; c and perm may be null (no addend; the identity). ModDown's last step with a ciphertext's own part
// added and a hoisted rotation's automorphism (a permutation as permute's) in one pass.
void subtract_multiply_add_permute(const u64* a, const u64* b, u64 w, const u64* c,
                                   const std::uint32_t* perm, u64* out, std::size_t n, const Modulus& m, SimdPath path);
// out = x mod q for inputs below 2^input_bits (IFMA needs input_bits <= 52).
void reduce(const u64* x, int input_bits, u64* out, std::size_t n, const Modulus& m, SimdPath path);
// out = x mod q in [0, q) for signed inputs with |x| < 2^magnitude_bits (IFMA: <= 52).
void reduce_signed(const std::int64_t* x, int magnitude_bits, u64* out, std::size_t n, const Modulus& m,
                   SimdPath path);

// out[j] = x[perm[j]], and acc[j] = acc[j] + x[perm[j]] mod q: the permutation of an
// NTT-form automorphism. The AVX-512 versions need every aligned block of 8 outputs to read
// one aligned block of 8 inputs (true of every automorphism permutation in NTT order for
// n >= 8, checked by Ring when it builds one): they load one cache line and permute its
// lanes instead of gathering 8 scattered words (~4x faster at n = 2^16).
void permute(const u64* x, const std::uint32_t* perm, u64* out, std::size_t n, SimdPath path);
void permute_add(const u64* x, const std::uint32_t* perm, u64* acc, std::size_t n, const Modulus& m, SimdPath path);

namespace detail {
void permute_blocks_avx512(const u64* x, const std::uint32_t* perm, u64* out, std::size_t n);
void permute_blocks_add_avx512(const u64* x, const std::uint32_t* perm, u64* acc, std::size_t n, u64 q);
void add_avx512(const u64* a, const u64* b, u64* out, std::size_t n, u64 q);
void sub_avx512(const u64* a, const u64* b, u64* out, std::size_t n, u64 q);
void add_constant_avx512(const u64* a, u64 c, u64* out, std::size_t n, u64 q);
void subtract_indexed_avx512(const u64* table, std::size_t table_size, const u64* index, u64* acc, std::size_t n,
                             u64 q);
void multiply_ifma(const u64* a, const u64* b, u64* out, std::size_t n, const Modulus& m);
// sum_t a[t][j] b[t][j] (+ out[j] with accumulate) mod q for q < 2^50 and terms <=
// kIfmaDotTerms: the products' low and high 52-bit halves summed in two registers, reduced
// once (the high sum, terms * 2^48 plus the low sum's carry, stays below 2^52).
constexpr std::size_t kIfmaDotTerms = 15;
void dot_product_ifma(const u64* const* a, const u64* const* b, std::size_t terms, u64* out, std::size_t n,
                      const Modulus& m, bool accumulate);
void multiply_add_ifma(const u64* a, const u64* b, u64* acc, std::size_t n, const Modulus& m);
void multiply_constant_ifma(const u64* a, u64 w, u64* out, std::size_t n, const Modulus& m);
void subtract_multiply_constant_ifma(const u64* a, const u64* b, u64 w, u64* out, std::size_t n, const Modulus& m);
void subtract_multiply_add_permute_ifma(const u64* a, const u64* b, u64 w, const u64* c,
                                        const std::uint32_t* perm, u64* out, std::size_t n, const Modulus& m);
void reduce_ifma(const u64* x, u64* out, std::size_t n, const Modulus& m);
void reduce_signed_ifma(const std::int64_t* x, u64* out, std::size_t n, const Modulus& m);
// acc[j] = sum_i y[i][j] * w[i] mod q for fixed w[i] (Shoup constants w_shoup52[i]);
// every y[i][j] < 2^50.
void dot_constant_ifma(const u64* const* y, const u64* w, const u64* w_shoup52, std::size_t terms, u64* out,
                       std::size_t n, const Modulus& m);
// Primes from 2^50 to 2^61 (kernels_avx512_wide.cpp); reduce_wide takes any 64-bit input,
// reduce_signed_wide any signed one, dot_constant_wide any y with 64-bit Shoup constants.
void multiply_wide(const u64* a, const u64* b, u64* out, std::size_t n, const Modulus& m);
void multiply_add_wide(const u64* a, const u64* b, u64* acc, std::size_t n, const Modulus& m);
void multiply_constant_wide(const u64* a, u64 w, u64* out, std::size_t n, const Modulus& m);
void subtract_multiply_constant_wide(const u64* a, const u64* b, u64 w, u64* out, std::size_t n, const Modulus& m);
void subtract_multiply_add_permute_wide(const u64* a, const u64* b, u64 w, const u64* c,
                                        const std::uint32_t* perm, u64* out, std::size_t n, const Modulus& m);
void reduce_wide(const u64* x, u64* out, std::size_t n, const Modulus& m);
void reduce_signed_wide(const std::int64_t* x, u64* out, std::size_t n, const Modulus& m);
void dot_constant_wide(const u64* const* y, const u64* w, const u64* w_shoup, std::size_t terms, u64* out,
                       std::size_t n, const Modulus& m);
// AVX2 with FMA, on double lanes (kernels_avx2.cpp), for primes below 2^50: x (< 2^52)
// as doubles; and out[j] = sum_t y[t][j] w[t] mod q for y[t][j] < 2^50 given as doubles,
// constants w[t] < q with w_over_q[t] = fl(w[t] / q).
void to_doubles_avx2(const u64* x, double* out, std::size_t n);
// sum_t a[t][j] b[t][j] (+ out[j] with accumulate) mod q, every input below q.
void dot_product_avx2(const u64* const* a, const u64* const* b, std::size_t terms, u64* out, std::size_t n,
                      const Modulus& m, bool accumulate);
// a w mod q for a < q; and subtract_multiply_add_permute's (a - b) w (+ c) with optional perm.
void multiply_constant_avx2(const u64* a, u64 w, u64* out, std::size_t n, const Modulus& m);
void subtract_multiply_add_permute_avx2(const u64* a, const u64* b, u64 w, const u64* c,
                                        const std::uint32_t* perm, u64* out, std::size_t n, const Modulus& m);
// x mod q in [0, q) for signed |x| < 2^52.
void reduce_signed_avx2(const std::int64_t* x, u64* out, std::size_t n, const Modulus& m);
// The additive kernels and permuted sums on AVX2's 64-bit integer lanes, for any prime.
void add_avx2(const u64* a, const u64* b, u64* out, std::size_t n, u64 q);
void sub_avx2(const u64* a, const u64* b, u64* out, std::size_t n, u64 q);
void add_constant_avx2(const u64* a, u64 c, u64* out, std::size_t n, u64 q);
void subtract_indexed_avx2(const u64* table, const u64* index, u64* acc, std::size_t n, u64 q);
void permute_add_avx2(const u64* x, const std::uint32_t* perm, u64* acc, std::size_t n, u64 q);
void dot_constant_avx2(const double* const* y, const double* w, const double* w_over_q, std::size_t terms,
                       u64* out, std::size_t n, const Modulus& m);
}  // namespace detail

}  // namespace pfhe::ring::kernels
