// Samplers for RLWE: uniform residues, ternary secrets and the discrete Gaussian error.
#pragma once
#include <cstdint>
#include <vector>

#include "ring/prng.h"
#include "ring/ring.h"

namespace pfhe::ring {

inline constexpr double kErrorStdDev = 3.2;
inline constexpr int kErrorBound = 19;  // ~6 sigma; the tail beyond it has mass < 2^-64

// Uniform modulo each prime of `ring`, for every limb of `out` (values are independent
// per limb, which is uniform modulo the product by the CRT). The NTT-form flag is kept:
// a uniform polynomial is uniform in either representation.
void sample_uniform(Prng& prng, const Ring& ring, Poly& out);

// Small signed polynomials.
std::vector<std::int64_t> sample_ternary_uniform(Prng& prng, std::size_t n);
// Exactly h non-zero coefficients, each +-1.
std::vector<std::int64_t> sample_ternary_hamming(Prng& prng, std::size_t n, std::size_t h);
// Discrete Gaussian with standard deviation kErrorStdDev, cut at +-kErrorBound
// (table sampling with a full scan of the table, so the time does not depend on the value).
std::vector<std::int64_t> sample_gaussian(Prng& prng, std::size_t n);

// Writes a small signed polynomial into the first out.limbs() limbs of `out`
// (coefficient form; the caller transforms if needed).
void set_small(const Ring& ring, const std::vector<std::int64_t>& coeffs, Poly& out);

}  // namespace pfhe::ring
