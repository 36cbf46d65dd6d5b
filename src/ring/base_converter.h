// Fast RNS base conversion: x in basis B = {b_i} maps to x + u*B in basis C with
// 0 <= u < |B| (Bajard et al.). ModUp tolerates the u*B term (it vanishes against the
// gadget); ModDown asks for the exact variant, which estimates u in floating point
// (Halevi-Polyakov-Shoup) and removes it, because u would otherwise add a biased error.
#pragma once
#include <vector>

#include "ring/modarith.h"

namespace pfhe::ring {

class BaseConverter {
 public:
  BaseConverter(std::vector<Modulus> from, std::vector<Modulus> to);

  std::size_t from_size() const { return from_.size(); }
  std::size_t to_size() const { return to_.size(); }

  // in[i] points to n coefficients modulo from[i] (coefficient form, reduced);
  // out[k] receives n coefficients modulo to[k] for k < to_count (default: all).
  // With `exact`, the result is x itself (for x in [0, B); off by one B only when x/B is
  // within 2^-40 of an integer), plus offsets[k] (< to[k]) in every coefficient of out[k]
  // when offsets are given (exact only: folded into the exact correction's table, so free).
  void convert(const u64* const* in, u64* const* out, std::size_t n, std::size_t to_count,
               bool exact = false, const u64* offsets = nullptr) const;
  void convert(const u64* const* in, u64* const* out, std::size_t n) const {
    convert(in, out, n, to_.size());
  }

 private:
  void convert_row_scalar(const u64* y, std::size_t stride, const u64* hat, u64* z, std::size_t len,
                          const Modulus& c) const;
  std::vector<Modulus> from_, to_;
  static constexpr int kSplitBits = 26;
  struct IfmaTerm {
    std::size_t source;  // from-prime index
    bool high;           // the bits of y above kSplitBits (primes >= 2^50 only)
  };
  std::vector<u64> hat_inv_;                  // (B/b_i)^-1 mod b_i
  std::vector<u64> hat_mod_to_;               // (B/b_i) mod c_k, row k
  std::vector<u64> hat_mod_to_shoup_;         // their 64-bit Shoup constants (wide AVX-512 targets)
  std::vector<IfmaTerm> ifma_terms_;
  std::vector<u64> ifma_weights_, ifma_weights_shoup52_;  // per target row k, per IFMA term
  std::vector<double> avx2_weights_, avx2_weights_over_q_;  // the same weights as doubles, and w / c_k
  std::vector<u64> b_multiples_;              // u * B mod c_k for u = 0..|B|, row k
  std::vector<double> inv_from_;              // 1 / b_i
};

}  // namespace pfhe::ring
