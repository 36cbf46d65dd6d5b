#include "ckks/key_switch.h"

#include "ring/kernels.h"

#include <omp.h>

#include <stdexcept>
#include <string>

namespace pfhe::ckks {

using ring::Poly;
using ring::u128;
using ring::u64;

Decomposition decompose(const Context& ctx, const Poly& c) {
  if (!c.ntt_form()) throw std::logic_error("decompose expects an NTT-form polynomial");
  const std::size_t level = c.limbs() - 1;
  const auto& rq = ctx.ring_q();
  const auto& rp = ctx.ring_p();
  Poly coeff = c;
  rq.from_ntt(coeff);
  const std::size_t digits = ctx.params().digits_at(level);
  Decomposition d;
  d.level = level;
  d.digits.resize(digits);
  const ring::SimdPath path = ring::default_simd_path();
#pragma omp parallel for schedule(dynamic) if (digits > 1 && !omp_in_parallel())
  for (std::size_t j = 0; j < digits; ++j) {
    QPPoly& out = d.digits[j];
    out.q = rq.make_output(level + 1);
    out.p = rp.make_output(rp.size());
    const std::size_t begin = ctx.digit_begin(j), end = ctx.digit_end(j, level);
    std::vector<const u64*> in;
    std::vector<u64*> targets;
    std::vector<const ring::NttTables*> tables;
    for (std::size_t i = begin; i < end; ++i) in.push_back(coeff.limb(i));
    for (std::size_t i = 0; i <= level; ++i)
      if (i < begin || i >= end) { targets.push_back(out.q.limb(i)); tables.push_back(&rq.ntt(i)); }
    for (std::size_t k = 0; k < rp.size(); ++k) { targets.push_back(out.p.limb(k)); tables.push_back(&rp.ntt(k)); }
    ctx.mod_up(level, j).convert(in.data(), targets.data(), ctx.n());
    for (std::size_t t = 0; t < targets.size(); ++t) tables[t]->forward(targets[t], path);
    // The digit's own primes keep the original residues (already in NTT form).
    for (std::size_t i = begin; i < end; ++i)
      std::copy(c.limb(i), c.limb(i) + ctx.n(), out.q.limb(i));
  }
  return d;
}

namespace {

// out0/out1 limb = sum_j d_j * (b_j, a_j) on one limb.
void inner_product_limb(const std::vector<const u64*>& d, const std::vector<const u64*>& b,
                        const std::vector<const u64*>& a, const ring::Modulus& m, std::size_t n, u64* out0,
                        u64* out1, ring::SimdPath path) {
  ring::kernels::dot_product(d.data(), b.data(), d.size(), out0, n, m, path);
  ring::kernels::dot_product(d.data(), a.data(), d.size(), out1, n, m, path);
}

}  // namespace

void key_switch_product(const Context& ctx, const Decomposition& d, const SwitchingKey& key, QPPoly& acc0,
                        QPPoly& acc1) {
  const std::size_t level = d.level, digits = d.digits.size();
  if (key.b.size() < digits || key.max_level() < level)
    throw std::invalid_argument("switching key (level " + std::to_string(key.max_level()) +
                                ") is too small for a ciphertext at level " + std::to_string(level));
  const auto& rq = ctx.ring_q();
  const auto& rp = ctx.ring_p();
  acc0 = {rq.make_output(level + 1), rp.make_output(rp.size())};
  acc1 = {rq.make_output(level + 1), rp.make_output(rp.size())};
  const std::size_t total = level + 1 + rp.size();
  const ring::SimdPath path = ring::default_simd_path();
#pragma omp parallel for if (!omp_in_parallel())
  for (std::size_t t = 0; t < total; ++t) {
    const bool is_q = t <= level;
    const std::size_t i = is_q ? t : t - level - 1;
    std::vector<const u64*> dv(digits), bv(digits), av(digits);
    for (std::size_t j = 0; j < digits; ++j) {
      dv[j] = is_q ? d.digits[j].q.limb(i) : d.digits[j].p.limb(i);
      bv[j] = is_q ? key.b[j].q.limb(i) : key.b[j].p.limb(i);
      av[j] = is_q ? key.a[j].q.limb(i) : key.a[j].p.limb(i);
    }
    inner_product_limb(dv, bv, av, is_q ? rq.modulus(i) : rp.modulus(i), ctx.n(),
                       is_q ? acc0.q.limb(i) : acc0.p.limb(i), is_q ? acc1.q.limb(i) : acc1.p.limb(i), path);
  }
}

void key_switch_inner(const Context& ctx, const Decomposition& d, const SwitchingKey& key, Poly& out0,
                      Poly& out1) {
  QPPoly acc0, acc1;
  key_switch_product(ctx, d, key, acc0, acc1);
  out0 = ctx.ring_q().make_output(d.level + 1);
  out1 = ctx.ring_q().make_output(d.level + 1);
  mod_down(ctx, acc0, out0);
  mod_down(ctx, acc1, out1);
}

namespace {

// out_i = (x_i - y_i) D^{-1} (+ c_i) mod q_i for the limbs of out, where y is the residue of x
// modulo D = the product of the dropped primes, centred: `dropped` holds x's residues modulo
// them in coefficient form, already shifted by (D - 1)/2, and minus_half_mod_q undoes the
// shift. That is round(x / D). The addend c and the permutation perm (may be null) join the
// last pass.
void divide_rounded(const Context& ctx, const ring::BaseConverter& to_q, const std::vector<const u64*>& dropped,
                    const std::vector<u64>& minus_half_mod_q, const std::vector<u64>& inverse_mod_q, const Poly& xq,
                    Poly& out, const Poly* addend = nullptr, const std::vector<std::uint32_t>* perm = nullptr) {
  const auto& rq = ctx.ring_q();
  const std::size_t limbs = out.limbs();
  Poly conv = rq.make_output(limbs, false);
  std::vector<u64*> outs;
  for (std::size_t i = 0; i < limbs; ++i) outs.push_back(conv.limb(i));
  // [x + (D-1)/2]_D - (D-1)/2 in every coefficient
  to_q.convert(dropped.data(), outs.data(), ctx.n(), limbs, /*exact=*/true, minus_half_mod_q.data());
  rq.to_ntt(conv);
  const ring::SimdPath path = ring::default_simd_path();
  for (std::size_t i = 0; i < limbs; ++i)
    ring::kernels::subtract_multiply_add_permute(xq.limb(i), conv.limb(i), inverse_mod_q[i],
                                                 addend ? addend->limb(i) : nullptr, perm ? perm->data() : nullptr,
                                                 out.limb(i), ctx.n(), rq.modulus(i), path);
  out.set_ntt_form(true);
}

// x's P limbs in coefficient form, shifted by the given constants (one per special prime).
Poly shifted_p_limbs(const Context& ctx, const QPPoly& x, const std::vector<u64>& shift) {
  Poly p_coeff = x.p;
  ctx.ring_p().from_ntt(p_coeff);
  ctx.ring_p().add_to_each(p_coeff, shift, p_coeff);
  return p_coeff;
}

}  // namespace

void add_p_multiple(const Context& ctx, const Poly& c, QPPoly& x) {
  const auto& rq = ctx.ring_q();
  Poly p_c = rq.make_output(c.limbs());
  rq.multiply_scalar(c, ctx.p_mod_q(), p_c);
  rq.add(x.q, p_c, x.q);
}

void mod_down(const Context& ctx, const QPPoly& x, Poly& out, const Poly* addend,
              const std::vector<std::uint32_t>* perm) {
  const Poly p_coeff = shifted_p_limbs(ctx, x, ctx.half_p_mod_p());
  std::vector<const u64*> dropped;
  for (std::size_t k = 0; k < p_coeff.limbs(); ++k) dropped.push_back(p_coeff.limb(k));
  divide_rounded(ctx, ctx.p_to_q(), dropped, ctx.minus_half_p_mod_q(), ctx.p_inv_mod_q(), x.q, out, addend, perm);
}

void mod_down_rescale(const Context& ctx, const QPPoly& x, Poly& out) {
  const std::size_t level = x.q.limbs() - 1;
  if (level == 0) throw std::invalid_argument("mod_down_rescale: nothing to rescale at level 0");
  const Context::DivisionByPq& d = ctx.division_by_pq(level);
  const Poly p_coeff = shifted_p_limbs(ctx, x, d.half_mod_source);  // the first K constants
  const auto& rq = ctx.ring_q();
  Poly last = rq.make_output(1, false);
  std::copy(x.q.limb(level), x.q.limb(level) + ctx.n(), last.limb(0));
  const ring::SimdPath path = ring::default_simd_path();
  rq.ntt(level).inverse(last.limb(0), path);
  ring::kernels::add_constant(last.limb(0), d.half_mod_source.back(), last.limb(0), ctx.n(), rq.modulus(level), path);
  std::vector<const u64*> dropped;
  for (std::size_t k = 0; k < p_coeff.limbs(); ++k) dropped.push_back(p_coeff.limb(k));
  dropped.push_back(last.limb(0));
  divide_rounded(ctx, *d.to_q, dropped, d.minus_half_mod_q, d.inverse_mod_q, x.q, out);
}

}  // namespace pfhe::ckks
