// Hybrid key switching (Han-Ki): decompose a polynomial into digits of alpha primes, raise
// each digit to Q_l x P (ModUp), take the inner product with a switching key, and divide
// by P (ModDown). The decomposition can be reused for many keys (hoisting).
#pragma once
#include <cstdint>
#include <vector>

#include "ckks/context.h"
#include "ckks/keys.h"

namespace pfhe::ckks {

struct Decomposition {
  std::vector<QPPoly> digits;  // NTT form over Q_level x P
  std::size_t level = 0;
};

// c: NTT form at some level l (l+1 limbs).
Decomposition decompose(const Context& ctx, const ring::Poly& c);

// (out0, out1) = sum_j d_j * (b_j, a_j) over Q_level x P (NTT form), not yet divided by P:
// callers that add several key-switch results divide their sum once (RotationSum).
void key_switch_product(const Context& ctx, const Decomposition& d, const SwitchingKey& key, QPPoly& out0,
                        QPPoly& out1);

// (out0, out1) = ModDown(sum_j d_j * (b_j, a_j)) at the decomposition's level (NTT form).
void key_switch_inner(const Context& ctx, const Decomposition& d, const SwitchingKey& key, ring::Poly& out0,
                      ring::Poly& out1);

// x += P c over Q_l x P, for c over Q_l (NTT form): P c is 0 modulo P's primes, so only x's
// Q limbs change. How a ciphertext's own part joins a key switch's sum before the division
// by P (relinearization, rotation sums).
void add_p_multiple(const Context& ctx, const ring::Poly& c, QPPoly& x);

// ModDown: (x over Q_l x P, NTT) -> round(x / P) over Q_l (NTT); with `addend`, + addend
// (NTT, Q_l); with `perm`, the result's coefficients permuted as ring::kernels::permute (an
// automorphism in NTT form). A hoisted rotation's phi(c0 + u0) in the division's last pass.
void mod_down(const Context& ctx, const QPPoly& x, ring::Poly& out, const ring::Poly* addend = nullptr,
              const std::vector<std::uint32_t>* perm = nullptr);
// ModDown and the rescale after it at once: (x over Q_l x P, NTT, l >= 1) -> round(x / (P q_l))
// over Q_{l-1} (NTT): one exact base conversion from (P, q_l) where the two steps take
// one from P and one from q_l (l forward NTTs fewer per polynomial), and one rounding.
void mod_down_rescale(const Context& ctx, const QPPoly& x, ring::Poly& out);

}  // namespace pfhe::ckks
