#include "ckks/keygen.h"

#include <stdexcept>
#include <string>

#include "ring/parallel.h"
#include "ring/sampler.h"

namespace pfhe::ckks {

using ring::Poly;

namespace {

// b = e - a * s over Q_limbs x P with a fresh Gaussian e: an RLWE sample under s.
QPPoly rlwe_sample_b(const Context& ctx, ring::Prng& prng, const QPPoly& a, const QPPoly& s, std::size_t limbs) {
  QPPoly b = ctx.small_qp_poly(ring::sample_gaussian(prng, ctx.n()), limbs);
  Poly as_q = ctx.ring_q().make_output(limbs), as_p = ctx.ring_p().make_output(ctx.ring_p().size());
  ctx.ring_q().multiply(a.q, s.q, as_q);
  ctx.ring_p().multiply(a.p, s.p, as_p);
  ctx.ring_q().sub(b.q, as_q, b.q);
  ctx.ring_p().sub(b.p, as_p, b.p);
  return b;
}

void check_level(const Context& ctx, std::size_t level) {
  if (level > ctx.max_level())
    throw std::invalid_argument("key level " + std::to_string(level) + " above the top level " +
                                std::to_string(ctx.max_level()));
}

}  // namespace

KeyGenerator::KeyGenerator(const Context& context) : context_(context) {
  ring::Prng prng(ring::random_seed());
  const auto& params = context.params();
  const auto coeffs = params.secret() == SecretDistribution::kTernaryHamming
                          ? ring::sample_ternary_hamming(prng, context.n(),
                                                         static_cast<std::size_t>(params.hamming_weight()))
                          : ring::sample_ternary_uniform(prng, context.n());
  secret_key_.s = context.small_qp_poly(coeffs, context.max_level() + 1);
}

KeyGenerator::KeyGenerator(const Context& context, SecretKey secret_key)
    : context_(context), secret_key_(std::move(secret_key)) {
  if (secret_key_.s.q.limbs() != context.max_level() + 1 || secret_key_.s.p.limbs() != context.ring_p().size() ||
      secret_key_.s.q.n() != context.n())
    throw std::invalid_argument("secret key does not match the parameters");
}

PublicKey KeyGenerator::create_public_key() const {
  const auto& rq = context_.ring_q();
  const auto& rp = context_.ring_p();
  const std::size_t limbs = context_.max_level() + 1;
  ring::Prng prng(ring::random_seed());
  PublicKey pk;
  pk.a = QPPoly{rq.make_poly(limbs), rp.make_poly(rp.size())};
  ring::sample_uniform(prng, rq, pk.a.q);
  ring::sample_uniform(prng, rp, pk.a.p);
  pk.b = rlwe_sample_b(context_, prng, pk.a, secret_key_.s, limbs);
  return pk;
}

void expand_switching_key_a(const Context& ctx, const ring::Seed& seed, std::size_t max_level,
                            std::vector<QPPoly>& a) {
  ring::Prng prng(seed);
  a.clear();
  for (std::size_t j = 0; j < ctx.params().digits_at(max_level); ++j) {
    QPPoly aj{ctx.ring_q().make_poly(max_level + 1), ctx.ring_p().make_poly(ctx.ring_p().size())};
    ring::sample_uniform(prng, ctx.ring_q(), aj.q);
    ring::sample_uniform(prng, ctx.ring_p(), aj.p);
    a.push_back(std::move(aj));
  }
}

SwitchingKey KeyGenerator::create_switching_key(const Poly& s_prime, const QPPoly& under,
                                               std::size_t max_level) const {
  check_level(context_, max_level);
  if (s_prime.limbs() < max_level + 1 || !s_prime.ntt_form())
    throw std::invalid_argument("create_switching_key: target key must be NTT form up to the key level");
  const auto& rq = context_.ring_q();
  SwitchingKey key;
  key.a_seed = ring::random_seed();
  expand_switching_key_a(context_, key.a_seed, max_level, key.a);
  ring::Prng error_prng(ring::random_seed());
  const std::size_t limbs = max_level + 1;
  for (std::size_t j = 0; j < key.a.size(); ++j) {
    QPPoly bj = rlwe_sample_b(context_, error_prng, key.a[j], under, limbs);
    // Gadget P * [Q/Q_j * (Q/Q_j)^{-1}]_{Q_j}: P mod q_i on the digit's primes, 0 elsewhere.
    for (std::size_t i = context_.digit_begin(j); i < context_.digit_end(j, max_level); ++i) {
      const auto& m = rq.modulus(i);
      const ring::u64 g = context_.p_mod_q()[i], gs = ring::shoup(g, m.value());
      const ring::u64* sp = s_prime.limb(i);
      ring::u64* b = bj.q.limb(i);
      for (std::size_t k = 0; k < context_.n(); ++k)
        b[k] = ring::add_mod(b[k], ring::mul_shoup(sp[k], g, gs, m.value()), m.value());
    }
    key.b.push_back(std::move(bj));
  }
  return key;
}

Poly KeyGenerator::secret_up_to(std::size_t level) const {
  check_level(context_, level);
  Poly s = secret_key_.s.q;
  s.truncate(level + 1);
  return s;
}

RelinKey KeyGenerator::create_relin_key(std::size_t max_level) const {
  Poly s2 = secret_up_to(max_level);
  context_.ring_q().multiply(s2, s2, s2);
  return RelinKey{create_switching_key(s2, max_level)};
}

SwitchingKey KeyGenerator::create_galois_key(std::uint64_t galois_element, std::size_t max_level) const {
  const Poly s_q = secret_up_to(max_level);
  // phi^{-1} = phi_{g^{-1} mod 2N}; odd g has order dividing N in (Z/2NZ)*, so g^{-1} = g^(N-1).
  const std::uint64_t two_n = 2 * context_.n();
  std::uint64_t g_inv = 1;
  for (std::uint64_t k = 0; k + 1 < context_.n(); ++k) g_inv = g_inv * galois_element % two_n;
  QPPoly under{context_.ring_q().make_poly(context_.max_level() + 1), context_.ring_p().make_poly(context_.ring_p().size())};
  context_.ring_q().automorphism_ntt(secret_key_.s.q, g_inv, under.q);
  context_.ring_p().automorphism_ntt(secret_key_.s.p, g_inv, under.p);
  return create_switching_key(s_q, under, max_level);
}

std::map<std::uint64_t, std::size_t> galois_element_levels(const Context& context,
                                                           const std::map<long, std::size_t>& step_levels) {
  std::map<std::uint64_t, std::size_t> element_levels;
  for (const auto& [step, level] : step_levels) {
    check_level(context, level);
    const std::uint64_t g = galois_element_for_step(step, context.n());
    if (g != 1) element_levels[g] = std::max(element_levels[g], level);
  }
  return element_levels;
}

GaloisKeys KeyGenerator::create_galois_keys(const std::map<long, std::size_t>& step_levels) const {
  const std::map<std::uint64_t, std::size_t> element_levels = galois_element_levels(context_, step_levels);
  // Keys are independent (own seeds, own error streams): made in parallel, inserted in order.
  const std::vector<std::pair<std::uint64_t, std::size_t>> todo(element_levels.begin(), element_levels.end());
  std::vector<SwitchingKey> made(todo.size());
  ring::parallel_for(todo.size(), [&](std::size_t i) { made[i] = create_galois_key(todo[i].first, todo[i].second); });
  GaloisKeys keys;
  for (std::size_t i = 0; i < todo.size(); ++i) keys.keys.emplace(todo[i].first, std::move(made[i]));
  return keys;
}

GaloisKeys KeyGenerator::create_galois_keys(const std::vector<long>& steps, bool conjugate,
                                            std::size_t max_level) const {
  GaloisKeys keys;
  for (long step : steps) {
    const std::uint64_t g = galois_element_for_step(step, context_.n());
    if (g != 1 && !keys.has(g)) keys.keys.emplace(g, create_galois_key(g, max_level));
  }
  if (conjugate) {
    const std::uint64_t g = galois_element_conjugate(context_.n());
    keys.keys.emplace(g, create_galois_key(g, max_level));
  }
  return keys;
}

}  // namespace pfhe::ckks
