// A ring Z_Q[X]/(X^N + 1) for an ordered list of NTT primes. A Poly with k limbs is
// taken modulo the first k primes of its Ring, so one Ring serves every level.
#pragma once
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <vector>

#include "ring/modarith.h"
#include "ring/ntt.h"
#include "ring/poly.h"

namespace pfhe::ring {

// Whether all `n` words at `x` are below `q`: a loader's check of one limb, written without
// an early exit so that it vectorises (loaders check gigabytes of keys and diagonals).
inline bool limb_is_reduced(const u64* x, std::size_t n, u64 q) {
  bool reduced = true;
  for (std::size_t i = 0; i < n; ++i) reduced &= x[i] < q;
  return reduced;
}

class Ring {
 public:
  Ring(std::size_t n, const std::vector<u64>& primes);

  std::size_t n() const { return n_; }
  std::size_t size() const { return moduli_.size(); }
  const Modulus& modulus(std::size_t i) const { return moduli_[i]; }
  const std::vector<Modulus>& moduli() const { return moduli_; }
  const NttTables& ntt(std::size_t i) const { return *ntt_[i]; }

  Poly make_poly(std::size_t limbs, bool ntt_form = true) const { return Poly(n_, limbs, ntt_form); }
  // Unspecified contents, for outputs written in full before they are read.
  Poly make_output(std::size_t limbs, bool ntt_form = true) const {
    return Poly::uninitialized(n_, limbs, ntt_form);
  }

  void to_ntt(Poly& a) const;
  void from_ntt(Poly& a) const;

  // Element-wise, on the first min(limbs) limbs; `out` may alias an input.
  void add(const Poly& a, const Poly& b, Poly& out) const;
  void sub(const Poly& a, const Poly& b, Poly& out) const;
  void negate(const Poly& a, Poly& out) const;
  void multiply(const Poly& a, const Poly& b, Poly& out) const;       // NTT form
  void multiply_add(const Poly& a, const Poly& b, Poly& acc) const;   // acc += a * b
  // out = a * c_i on limb i (c_i already reduced modulo prime i).
  void multiply_scalar(const Poly& a, const std::vector<u64>& c, Poly& out) const;
  // out = a + c_i (the constant polynomial c_i on limb i): in NTT form every evaluation
  // moves by c_i, in coefficient form only the X^0 coefficient does.
  void add_scalar(const Poly& a, const std::vector<u64>& c, Poly& out) const;
  // out[j] = a[j] + c_i for every entry j of limb i, whatever the representation.
  void add_to_each(const Poly& a, const std::vector<u64>& c, Poly& out) const;

  // out = a(X^g) for odd g, on NTT-form polynomials (a permutation of evaluations).
  void automorphism_ntt(const Poly& a, std::uint64_t galois_element, Poly& out) const;
  // acc += phi_g(a), both NTT form (sums of rotations without a temporary).
  void automorphism_ntt_add(const Poly& a, std::uint64_t galois_element, Poly& acc) const;
  // The permutation used above: out[i] = a[perm[i]].
  const std::vector<std::uint32_t>& automorphism_permutation(std::uint64_t galois_element) const;

  // Checks that every coefficient of `a` is below its prime (used by loaders).
  bool is_reduced(const Poly& a) const;

 private:
  void check_limbs(const Poly& a, std::size_t limbs) const;

  std::size_t n_;
  std::vector<Modulus> moduli_;
  std::vector<std::unique_ptr<NttTables>> ntt_;
  mutable std::mutex perm_mutex_;
  mutable std::map<std::uint64_t, std::unique_ptr<std::vector<std::uint32_t>>> perm_cache_;
};

}  // namespace pfhe::ring
