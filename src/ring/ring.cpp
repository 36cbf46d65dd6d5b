#include "ring/ring.h"

#include "ring/kernels.h"

#include <algorithm>
#include <stdexcept>
#include <string>

#include <omp.h>

namespace pfhe::ring {

Ring::Ring(std::size_t n, const std::vector<u64>& primes) : n_(n) {
  // Checked here, not only by NttTables: an exception escaping the parallel loop below
  // would terminate the process instead of reaching the caller.
  if (n < 16 || (n & (n - 1)) != 0)
    throw std::invalid_argument("ring degree must be a power of two >= 16, got " + std::to_string(n));
  for (u64 p : primes) {
    moduli_.emplace_back(p);
    if ((p - 1) % (2 * n) != 0)
      throw std::invalid_argument("prime " + std::to_string(p) + " is not 1 mod 2N");
  }
  ntt_.resize(primes.size());
  // Twiddle tables are independent per prime; build them in parallel.
#pragma omp parallel for schedule(dynamic)
  for (std::size_t i = 0; i < primes.size(); ++i)
    ntt_[i] = std::make_unique<NttTables>(n, moduli_[i]);
}

void Ring::check_limbs(const Poly& a, std::size_t limbs) const {
  if (a.n() != n_ || limbs > moduli_.size() || a.limbs() < limbs)
    throw std::invalid_argument("polynomial shape (" + std::to_string(a.n()) + " x " +
                                std::to_string(a.limbs()) + ") does not fit ring of degree " +
                                std::to_string(n_) + " with " + std::to_string(moduli_.size()) +
                                " primes");
}

void Ring::to_ntt(Poly& a) const {
  check_limbs(a, a.limbs());
  if (a.ntt_form()) throw std::logic_error("to_ntt: polynomial is already in NTT form");
  const SimdPath path = default_simd_path();
#pragma omp parallel for if (a.limbs() > 1 && !omp_in_parallel())
  for (std::size_t i = 0; i < a.limbs(); ++i) ntt_[i]->forward(a.limb(i), path);
  a.set_ntt_form(true);
}

void Ring::from_ntt(Poly& a) const {
  check_limbs(a, a.limbs());
  if (!a.ntt_form()) throw std::logic_error("from_ntt: polynomial is already in coefficient form");
  const SimdPath path = default_simd_path();
#pragma omp parallel for if (a.limbs() > 1 && !omp_in_parallel())
  for (std::size_t i = 0; i < a.limbs(); ++i) ntt_[i]->inverse(a.limb(i), path);
  a.set_ntt_form(false);
}

namespace {
template <typename F>
void for_each_limb(const Ring& r, std::size_t limbs, F&& f) {
  for (std::size_t i = 0; i < limbs; ++i) f(i, r.modulus(i));
}
}  // namespace

void Ring::add(const Poly& a, const Poly& b, Poly& out) const {
  const std::size_t limbs = std::min(a.limbs(), b.limbs());
  check_limbs(a, limbs); check_limbs(b, limbs); check_limbs(out, limbs);
  const SimdPath path = default_simd_path();
  for_each_limb(*this, limbs, [&](std::size_t i, const Modulus& m) {
    kernels::add(a.limb(i), b.limb(i), out.limb(i), n_, m, path);
  });
}

void Ring::sub(const Poly& a, const Poly& b, Poly& out) const {
  const std::size_t limbs = std::min(a.limbs(), b.limbs());
  check_limbs(a, limbs); check_limbs(b, limbs); check_limbs(out, limbs);
  const SimdPath path = default_simd_path();
  for_each_limb(*this, limbs, [&](std::size_t i, const Modulus& m) {
    kernels::sub(a.limb(i), b.limb(i), out.limb(i), n_, m, path);
  });
}

void Ring::negate(const Poly& a, Poly& out) const {
  check_limbs(out, a.limbs());
  for_each_limb(*this, a.limbs(), [&](std::size_t i, const Modulus& m) {
    const u64 q = m.value();
    const u64* x = a.limb(i);
    u64* z = out.limb(i);
    for (std::size_t j = 0; j < n_; ++j) z[j] = neg_mod(x[j], q);
  });
}

void Ring::multiply(const Poly& a, const Poly& b, Poly& out) const {
  const std::size_t limbs = std::min(a.limbs(), b.limbs());
  check_limbs(a, limbs); check_limbs(b, limbs); check_limbs(out, limbs);
  const SimdPath path = default_simd_path();
  for_each_limb(*this, limbs, [&](std::size_t i, const Modulus& m) {
    kernels::multiply(a.limb(i), b.limb(i), out.limb(i), n_, m, path);
  });
}

void Ring::multiply_add(const Poly& a, const Poly& b, Poly& acc) const {
  const std::size_t limbs = std::min(a.limbs(), b.limbs());
  check_limbs(a, limbs); check_limbs(b, limbs); check_limbs(acc, limbs);
  const SimdPath path = default_simd_path();
  for_each_limb(*this, limbs, [&](std::size_t i, const Modulus& m) {
    kernels::multiply_add(a.limb(i), b.limb(i), acc.limb(i), n_, m, path);
  });
}

void Ring::multiply_scalar(const Poly& a, const std::vector<u64>& c, Poly& out) const {
  check_limbs(out, a.limbs());
  if (c.size() < a.limbs()) throw std::invalid_argument("multiply_scalar: too few constants");
  const SimdPath path = default_simd_path();
  for_each_limb(*this, a.limbs(), [&](std::size_t i, const Modulus& m) {
    kernels::multiply_constant(a.limb(i), c[i], out.limb(i), n_, m, path);
  });
}

void Ring::add_to_each(const Poly& a, const std::vector<u64>& c, Poly& out) const {
  check_limbs(out, a.limbs());
  if (c.size() < a.limbs()) throw std::invalid_argument("add_to_each: too few constants");
  const SimdPath path = default_simd_path();
  for_each_limb(*this, a.limbs(), [&](std::size_t i, const Modulus& m) {
    kernels::add_constant(a.limb(i), c[i], out.limb(i), n_, m, path);
  });
}

void Ring::add_scalar(const Poly& a, const std::vector<u64>& c, Poly& out) const {
  if (a.ntt_form()) return add_to_each(a, c, out);
  check_limbs(out, a.limbs());
  if (c.size() < a.limbs()) throw std::invalid_argument("add_scalar: too few constants");
  for (std::size_t i = 0; i < a.limbs(); ++i) {
    if (out.limb(i) != a.limb(i)) std::copy(a.limb(i), a.limb(i) + n_, out.limb(i));
    out.limb(i)[0] = add_mod(a.limb(i)[0], c[i], moduli_[i].value());
  }
}

const std::vector<std::uint32_t>& Ring::automorphism_permutation(std::uint64_t g) const {
  const std::uint64_t two_n = 2 * n_;
  if ((g & 1) == 0 || g >= two_n)
    throw std::invalid_argument("Galois element must be odd and below 2N");
  std::lock_guard lock(perm_mutex_);
  auto& slot = perm_cache_[g];
  if (!slot) {
    const int log_n = __builtin_ctzll(n_);
    auto perm = std::make_unique<std::vector<std::uint32_t>>(n_);
    for (std::size_t i = 0; i < n_; ++i) {
      const std::uint64_t exponent = 2 * bit_reverse(i, log_n) + 1;
      const std::uint64_t image = (exponent * g) % two_n;  // odd
      (*perm)[i] = static_cast<std::uint32_t>(bit_reverse((image - 1) / 2, log_n));
    }
    // kernels::permute's vector path relies on it: in natural order the map is affine
    // (k -> g k + (g - 1) / 2 mod n), so after bit reversal every aligned block of 8
    // outputs reads one aligned block of 8 inputs.
    for (std::size_t i = 0; n_ % 8 == 0 && i < n_; ++i)
      if (((*perm)[i] >> 3) != ((*perm)[i & ~std::size_t{7}] >> 3))
        throw std::logic_error("automorphism permutation without 8-blocks");
    slot = std::move(perm);
  }
  return *slot;
}

void Ring::automorphism_ntt(const Poly& a, std::uint64_t g, Poly& out) const {
  if (!a.ntt_form()) throw std::logic_error("automorphism_ntt needs an NTT-form polynomial");
  if (&a == &out) throw std::invalid_argument("automorphism_ntt cannot work in place");
  check_limbs(out, a.limbs());
  const auto& perm = automorphism_permutation(g);
  const SimdPath path = default_simd_path();
  for (std::size_t i = 0; i < a.limbs(); ++i) kernels::permute(a.limb(i), perm.data(), out.limb(i), n_, path);
  out.set_ntt_form(true);
}

void Ring::automorphism_ntt_add(const Poly& a, std::uint64_t g, Poly& acc) const {
  if (!a.ntt_form() || !acc.ntt_form()) throw std::logic_error("automorphism_ntt_add needs NTT-form polynomials");
  if (&a == &acc) throw std::invalid_argument("automorphism_ntt_add cannot work in place");
  check_limbs(a, acc.limbs());
  check_limbs(acc, acc.limbs());
  const auto& perm = automorphism_permutation(g);
  const SimdPath path = default_simd_path();
  for (std::size_t i = 0; i < acc.limbs(); ++i)
    kernels::permute_add(a.limb(i), perm.data(), acc.limb(i), n_, moduli_[i], path);
}

bool Ring::is_reduced(const Poly& a) const {
  if (a.n() != n_ || a.limbs() > moduli_.size()) return false;
  for (std::size_t i = 0; i < a.limbs(); ++i)
    if (!limb_is_reduced(a.limb(i), n_, moduli_[i].value())) return false;
  return true;
}

}  // namespace pfhe::ring
