#include "ckks/evaluator.h"

#include <omp.h>

#include <cmath>
#include <stdexcept>
#include <string>

#include "ckks/key_switch.h"
#include "ring/kernels.h"
#include "ring/modarith.h"
#include "ring/parallel.h"

namespace pfhe::ckks {

using ring::Poly;
using ring::u64;

namespace {
constexpr double kScaleTolerance = 1e-9;

bool same_scale(double a, double b) { return std::fabs(a - b) <= kScaleTolerance * std::max(a, b); }

std::string level_scale(const Ciphertext& c) {
  return "level " + std::to_string(c.level()) + ", scale 2^" + std::to_string(std::log2(c.scale));
}
}  // namespace

Evaluator::Evaluator(const Context& context, const RelinKey* relin_key, const GaloisKeys* galois_keys)
    : context_(context), relin_key_(relin_key), galois_keys_(galois_keys) {}

void Evaluator::check_ciphertext(const Ciphertext& a, const char* op) const {
  if (a.size() < 2 || a.polys[0].n() != context_.n() || a.level() > context_.max_level())
    throw std::invalid_argument(std::string(op) + ": ciphertext does not belong to this context");
  for (const auto& p : a.polys)
    if (p.limbs() != a.level() + 1 || !p.ntt_form())
      throw std::invalid_argument(std::string(op) + ": malformed ciphertext");
}

void Evaluator::check_compatible(const Ciphertext& a, const Ciphertext& b, const char* op) const {
  check_ciphertext(a, op);
  check_ciphertext(b, op);
  if (a.level() != b.level() || !same_scale(a.scale, b.scale))
    throw std::invalid_argument(std::string(op) + ": operands differ (" + level_scale(a) + " vs " +
                                level_scale(b) + "); align them with drop_to_level or rescale");
  if (a.log_slots != b.log_slots) throw std::invalid_argument(std::string(op) + ": slot counts differ");
}

void Evaluator::add_inplace(Ciphertext& a, const Ciphertext& b) const {
  check_compatible(a, b, "add");
  if (a.size() < b.size()) a.polys.resize(b.size(), context_.ring_q().make_poly(a.level() + 1));
  for (std::size_t k = 0; k < b.size(); ++k) context_.ring_q().add(a.polys[k], b.polys[k], a.polys[k]);
}

void Evaluator::sub_inplace(Ciphertext& a, const Ciphertext& b) const {
  check_compatible(a, b, "sub");
  if (a.size() < b.size()) a.polys.resize(b.size(), context_.ring_q().make_poly(a.level() + 1));
  for (std::size_t k = 0; k < b.size(); ++k) context_.ring_q().sub(a.polys[k], b.polys[k], a.polys[k]);
}

void Evaluator::negate_inplace(Ciphertext& a) const {
  check_ciphertext(a, "negate");
  for (auto& p : a.polys) context_.ring_q().negate(p, p);
}

Ciphertext Evaluator::add(const Ciphertext& a, const Ciphertext& b) const {
  Ciphertext r = a;
  add_inplace(r, b);
  return r;
}

Ciphertext Evaluator::sub(const Ciphertext& a, const Ciphertext& b) const {
  Ciphertext r = a;
  sub_inplace(r, b);
  return r;
}

namespace {
void check_plain(const Context& ctx, const Ciphertext& a, const Plaintext& p, const char* op, bool need_scale) {
  if (p.poly.n() != ctx.n() || !p.poly.ntt_form() || p.poly.limbs() < a.level() + 1)
    throw std::invalid_argument(std::string(op) + ": plaintext level " + std::to_string(p.poly.limbs() - 1) +
                                " is below the ciphertext level " + std::to_string(a.level()));
  if (need_scale && !same_scale(a.scale, p.scale))
    throw std::invalid_argument(std::string(op) + ": plaintext scale differs from the ciphertext scale");
}
}  // namespace

void Evaluator::add_plain_inplace(Ciphertext& a, const Plaintext& p) const {
  check_ciphertext(a, "add_plain");
  check_plain(context_, a, p, "add_plain", true);
  context_.ring_q().add(a.polys[0], p.poly, a.polys[0]);
}

void Evaluator::sub_plain_inplace(Ciphertext& a, const Plaintext& p) const {
  check_ciphertext(a, "sub_plain");
  check_plain(context_, a, p, "sub_plain", true);
  context_.ring_q().sub(a.polys[0], p.poly, a.polys[0]);
}

void Evaluator::multiply_plain_inplace(Ciphertext& a, const Plaintext& p) const {
  check_ciphertext(a, "multiply_plain");
  check_plain(context_, a, p, "multiply_plain", false);
  for (auto& c : a.polys) context_.ring_q().multiply(c, p.poly, c);
  a.scale *= p.scale;
}

namespace {
// round(x) modulo each of the first `limbs` primes.
std::vector<u64> constant_residues(const Context& ctx, double x, std::size_t limbs) {
  if (!std::isfinite(x)) throw std::invalid_argument("constant is not finite");
  if (std::fabs(x) >= std::ldexp(1.0, static_cast<int>(ctx.log2_q_at(limbs - 1)) - 2))
    throw std::invalid_argument("scaled constant overflows Q at this level");
  std::vector<u64> res(limbs);
  for (std::size_t i = 0; i < limbs; ++i) res[i] = ring::residue_of_rounded(x, ctx.ring_q().modulus(i));
  return res;
}
}  // namespace

bool Evaluator::start_accumulation(Ciphertext& acc, const Ciphertext& a, double p_scale) const {
  if (acc.polys.empty()) {
    acc = Ciphertext{{}, a.scale * p_scale, a.log_slots};
    for (std::size_t k = 0; k < a.size(); ++k) acc.polys.push_back(context_.ring_q().make_output(a.level() + 1));
    return true;
  }
  check_ciphertext(acc, "multiply_plain_accumulate");
  if (acc.level() != a.level() || acc.size() != a.size() || !same_scale(acc.scale, a.scale * p_scale))
    throw std::invalid_argument("multiply_plain_accumulate: accumulator does not match the product");
  return false;
}

void Evaluator::multiply_plain_accumulate(Ciphertext& acc, const Ciphertext& a, const Plaintext& p) const {
  const PlainProduct product{&acc, &a, &p, 0, {}};
  multiply_plain_accumulate(std::span(&product, 1));
}

void Evaluator::multiply_plain_accumulate(Ciphertext& acc, const Ciphertext& a, double p_scale,
                                          const std::function<void(std::size_t, u64*)>& limb) const {
  const PlainProduct product{&acc, &a, nullptr, p_scale, limb};
  multiply_plain_accumulate(std::span(&product, 1));
}

void Evaluator::multiply_plain_accumulate(std::span<const PlainProduct> products) const {
  if (products.empty()) return;
  const std::size_t level = products.front().a->level();
  bool any_limb_source = false;
  for (std::size_t i = 0; i < products.size(); ++i) {
    const PlainProduct& p = products[i];
    check_ciphertext(*p.a, "multiply_plain_accumulate");
    if (p.a->level() != level) throw std::invalid_argument("multiply_plain_accumulate: batch inputs at different levels");
    if (p.same_plaintext_as_previous) {
      const PlainProduct* previous = i > 0 ? &products[i - 1] : nullptr;
      if (!previous || previous->encoded != p.encoded || (!p.encoded && previous->p_scale != p.p_scale))
        throw std::invalid_argument("multiply_plain_accumulate: a product shares the plaintext of no previous product");
    }
    if (p.encoded) check_plain(context_, *p.a, *p.encoded, "multiply_plain_accumulate", false);
    else if (!p.limb && !p.same_plaintext_as_previous)
      throw std::invalid_argument("multiply_plain_accumulate: product without a plaintext");
    any_limb_source = any_limb_source || !p.encoded;
  }
  // Started in order, so that of several products into one fresh accumulator only the
  // first writes (the others add). An accumulator that does not match leaves the ones this
  // batch started empty again, not holding unwritten memory.
  std::vector<char> first(products.size());
  try {
    for (std::size_t i = 0; i < products.size(); ++i) {
      const PlainProduct& p = products[i];
      first[i] = start_accumulation(*p.acc, *p.a, p.encoded ? p.encoded->scale : p.p_scale);
    }
  } catch (...) {
    for (std::size_t i = 0; i < products.size(); ++i)
      if (first[i]) products[i].acc->polys.clear();
    throw;
  }
  // Runs of consecutive products of encoded plaintexts into one accumulator (a transform's
  // row) are one dot product per limb: on IFMA lanes one reduction per coefficient instead
  // of one per product, and the accumulator's limb read and written once. A limb source
  // stays alone: its limb is made just before its product, still in cache (a run's limbs
  // made first measured 4 % slower on CryptoFaceNet4). So does a product reading its own
  // accumulator (the per-product path of a dot product would overwrite it first).
  const auto alone = [&](std::size_t i) { return !products[i].encoded || products[i].a == products[i].acc; };
  const auto joins = [&](std::size_t i) {  // product i + 1 continues product i's run
    return products[i + 1].acc == products[i].acc && !first[i + 1] && !alone(i) && !alone(i + 1);
  };
  std::vector<std::size_t> run_end(products.size());
  for (std::size_t i = products.size(); i-- > 0;)
    run_end[i] = i + 1 < products.size() && joins(i) && run_end[i + 1] - i <= ring::kernels::detail::kIfmaDotTerms
                     ? run_end[i + 1]
                     : i + 1;
  std::size_t longest = 0;
  for (std::size_t i = 0; i < products.size(); i = run_end[i]) longest = std::max(longest, run_end[i] - i);
  const ring::SimdPath path = ring::default_simd_path();
  const std::size_t n = context_.n();
#pragma omp parallel for if (level > 0 && !omp_in_parallel())
  for (std::size_t l = 0; l <= level; ++l) {
    Poly scratch = any_limb_source ? context_.ring_q().make_output(1) : Poly{};
    std::vector<const u64*> plains(longest), inputs(longest);
    const auto& m = context_.ring_q().modulus(l);
    for (std::size_t i = 0; i < products.size(); i = run_end[i]) {
      const std::size_t terms = run_end[i] - i;
      for (std::size_t t = 0; t < terms; ++t) {
        const PlainProduct& p = products[i + t];
        // Alone in its run; a product sharing the previous one's limb finds it in scratch.
        if (!p.encoded && !p.same_plaintext_as_previous) p.limb(l, scratch.limb(0));
        plains[t] = p.encoded ? p.encoded->poly.limb(l) : scratch.limb(0);
      }
      for (std::size_t k = 0; k < products[i].a->size(); ++k) {
        for (std::size_t t = 0; t < terms; ++t) inputs[t] = products[i + t].a->polys[k].limb(l);
        ring::kernels::dot_product(inputs.data(), plains.data(), terms, products[i].acc->polys[k].limb(l), n, m, path,
                                   !first[i]);
      }
    }
  }
}

Ciphertext Evaluator::multiply_const_to(const Ciphertext& a, double c, std::size_t level, double scale) const {
  const ConstTerm term{&a, c};
  return linear_combination_to({&term, 1}, level, scale);
}

Ciphertext Evaluator::linear_combination_to(std::span<const ConstTerm> terms, std::size_t level, double scale) const {
  if (terms.empty()) throw std::invalid_argument("linear_combination_to: no terms");
  if (!(scale > 0) || !std::isfinite(scale)) throw std::invalid_argument("linear_combination_to: invalid scale");
  const double q_next = static_cast<double>(context_.ring_q().modulus(level + 1).value());
  Ciphertext sum;
  for (const ConstTerm& term : terms) {
    const Ciphertext& a = *term.a;
    check_ciphertext(a, "linear_combination_to");
    if (a.level() <= level)
      throw std::invalid_argument("linear_combination_to: needs a level above the target (" + level_scale(a) +
                                  ", target level " + std::to_string(level) + ")");
    Ciphertext r = a;
    drop_to_level_inplace(r, level + 1);
    const auto res = constant_residues(context_, term.c * scale * q_next / a.scale, level + 2);
    for (auto& p : r.polys) context_.ring_q().multiply_scalar(p, res, p);
    r.scale = scale * q_next;
    if (sum.polys.empty()) sum = std::move(r);
    else add_inplace(sum, r);
  }
  rescale_inplace(sum);
  sum.scale = scale;  // exact by construction (up to the rounding of the constants)
  return sum;
}

void Evaluator::add_const_inplace(Ciphertext& a, double c) const {
  check_ciphertext(a, "add_const");
  context_.ring_q().add_scalar(a.polys[0], constant_residues(context_, c * a.scale, a.level() + 1), a.polys[0]);
}

void Evaluator::multiply_const_inplace(Ciphertext& a, double c) const {
  check_ciphertext(a, "multiply_const");
  if (a.level() == 0) throw std::invalid_argument("multiply_const: no level left to rescale");
  const double const_scale = static_cast<double>(context_.ring_q().modulus(a.level()).value());
  const auto res = constant_residues(context_, c * const_scale, a.level() + 1);
  for (auto& p : a.polys) context_.ring_q().multiply_scalar(p, res, p);
  a.scale *= const_scale;
}

void Evaluator::multiply_integer_inplace(Ciphertext& a, std::int64_t c) const {
  check_ciphertext(a, "multiply_integer");
  std::vector<u64> res(a.level() + 1);
  for (std::size_t i = 0; i < res.size(); ++i) res[i] = ring::from_signed(c, context_.ring_q().modulus(i).value());
  for (auto& p : a.polys) context_.ring_q().multiply_scalar(p, res, p);
}

Ciphertext Evaluator::multiply(const Ciphertext& a, const Ciphertext& b) const {
  check_ciphertext(a, "multiply");
  check_ciphertext(b, "multiply");
  if (a.level() != b.level())
    throw std::invalid_argument("multiply: operands differ (" + level_scale(a) + " vs " + level_scale(b) + ")");
  if (a.size() != 2 || b.size() != 2) throw std::invalid_argument("multiply: relinearize the operands first");
  if (a.log_slots != b.log_slots) throw std::invalid_argument("multiply: slot counts differ");
  const auto& rq = context_.ring_q();
  const std::size_t limbs = a.level() + 1;
  Ciphertext r{moved_polys(rq.make_output(limbs), rq.make_output(limbs), rq.make_output(limbs)), a.scale * b.scale,
               a.log_slots};
  rq.multiply(a.polys[0], b.polys[0], r.polys[0]);
  rq.multiply(a.polys[0], b.polys[1], r.polys[1]);
  rq.multiply_add(a.polys[1], b.polys[0], r.polys[1]);
  rq.multiply(a.polys[1], b.polys[1], r.polys[2]);
  return r;
}

bool Evaluator::check_relinearizable(const Ciphertext& a, const char* op) const {
  check_ciphertext(a, op);
  if (a.size() == 2) return false;
  if (a.size() != 3) throw std::invalid_argument(std::string(op) + ": only size-3 ciphertexts are supported");
  if (!relin_key_) throw std::logic_error(std::string(op) + ": the evaluator has no relinearization key");
  return true;
}

void Evaluator::relinearize_inplace(Ciphertext& a) const {
  if (!check_relinearizable(a, "relinearize")) return;
  const Decomposition d = decompose(context_, a.polys[2]);
  Poly k0, k1;
  key_switch_inner(context_, d, relin_key_->key, k0, k1);
  context_.ring_q().add(a.polys[0], k0, a.polys[0]);
  context_.ring_q().add(a.polys[1], k1, a.polys[1]);
  a.polys.pop_back();
}

Ciphertext Evaluator::multiply_relin(const Ciphertext& a, const Ciphertext& b) const {
  Ciphertext r = multiply(a, b);
  relinearize_inplace(r);
  return r;
}

void Evaluator::relinearize_rescale_inplace(Ciphertext& a) const {
  if (!check_relinearizable(a, "relinearize_rescale")) return rescale_inplace(a);
  const std::size_t l = a.level();
  if (l == 0) throw std::invalid_argument("relinearize_rescale: ciphertext is at level 0");
  const auto& rq = context_.ring_q();
  const Decomposition d = decompose(context_, a.polys[2]);
  QPPoly acc[2];
  key_switch_product(context_, d, relin_key_->key, acc[0], acc[1]);
  // P c_k + the key switch of c_2, over Q_l P: P c_k is 0 modulo P's primes, so dividing the
  // sum by P q_l is the relinearized ciphertext divided by q_l.
  for (int k = 0; k < 2; ++k) add_p_multiple(context_, a.polys[k], acc[k]);
  a.polys.resize(2);
  for (int k = 0; k < 2; ++k) {
    a.polys[k] = rq.make_output(l);
    mod_down_rescale(context_, acc[k], a.polys[k]);
  }
  a.scale /= static_cast<double>(rq.modulus(l).value());
}

Ciphertext Evaluator::multiply_relin_rescale(const Ciphertext& a, const Ciphertext& b) const {
  Ciphertext r = multiply(a, b);
  relinearize_rescale_inplace(r);
  return r;
}

void Evaluator::rescale_inplace(Ciphertext& a) const {
  check_ciphertext(a, "rescale");
  const std::size_t l = a.level();
  if (l == 0) throw std::invalid_argument("rescale: ciphertext is at level 0");
  const auto& rq = context_.ring_q();
  const auto& last_modulus = rq.modulus(l);
  const u64 ql = last_modulus.value(), half = ql / 2;
  const auto& inv = context_.rescale_inv(l);
  const ring::SimdPath path = ring::default_simd_path();
  for (auto& p : a.polys) {
    // round(c / q_l): shift by q_l/2 before taking the last limb's residue, undo after.
    Poly last = rq.make_output(1, false);
    std::copy(p.limb(l), p.limb(l) + context_.n(), last.limb(0));
    rq.ntt(l).inverse(last.limb(0), path);
    ring::kernels::add_constant(last.limb(0), half, last.limb(0), context_.n(), last_modulus, path);
#pragma omp parallel for if (l > 1 && !omp_in_parallel())
    for (std::size_t i = 0; i < l; ++i) {
      const auto& m = rq.modulus(i);
      Poly t = rq.make_output(1, false);
      ring::kernels::reduce(last.limb(0), last_modulus.bits(), t.limb(0), context_.n(), m, path);
      ring::kernels::add_constant(t.limb(0), ring::neg_mod(ring::reduce64(half, m), m.value()), t.limb(0),
                                  context_.n(), m, path);
      rq.ntt(i).forward(t.limb(0), path);
      ring::kernels::subtract_multiply_constant(p.limb(i), t.limb(0), inv[i], p.limb(i), context_.n(), m, path);
    }
    p.truncate(l);
  }
  a.scale /= static_cast<double>(ql);
}

void Evaluator::drop_to_level_inplace(Ciphertext& a, std::size_t level) const {
  check_ciphertext(a, "drop_to_level");
  if (level > a.level())
    throw std::invalid_argument("drop_to_level: target level " + std::to_string(level) + " is above " +
                                std::to_string(a.level()));
  for (auto& p : a.polys) p.truncate(level + 1);
}

std::uint64_t Evaluator::galois_element_for(long step, std::size_t slots) const {
  const long n = static_cast<long>(slots);
  long k = step % n;
  if (k < 0) k += n;
  const std::uint64_t g = galois_element_for_step(k, context_.n());
  if (galois_keys_ && !galois_keys_->has(g) && k != 0) {
    const std::uint64_t alt = galois_element_for_step(k - n, context_.n());
    if (galois_keys_->has(alt)) return alt;
  }
  return g;
}

const SwitchingKey& Evaluator::galois_key(std::uint64_t g) const {
  if (!galois_keys_) throw std::logic_error("rotation: the evaluator has no Galois keys");
  const auto it = galois_keys_->keys.find(g);
  if (it == galois_keys_->keys.end())
    throw std::invalid_argument("rotation: no Galois key for element " + std::to_string(g));
  return it->second;
}

Ciphertext Evaluator::apply_galois(const Ciphertext& a, std::uint64_t g) const {
  check_ciphertext(a, "rotate");
  if (a.size() != 2) throw std::invalid_argument("rotate: relinearize first");
  if (g == 1) return a;
  galois_key(g);  // fail before the expensive decomposition
  return apply_galois(a, decompose(context_, a.polys[1]), g);
}

Ciphertext Evaluator::apply_galois(const Ciphertext& a, const Decomposition& d, std::uint64_t g) const {
  if (g == 1) return a;
  // The Galois key switches c1 from s to phi^{-1}(s) (see KeyGenerator::create_galois_key):
  // (u0, u1) = KS(c1) with u0 + u1 phi^{-1}(s) ~ c1 s, so (phi(c0 + u0), phi(u1)) decrypts
  // under s to phi(m). Permuting the two outputs is cheaper than permuting every digit.
  const auto& rq = context_.ring_q();
  QPPoly u0, u1;
  key_switch_product(context_, d, galois_key(g), u0, u1);
  Ciphertext r{moved_polys(rq.make_output(a.level() + 1), rq.make_output(a.level() + 1)), a.scale, a.log_slots};
  const std::vector<std::uint32_t>& perm = rq.automorphism_permutation(g);
  mod_down(context_, u0, r.polys[0], &a.polys[0], &perm);
  mod_down(context_, u1, r.polys[1], nullptr, &perm);
  return r;
}

Ciphertext Evaluator::rotate(const Ciphertext& a, long step) const {
  return apply_galois(a, galois_element_for(step, a.slots()));
}

Ciphertext Evaluator::conjugate(const Ciphertext& a) const {
  return apply_galois(a, galois_element_conjugate(context_.n()));
}

std::vector<Ciphertext> Evaluator::rotate_hoisted(const Ciphertext& a, const std::vector<long>& steps) const {
  check_ciphertext(a, "rotate_hoisted");
  std::vector<std::uint64_t> elements;
  for (long step : steps) {
    elements.push_back(galois_element_for(step, a.slots()));
    if (elements.back() != 1) galois_key(elements.back());  // fail before any work
  }
  const Decomposition d = hoist(a);
  std::vector<Ciphertext> out(elements.size());
  const auto one = [&](std::size_t i) { out[i] = apply_galois(a, d, elements[i]); };
  // The rotations share only the decomposition, so threads take whole rotations instead
  // of splitting each one's limb loops, with the ModDown steps between them (pfhe_bench
  // rotate_hoisted16 on two threads: 344-412 ms -> 252-279 ms).
  if (elements.size() > 1 && !omp_in_parallel()) {
    ring::parallel_for(elements.size(), one);
  } else {
    for (std::size_t i = 0; i < elements.size(); ++i) one(i);
  }
  return out;
}

Decomposition Evaluator::hoist(const Ciphertext& a) const {
  check_ciphertext(a, "hoist");
  if (a.size() != 2) throw std::invalid_argument("hoist: relinearize first");
  return decompose(context_, a.polys[1]);
}

Ciphertext Evaluator::rotate_hoisted(const Ciphertext& a, const Decomposition& d, long step) const {
  check_ciphertext(a, "rotate_hoisted");
  if (d.level != a.level() || d.digits.size() != context_.params().digits_at(a.level()))
    throw std::invalid_argument("rotate_hoisted: the decomposition is of another ciphertext");
  return apply_galois(a, d, galois_element_for(step, a.slots()));
}

Ciphertext Evaluator::sum_slots(const Ciphertext& a) const {
  Ciphertext acc = a;
  for (std::size_t step = 1; step < a.slots(); step <<= 1) add_inplace(acc, rotate(acc, static_cast<long>(step)));
  return acc;
}

void RotationSum::check_term(const Ciphertext& c) {
  eval_.check_ciphertext(c, "rotation sum");
  if (c.size() != 2) throw std::invalid_argument("rotation sum: relinearize first");
  if (terms_ == 0) {
    level_ = c.level();
    scale_ = c.scale;
    log_slots_ = c.log_slots;
  } else if (c.level() != level_ || !same_scale(c.scale, scale_) || c.log_slots != log_slots_) {
    throw std::invalid_argument("rotation sum: terms differ (" + level_scale(c) + " vs level " +
                                std::to_string(level_) + ", scale 2^" + std::to_string(std::log2(scale_)) +
                                ", or the slot count)");
  }
  ++terms_;
}

void RotationSum::add(const Ciphertext& c, long step) {
  const std::uint64_t g = eval_.galois_element_for(step, c.slots());
  if (g != 1) eval_.galois_key(g);  // fail before any work
  check_term(c);
  if (g == 1) {
    if (unrotated_.polys.empty()) unrotated_ = c;
    else eval_.add_inplace(unrotated_, c);
    return;
  }
  const Context& ctx = eval_.context_;
  const auto& rq = ctx.ring_q();
  const auto& rp = ctx.ring_p();
  // As Evaluator::apply_galois, with (u0 + P c0, u1) kept over Q x P: phi(c0 + u0/P) =
  // phi(u0 + P c0) / P, and the P part of P c0 is zero.
  QPPoly u0, u1;
  key_switch_product(ctx, decompose(ctx, c.polys[1]), eval_.galois_key(g), u0, u1);
  add_p_multiple(ctx, c.polys[0], u0);
  if (sum0_.q.limbs() == 0) {  // zeros, so that every term is added
    sum0_ = {rq.make_poly(level_ + 1), rp.make_poly(rp.size())};
    sum1_ = {rq.make_poly(level_ + 1), rp.make_poly(rp.size())};
  }
  rq.automorphism_ntt_add(u0.q, g, sum0_.q);
  rp.automorphism_ntt_add(u0.p, g, sum0_.p);
  rq.automorphism_ntt_add(u1.q, g, sum1_.q);
  rp.automorphism_ntt_add(u1.p, g, sum1_.p);
}

Ciphertext RotationSum::result() const {
  if (terms_ == 0) throw std::logic_error("rotation sum: no terms");
  if (sum0_.q.limbs() == 0) return unrotated_;
  const auto& rq = eval_.context_.ring_q();
  Ciphertext r{moved_polys(rq.make_output(level_ + 1), rq.make_output(level_ + 1)), scale_, log_slots_};
  mod_down(eval_.context_, sum0_, r.polys[0]);
  mod_down(eval_.context_, sum1_, r.polys[1]);
  if (!unrotated_.polys.empty()) eval_.add_inplace(r, unrotated_);
  return r;
}

Ciphertext RotationSum::result_rescaled() {
  if (terms_ == 0) throw std::logic_error("rotation sum: no terms");
  if (level_ == 0) throw std::invalid_argument("rotation sum: the terms are at level 0, nothing to rescale");
  terms_ = 0;
  if (sum0_.q.limbs() == 0) {
    Ciphertext r = std::move(unrotated_);
    unrotated_ = Ciphertext{};
    eval_.rescale_inplace(r);
    return r;
  }
  const Context& ctx = eval_.context_;
  const auto& rq = ctx.ring_q();
  QPPoly* sums[2] = {&sum0_, &sum1_};
  Ciphertext r{moved_polys(rq.make_output(level_), rq.make_output(level_)),
               scale_ / static_cast<double>(rq.modulus(level_).value()), log_slots_};
  for (int k = 0; k < 2; ++k) {
    if (!unrotated_.polys.empty()) add_p_multiple(ctx, unrotated_.polys[k], *sums[k]);
    mod_down_rescale(ctx, *sums[k], r.polys[k]);
  }
  sum0_ = sum1_ = QPPoly{};
  unrotated_ = Ciphertext{};
  return r;
}

}  // namespace pfhe::ckks
