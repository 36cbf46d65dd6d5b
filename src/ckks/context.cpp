#include "ckks/context.h"

#include <cmath>

#include "ring/sampler.h"

namespace pfhe::ckks {

using ring::Modulus;
using ring::u64;

Context::Context(Parameters params)
    : params_(std::move(params)), ring_q_(params_.n(), params_.q()), ring_p_(params_.n(), params_.p()) {
  const std::size_t nq = params_.q().size();
  const auto& qm = ring_q_.moduli();
  const auto& pm = ring_p_.moduli();
  mod_up_.resize(nq);
  for (std::size_t level = 0; level < nq; ++level) {
    for (std::size_t j = 0; j < params_.digits_at(level); ++j) {
      std::vector<Modulus> from, to;
      for (std::size_t i = 0; i <= level; ++i)
        (i >= digit_begin(j) && i < digit_end(j, level) ? from : to).push_back(qm[i]);
      to.insert(to.end(), pm.begin(), pm.end());
      mod_up_[level].push_back(std::make_unique<ring::BaseConverter>(from, to));
    }
  }
  p_to_q_ = std::make_unique<ring::BaseConverter>(pm, qm);
  // P mod m, and (P - 1) / 2 mod m = (P mod m - 1) * 2^{-1} mod m (P is odd).
  const auto p_mod = [&pm](const Modulus& m) {
    u64 r = 1;
    for (const auto& p : pm) r = ring::mul_mod(r, ring::reduce64(p.value(), m), m);
    return r;
  };
  // (D - 1)/2 mod t for an odd D given modulo t.
  const auto half_mod = [](u64 d_mod_t, const Modulus& t) {
    return ring::mul_mod(ring::sub_mod(d_mod_t, 1, t.value()), ring::inv_mod(2, t), t);
  };
  const auto half_p_mod = [&](const Modulus& m) { return half_mod(p_mod(m), m); };
  for (std::size_t i = 0; i < nq; ++i) {
    p_mod_q_.push_back(p_mod(qm[i]));
    p_inv_mod_q_.push_back(ring::inv_mod(p_mod_q_.back(), qm[i]));
    minus_half_p_mod_q_.push_back(ring::neg_mod(half_p_mod(qm[i]), qm[i].value()));
  }
  for (const auto& p : pm) half_p_mod_p_.push_back(half_p_mod(p));
  rescale_inv_.resize(nq);
  for (std::size_t l = 1; l < nq; ++l)
    for (std::size_t i = 0; i < l; ++i)
      rescale_inv_[l].push_back(ring::inv_mod(ring::reduce64(qm[l].value(), qm[i]), qm[i]));
  division_by_pq_.resize(nq);
  for (std::size_t l = 1; l < nq; ++l) {
    DivisionByPq& d = division_by_pq_[l];
    std::vector<Modulus> source(pm.begin(), pm.end()), target(qm.begin(), qm.begin() + static_cast<std::ptrdiff_t>(l));
    source.push_back(qm[l]);
    d.to_q = std::make_unique<ring::BaseConverter>(source, target);
    for (const auto& m : source) {
      const u64 pq = ring::mul_mod(p_mod(m), ring::reduce64(qm[l].value(), m), m);
      d.half_mod_source.push_back(half_mod(pq, m));
    }
    for (std::size_t i = 0; i < l; ++i) {
      const u64 pq = ring::mul_mod(p_mod_q_[i], ring::reduce64(qm[l].value(), qm[i]), qm[i]);
      d.minus_half_mod_q.push_back(ring::neg_mod(half_mod(pq, qm[i]), qm[i].value()));
      d.inverse_mod_q.push_back(ring::inv_mod(pq, qm[i]));
    }
  }
  double acc = 0;
  for (std::size_t l = 0; l < nq; ++l) {
    acc += std::log2(static_cast<double>(qm[l].value()));
    log2_q_prefix_.push_back(acc);
  }
}

ring::Poly Context::small_poly(const std::vector<std::int64_t>& coeffs, std::size_t limbs) const {
  ring::Poly p = ring_q_.make_poly(limbs, false);
  ring::set_small(ring_q_, coeffs, p);
  ring_q_.to_ntt(p);
  return p;
}

QPPoly Context::small_qp_poly(const std::vector<std::int64_t>& coeffs, std::size_t limbs) const {
  QPPoly out{small_poly(coeffs, limbs), ring_p_.make_poly(ring_p_.size(), false)};
  ring::set_small(ring_p_, coeffs, out.p);
  ring_p_.to_ntt(out.p);
  return out;
}

}  // namespace pfhe::ckks
