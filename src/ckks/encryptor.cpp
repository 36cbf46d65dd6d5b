#include "ckks/encryptor.h"

#include <stdexcept>

#include "ckks/key_switch.h"
#include "ring/sampler.h"

namespace pfhe::ckks {

using ring::Poly;

namespace {
// out = ModDown(u * k + e) over Q_limbs: the public-key product computed over Q x P and
// divided by P, so the fresh noise is the rounding error, not u*e.
void encrypt_component(const Context& ctx, const QPPoly& u, const QPPoly& key, const QPPoly& e, Poly& out) {
  const std::size_t limbs = u.q.limbs();
  QPPoly acc{ctx.ring_q().make_poly(limbs), ctx.ring_p().make_poly(ctx.ring_p().size())};
  ctx.ring_q().multiply(u.q, key.q, acc.q);
  ctx.ring_q().add(acc.q, e.q, acc.q);
  ctx.ring_p().multiply(u.p, key.p, acc.p);
  ctx.ring_p().add(acc.p, e.p, acc.p);
  mod_down(ctx, acc, out);
}

Poly uniform_from_seed(const Context& ctx, const ring::Seed& seed, std::size_t limbs) {
  ring::Prng prng(seed);
  Poly a = ctx.ring_q().make_poly(limbs);
  ring::sample_uniform(prng, ctx.ring_q(), a);
  return a;
}
}  // namespace

Encryptor::Encryptor(const Context& context, const PublicKey& public_key)
    : context_(context), public_key_(&public_key) {
  if (public_key.b.q.limbs() != context.max_level() + 1 || public_key.b.q.n() != context.n() ||
      public_key.b.p.limbs() != context.ring_p().size())
    throw std::invalid_argument("public key does not match the parameters");
}

Encryptor::Encryptor(const Context& context, const SecretKey& secret_key)
    : context_(context), secret_key_(&secret_key) {
  if (secret_key.s.q.limbs() != context.max_level() + 1 || secret_key.s.q.n() != context.n())
    throw std::invalid_argument("secret key does not match the parameters");
}

void Encryptor::check_plaintext(const Plaintext& pt) const {
  if (pt.poly.n() != context_.n() || pt.poly.limbs() == 0 || pt.level() > context_.max_level() ||
      !pt.poly.ntt_form())
    throw std::invalid_argument("plaintext does not belong to this context");
}

Ciphertext Encryptor::encrypt(const Plaintext& pt) const {
  check_plaintext(pt);
  const auto& rq = context_.ring_q();
  const std::size_t limbs = pt.level() + 1;
  ring::Prng prng(ring::random_seed());
  Ciphertext ct{moved_polys(rq.make_poly(limbs), rq.make_poly(limbs)), pt.scale, pt.log_slots};
  if (public_key_) {
    const QPPoly u = context_.small_qp_poly(ring::sample_ternary_uniform(prng, context_.n()), limbs);
    const QPPoly e0 = context_.small_qp_poly(ring::sample_gaussian(prng, context_.n()), limbs);
    const QPPoly e1 = context_.small_qp_poly(ring::sample_gaussian(prng, context_.n()), limbs);
    encrypt_component(context_, u, public_key_->b, e0, ct.polys[0]);
    encrypt_component(context_, u, public_key_->a, e1, ct.polys[1]);
  } else {
    const SeededCiphertext s = encrypt_seeded(pt);
    return expand_seeded(context_, s);
  }
  rq.add(ct.polys[0], pt.poly, ct.polys[0]);
  return ct;
}

SeededCiphertext Encryptor::encrypt_seeded(const Plaintext& pt) const {
  if (!secret_key_) throw std::logic_error("seeded encryption needs the secret key");
  check_plaintext(pt);
  const auto& rq = context_.ring_q();
  const std::size_t limbs = pt.level() + 1;
  SeededCiphertext out{rq.make_poly(limbs), ring::random_seed(), pt.scale, pt.log_slots};
  const Poly a = uniform_from_seed(context_, out.seed, limbs);
  ring::Prng prng(ring::random_seed());
  const Poly e = context_.small_poly(ring::sample_gaussian(prng, context_.n()), limbs);
  rq.multiply(a, secret_key_->s.q, out.c0);
  rq.sub(e, out.c0, out.c0);  // c0 = e - a*s
  rq.add(out.c0, pt.poly, out.c0);
  return out;
}

Ciphertext expand_seeded(const Context& context, const SeededCiphertext& seeded) {
  const std::size_t limbs = seeded.c0.limbs();
  if (limbs == 0 || limbs > context.max_level() + 1) throw std::invalid_argument("seeded ciphertext level out of range");
  return Ciphertext{moved_polys(seeded.c0, uniform_from_seed(context, seeded.seed, limbs)), seeded.scale,
                    seeded.log_slots};
}

Decryptor::Decryptor(const Context& context, const SecretKey& secret_key)
    : context_(context), secret_key_(secret_key) {
  if (secret_key.s.q.limbs() != context.max_level() + 1 || secret_key.s.q.n() != context.n())
    throw std::invalid_argument("secret key does not match the parameters");
}

Plaintext Decryptor::decrypt(const Ciphertext& ct) const {
  const auto& rq = context_.ring_q();
  if (ct.size() < 2 || ct.polys[0].n() != context_.n() || ct.level() > context_.max_level())
    throw std::invalid_argument("ciphertext does not belong to this context");
  const std::size_t limbs = ct.level() + 1;
  Plaintext pt{ct.polys.back(), ct.scale, ct.log_slots};
  // Horner in s: ((c_k s + c_{k-1}) s + ...) + c_0.
  for (std::size_t k = ct.size() - 1; k-- > 0;) {
    rq.multiply(pt.poly, secret_key_.s.q, pt.poly);
    rq.add(pt.poly, ct.polys[k], pt.poly);
  }
  pt.poly.truncate(limbs);
  return pt;
}

}  // namespace pfhe::ckks
