// Negacyclic number-theoretic transform over Z_q[X]/(X^N + 1) with Harvey's lazy
// butterflies. The forward transform maps coefficients to evaluations at the odd powers of
// a primitive 2N-th root psi, in bit-reversed order: out[i] = a(psi^(2*bitrev(i)+1)).
#pragma once
#include <cstddef>
#include <cstdint>
#include <vector>

#include "ring/cpu.h"
#include "ring/modarith.h"

namespace pfhe::ring {

class NttTables {
 public:
  NttTables(std::size_t n, const Modulus& modulus);

  std::size_t n() const { return n_; }
  int log_n() const { return log_n_; }
  const Modulus& modulus() const { return modulus_; }
  u64 psi() const { return psi_; }

  // In place; input and output in [0, q). `path` must be supported by the CPU
  // (std::invalid_argument otherwise); on the AVX-512 IFMA path a prime of 2^50 or more
  // runs 64-bit AVX-512 lanes instead of the 52-bit IFMA ones.
  void forward(u64* a, SimdPath path) const;
  void inverse(u64* a, SimdPath path) const;
  void forward(u64* a) const { forward(a, default_simd_path()); }
  // out = forward(x mod q) for signed x with |x| < 2^magnitude_bits (magnitude_bits <= 63).
  // On the IFMA and AVX2 paths (primes below 2^50, magnitude_bits <= 52; IFMA n >= 64) the
  // reduction runs inside the first pass of the transform instead of in a pass of its own;
  // the result is the same bits.
  void forward_from_signed(const std::int64_t* x, int magnitude_bits, u64* out, SimdPath path) const;
  void inverse(u64* a) const { inverse(a, default_simd_path()); }

  // Twiddles, bit-reversed: root_powers[k] = psi^bitrev(k), inv_root_powers[k] = psi^-bitrev(k).
  const std::vector<u64>& root_powers() const { return root_powers_; }
  const std::vector<u64>& root_powers_shoup() const { return root_powers_shoup_; }
  const std::vector<u64>& inv_root_powers() const { return inv_root_powers_; }
  const std::vector<u64>& inv_root_powers_shoup() const { return inv_root_powers_shoup_; }
  u64 n_inv() const { return n_inv_; }
  u64 n_inv_shoup() const { return n_inv_shoup_; }

  // IFMA data: Shoup constants with 52-bit precision.
  const std::vector<u64>& root_powers_shoup52() const { return root_powers_shoup52_; }
  const std::vector<u64>& inv_root_powers_shoup52() const { return inv_root_powers_shoup52_; }
  u64 n_inv_shoup52() const { return n_inv_shoup52_; }

 private:
  std::size_t n_;
  int log_n_;
  Modulus modulus_;
  u64 psi_;
  std::vector<u64> root_powers_, root_powers_shoup_, inv_root_powers_, inv_root_powers_shoup_;
  std::vector<u64> root_powers_shoup52_, inv_root_powers_shoup52_;
  u64 n_inv_, n_inv_shoup_, n_inv_shoup52_ = 0;
};

std::size_t bit_reverse(std::size_t x, int bits);

// Kernels (one per SIMD path); called through NttTables.
namespace detail {
void forward_stages_scalar(const NttTables& t, u64* a, std::size_t t_first, std::size_t t_last);
void inverse_stages_scalar(const NttTables& t, u64* a, std::size_t t_first, std::size_t t_last);
void ntt_forward_scalar(const NttTables& t, u64* a);
void ntt_inverse_scalar(const NttTables& t, u64* a);
void ntt_forward_avx2(const NttTables& t, u64* a);
void ntt_inverse_avx2(const NttTables& t, u64* a);
// AVX-512: IFMA lanes for primes below 2^50, 64-bit lanes for larger ones.
void ntt_forward_avx512(const NttTables& t, u64* a);
void ntt_inverse_avx512(const NttTables& t, u64* a);
void ntt_forward_signed_ifma(const NttTables& t, const std::int64_t* x, u64* a);  // n >= 64, primes < 2^50
void ntt_forward_signed_avx2(const NttTables& t, const std::int64_t* x, u64* a);  // primes < 2^50, |x| < 2^52
}  // namespace detail

}  // namespace pfhe::ring
