// Context: a validated parameter set with everything derived from it (rings, NTT tables,
// base converters, rescaling constants). Built once, shared read-only by every object.
#pragma once
#include <memory>
#include <vector>

#include "ckks/keys.h"
#include "ckks/parameters.h"
#include "ring/base_converter.h"
#include "ring/ring.h"

namespace pfhe::ckks {

class Context {
 public:
  explicit Context(Parameters params);
  Context(const Context&) = delete;
  Context& operator=(const Context&) = delete;

  const Parameters& params() const { return params_; }
  std::size_t n() const { return params_.n(); }
  std::size_t max_level() const { return params_.max_level(); }
  const ring::Ring& ring_q() const { return ring_q_; }
  const ring::Ring& ring_p() const { return ring_p_; }

  // Digit j at level l covers q-primes [digit_begin, digit_end).
  std::size_t digit_begin(std::size_t j) const { return params_.digit_begin(j); }
  std::size_t digit_end(std::size_t j, std::size_t level) const { return params_.digit_end(j, level); }
  // ModUp converter for digit j at level l: its primes -> (Q_l without them) then P.
  const ring::BaseConverter& mod_up(std::size_t level, std::size_t digit) const {
    return *mod_up_[level][digit];
  }
  // ModDown converter P -> Q (only the first level+1 outputs are used at a level).
  const ring::BaseConverter& p_to_q() const { return *p_to_q_; }
  const std::vector<ring::u64>& p_inv_mod_q() const { return p_inv_mod_q_; }
  const std::vector<ring::u64>& p_mod_q() const { return p_mod_q_; }
  // (P - 1) / 2 modulo each special prime, and its negation modulo each q prime: ModDown
  // shifts by it so that it divides with rounding instead of flooring (a floor leaves a
  // biased error).
  const std::vector<ring::u64>& half_p_mod_p() const { return half_p_mod_p_; }
  const std::vector<ring::u64>& minus_half_p_mod_q() const { return minus_half_p_mod_q_; }
  // q_l^{-1} mod q_i for i < l: rescale_inv_[l][i].
  const std::vector<ring::u64>& rescale_inv(std::size_t level) const { return rescale_inv_[level]; }
  // Division by D = P q_l at level l >= 1 (a key switch's ModDown fused with the rescale
  // after it): the exact converter from (p_0 .. p_{K-1}, q_l) to q_0 .. q_{l-1}, (D - 1)/2
  // modulo each of its source primes (rounding, as for P), its negation and D^{-1} modulo
  // each q_i.
  struct DivisionByPq {
    std::unique_ptr<ring::BaseConverter> to_q;
    std::vector<ring::u64> half_mod_source, minus_half_mod_q, inverse_mod_q;
  };
  const DivisionByPq& division_by_pq(std::size_t level) const { return division_by_pq_.at(level); }
  // A small signed polynomial (secret, error or ternary mask) in NTT form on the first
  // `limbs` q primes, and also on every special prime for the QP version.
  ring::Poly small_poly(const std::vector<std::int64_t>& coeffs, std::size_t limbs) const;
  QPPoly small_qp_poly(const std::vector<std::int64_t>& coeffs, std::size_t limbs) const;

  // log2 of Q_l = q_0 * ... * q_l.
  double log2_q_at(std::size_t level) const { return log2_q_prefix_[level]; }

 private:
  Parameters params_;
  ring::Ring ring_q_, ring_p_;
  std::vector<std::vector<std::unique_ptr<ring::BaseConverter>>> mod_up_;
  std::unique_ptr<ring::BaseConverter> p_to_q_;
  std::vector<ring::u64> p_inv_mod_q_, p_mod_q_, half_p_mod_p_, minus_half_p_mod_q_;
  std::vector<std::vector<ring::u64>> rescale_inv_;
  std::vector<DivisionByPq> division_by_pq_;  // index 0 unused
  std::vector<double> log2_q_prefix_;
};

}  // namespace pfhe::ckks
