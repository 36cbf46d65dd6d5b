#include "ckks/ring_switch.h"

#include <stdexcept>
#include <string>

#include "ckks/key_switch.h"
#include "ckks/keygen.h"

namespace pfhe::ckks {

namespace {

Parameters restricted(const Parameters& big, int log_n, std::size_t level, std::size_t special_primes) {
  if (big.log_n() < 2 || level > big.max_level() || special_primes == 0 || special_primes > big.p().size())
    throw std::invalid_argument("ring switch: level " + std::to_string(level) + " and " +
                                std::to_string(special_primes) + " special primes do not fit " + big.describe());
  std::vector<std::uint64_t> q(big.q().begin(), big.q().begin() + static_cast<std::ptrdiff_t>(level + 1));
  std::vector<std::uint64_t> p(big.p().begin(), big.p().begin() + static_cast<std::ptrdiff_t>(special_primes));
  return Parameters::from_primes(log_n, std::move(q), std::move(p), 0, big.secret(), big.hamming_weight(),
                                 big.default_scale(), big.insecure());
}

// The integer coefficients (-1, 0, 1) of a ternary secret, from its first limb.
std::vector<std::int64_t> ternary_coefficients(const Context& ctx, const SecretKey& secret) {
  ring::Poly s = secret.s.q;
  s.truncate(1);
  ctx.ring_q().from_ntt(s);
  const ring::u64 q0 = ctx.ring_q().modulus(0).value();
  std::vector<std::int64_t> out(ctx.n());
  for (std::size_t i = 0; i < ctx.n(); ++i) {
    const ring::u64 v = s.limb(0)[i];
    if (v > 1 && v != q0 - 1) throw std::invalid_argument("ring switch key: the half-ring secret is not ternary");
    out[i] = v == 0 ? 0 : v == 1 ? 1 : -1;
  }
  return out;
}

void check_pair(const Context& switch_ctx, const Context& half_ctx) {
  const Parameters& a = switch_ctx.params();
  const Parameters& b = half_ctx.params();
  if (a.log_n() != b.log_n() + 1 || a.q() != b.q() || a.p() != b.p())
    throw std::invalid_argument("ring switch: the switch-key and half-ring parameters do not belong together");
}

}  // namespace

Parameters half_ring_parameters(const Parameters& big, std::size_t level, std::size_t special_primes) {
  return restricted(big, big.log_n() - 1, level, special_primes);
}

Parameters switch_key_parameters(const Parameters& big, std::size_t level, std::size_t special_primes) {
  return restricted(big, big.log_n(), level, special_primes);
}

SwitchingKey create_ring_switch_key(const Context& switch_ctx, const SecretKey& big_secret, const Context& half_ctx,
                                    const SecretKey& half_secret) {
  check_pair(switch_ctx, half_ctx);
  const std::size_t limbs = switch_ctx.max_level() + 1, special = switch_ctx.ring_p().size();
  if (big_secret.s.q.n() != switch_ctx.n() || big_secret.s.q.limbs() < limbs || big_secret.s.p.limbs() < special ||
      half_secret.s.q.n() != half_ctx.n() || half_secret.s.q.limbs() != limbs)
    throw std::invalid_argument("ring switch key: the secrets do not match the parameters");
  // s restricted to the switch context's primes (the same primes, in the same order).
  SecretKey from{QPPoly{big_secret.s.q, big_secret.s.p}};
  from.s.q.truncate(limbs);
  from.s.p.truncate(special);
  // t(X) = s'(X^2): the half secret's coefficients on the even powers.
  const std::vector<std::int64_t> half = ternary_coefficients(half_ctx, half_secret);
  std::vector<std::int64_t> spread(switch_ctx.n(), 0);
  for (std::size_t i = 0; i < half.size(); ++i) spread[2 * i] = half[i];
  const QPPoly to = switch_ctx.small_qp_poly(spread, limbs);
  const KeyGenerator keygen(switch_ctx, from);
  return keygen.create_switching_key(from.s.q, to, switch_ctx.max_level());
}

Ciphertext switch_to_half_ring(const Context& switch_ctx, const Context& half_ctx, const SwitchingKey& key,
                               Ciphertext ct) {
  check_pair(switch_ctx, half_ctx);
  const std::size_t level = switch_ctx.max_level(), n = switch_ctx.n();
  if (ct.size() != 2 || ct.polys[0].n() != n || ct.level() < level)
    throw std::invalid_argument("ring switch: needs a relinearized ciphertext of the big ring at level >= " +
                                std::to_string(level));
  if (key.max_level() != level) throw std::invalid_argument("ring switch: the key is for another level");
  for (auto& p : ct.polys) p.truncate(level + 1);
  ring::Poly k0, k1;
  key_switch_inner(switch_ctx, decompose(switch_ctx, ct.polys[1]), key, k0, k1);
  switch_ctx.ring_q().add(ct.polys[0], k0, k0);
  Ciphertext out{{}, ct.scale, static_cast<int>(half_ctx.params().log_n()) - 1};
  for (ring::Poly* c : {&k0, &k1}) {
    switch_ctx.ring_q().from_ntt(*c);
    ring::Poly even = half_ctx.ring_q().make_output(level + 1, false);
    for (std::size_t l = 0; l <= level; ++l)
      for (std::size_t i = 0; i < n / 2; ++i) even.limb(l)[i] = c->limb(l)[2 * i];
    half_ctx.ring_q().to_ntt(even);
    out.polys.push_back(std::move(even));
  }
  return out;
}

}  // namespace pfhe::ckks
