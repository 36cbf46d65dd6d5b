#include "ckks/keygen.h"

#include <stdexcept>
#include <string>

#include "ring/sampler.h"

namespace pfhe::ckks {

using ring::Poly;

namespace {

// A small polynomial (ternary or Gaussian) on Q (limbs_q limbs) and P, in NTT form.
QPPoly small_qp(const Context& ctx, const std::vector<std::int64_t>& coeffs, std::size_t limbs_q) {
  QPPoly out{ctx.ring_q().make_poly(limbs_q, false), ctx.ring_p().make_poly(ctx.ring_p().size(), false)};
  ring::set_small(ctx.ring_q(), coeffs, out.q);
  ring::set_small(ctx.ring_p(), coeffs, out.p);
  ctx.ring_q().to_ntt(out.q);
  ctx.ring_p().to_ntt(out.p);
  return out;
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
  secret_key_.s = small_qp(context, coeffs, context.max_level() + 1);
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
  pk.b = small_qp(context_, ring::sample_gaussian(prng, context_.n()), limbs);
  Poly as_q = rq.make_poly(limbs), as_p = rp.make_poly(rp.size());
  rq.multiply(pk.a.q, secret_key_.s.q, as_q);
  rp.multiply(pk.a.p, secret_key_.s.p, as_p);
  rq.sub(pk.b.q, as_q, pk.b.q);  // b = e - a*s
  rp.sub(pk.b.p, as_p, pk.b.p);
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
  const auto& rp = context_.ring_p();
  SwitchingKey key;
  key.a_seed = ring::random_seed();
  expand_switching_key_a(context_, key.a_seed, max_level, key.a);
  ring::Prng error_prng(ring::random_seed());
  const std::size_t limbs = max_level + 1;
  for (std::size_t j = 0; j < key.a.size(); ++j) {
    QPPoly bj = small_qp(context_, ring::sample_gaussian(error_prng, context_.n()), limbs);
    Poly as_q = rq.make_poly(limbs), as_p = rp.make_poly(rp.size());
    rq.multiply(key.a[j].q, under.q, as_q);
    rp.multiply(key.a[j].p, under.p, as_p);
    rq.sub(bj.q, as_q, bj.q);
    rp.sub(bj.p, as_p, bj.p);
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

GaloisKeys KeyGenerator::create_galois_keys(const std::map<long, std::size_t>& step_levels) const {
  std::map<std::uint64_t, std::size_t> element_levels;
  for (const auto& [step, level] : step_levels) {
    check_level(context_, level);
    const std::uint64_t g = galois_element_for_step(step, context_.n());
    if (g != 1) element_levels[g] = std::max(element_levels[g], level);
  }
  GaloisKeys keys;
  for (const auto& [g, level] : element_levels) keys.keys.emplace(g, create_galois_key(g, level));
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
