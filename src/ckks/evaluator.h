// Homomorphic operations on ciphertexts. An Evaluator is immutable after construction and
// holds no hidden state, so one instance can be shared by many threads.
//
// Levels and scales are tracked: binary operations need equal levels and scales (within a
// relative 1e-9) and throw std::invalid_argument otherwise; callers align explicitly with
// drop_to_level / rescale.
#pragma once
#include <functional>
#include <span>
#include <vector>

#include "ckks/ciphertext.h"
#include "ckks/context.h"
#include "ckks/key_switch.h"
#include "ckks/keys.h"

namespace pfhe::ckks {

class Evaluator {
 public:
  Evaluator(const Context& context, const RelinKey* relin_key = nullptr,
            const GaloisKeys* galois_keys = nullptr);

  const Context& context() const { return context_; }

  void add_inplace(Ciphertext& a, const Ciphertext& b) const;
  void sub_inplace(Ciphertext& a, const Ciphertext& b) const;
  void negate_inplace(Ciphertext& a) const;
  Ciphertext add(const Ciphertext& a, const Ciphertext& b) const;
  Ciphertext sub(const Ciphertext& a, const Ciphertext& b) const;

  void add_plain_inplace(Ciphertext& a, const Plaintext& p) const;
  void sub_plain_inplace(Ciphertext& a, const Plaintext& p) const;
  // Scale multiplies; the plaintext must be at the ciphertext's level or above.
  void multiply_plain_inplace(Ciphertext& a, const Plaintext& p) const;

  // acc += a * p (no rescale): acc must be at a's level with scale a.scale * p.scale.
  void multiply_plain_accumulate(Ciphertext& acc, const Ciphertext& a, const Plaintext& p) const;
  // The same for a plaintext of scale p_scale made one limb at a time: limb(l, out) writes
  // its NTT-form limb l (N words). Each limb is multiplied while it is in cache, instead of
  // a whole plaintext being written to memory and read back (just-in-time diagonals).
  void multiply_plain_accumulate(Ciphertext& acc, const Ciphertext& a, double p_scale,
                                 const std::function<void(std::size_t, ring::u64*)>& limb) const;

  // One product of a batch: *acc += *a * plaintext, the plaintext either `encoded` or made
  // limb by limb by `limb` at scale `p_scale` (as in the two calls above). With
  // `same_plaintext_as_previous`, the plaintext is the previous product's (same `encoded`,
  // or the limbs its `limb` made, which are then made once for both; `limb` may be empty):
  // one layer's diagonal applied to several ciphertexts (a batch of inputs).
  struct PlainProduct {
    Ciphertext* acc;
    const Ciphertext* a;
    const Plaintext* encoded = nullptr;
    double p_scale = 0;
    std::function<void(std::size_t, ring::u64*)> limb;
    bool same_plaintext_as_previous = false;
  };
  // All products limb by limb: limb l of every product, then limb l + 1. Products that
  // share an accumulator or an input (a linear transform's row, or one baby rotation) then
  // find that limb in cache instead of streaming the whole ciphertext from memory once per
  // product. Every input must be at one level; the sums are those of one product at a time.
  void multiply_plain_accumulate(std::span<const PlainProduct> products) const;

  // c * a landing exactly at (level, scale): a is dropped to level + 1, multiplied by the
  // integer round(c * scale * q_{level+1} / a.scale) and rescaled. Needs a.level() > level.
  // With c = 1 this aligns a ciphertext to another one's level and scale.
  Ciphertext multiply_const_to(const Ciphertext& a, double c, std::size_t level, double scale) const;
  // sum_k c_k * a_k landing exactly at (level, scale), each term as in multiply_const_to
  // but one rescale for the sum. Needs every a_k.level() > level and one slot count.
  struct ConstTerm {
    const Ciphertext* a;
    double c;
  };
  Ciphertext linear_combination_to(std::span<const ConstTerm> terms, std::size_t level, double scale) const;

  // Adds the real constant c to every slot (encoded at the ciphertext's scale).
  void add_const_inplace(Ciphertext& a, double c) const;
  // Multiplies by the real constant c encoded at scale q_level, so that the following
  // rescale restores the input scale exactly. Needs level >= 1.
  void multiply_const_inplace(Ciphertext& a, double c) const;
  // Multiplies by an integer; scale and level unchanged.
  void multiply_integer_inplace(Ciphertext& a, std::int64_t c) const;

  // Tensor product: size-3 result (relinearize next). Scales multiply.
  Ciphertext multiply(const Ciphertext& a, const Ciphertext& b) const;
  void relinearize_inplace(Ciphertext& a) const;
  Ciphertext multiply_relin(const Ciphertext& a, const Ciphertext& b) const;
  Ciphertext square_relin(const Ciphertext& a) const { return multiply_relin(a, a); }
  // Relinearization followed by a rescale, with the key switch's division by P and the
  // rescale's by q_l done as one (key_switch.h: mod_down_rescale). Needs level >= 1; a
  // size-2 ciphertext is only rescaled.
  void relinearize_rescale_inplace(Ciphertext& a) const;
  Ciphertext multiply_relin_rescale(const Ciphertext& a, const Ciphertext& b) const;

  // Divides by the last prime: level - 1, scale / q_level (rounded).
  void rescale_inplace(Ciphertext& a) const;
  void drop_to_level_inplace(Ciphertext& a, std::size_t level) const;

  // Left rotation of the slots by `step` (negative: right), modulo the slot count.
  Ciphertext rotate(const Ciphertext& a, long step) const;
  Ciphertext conjugate(const Ciphertext& a) const;
  // Many rotations of one ciphertext sharing one decomposition (hoisting).
  std::vector<Ciphertext> rotate_hoisted(const Ciphertext& a, const std::vector<long>& steps) const;
  // The same one rotation at a time: hoist() decomposes a's c1 once, rotate_hoisted(a, d,
  // step) then costs what one of the rotations above costs (identical results).
  Decomposition hoist(const Ciphertext& a) const;
  Ciphertext rotate_hoisted(const Ciphertext& a, const Decomposition& d, long step) const;
  // Sum of all slots replicated in every slot (log2(slots) rotations).
  Ciphertext sum_slots(const Ciphertext& a) const;

  // Galois element used for a rotation of a ciphertext with `slots` slots: the key set
  // may hold it for the step in [0, slots) or the equivalent negative step.
  std::uint64_t galois_element_for(long step, std::size_t slots) const;

 private:
  friend class RotationSum;
  // For acc += a * p with p of scale p_scale (a already checked): checks acc; an empty acc
  // becomes a's shape at the product's scale (contents unset) and true says "write, do
  // not add".
  bool start_accumulation(Ciphertext& acc, const Ciphertext& a, double p_scale) const;
  void check_compatible(const Ciphertext& a, const Ciphertext& b, const char* op) const;
  void check_ciphertext(const Ciphertext& a, const char* op) const;
  // Checks a for the relinearization `op` names: false when it has nothing to do (size 2).
  bool check_relinearizable(const Ciphertext& a, const char* op) const;
  const SwitchingKey& galois_key(std::uint64_t g) const;
  Ciphertext apply_galois(const Ciphertext& a, std::uint64_t g) const;
  // phi_g(a) given the decomposition d of a's c1 (shared by hoisted rotations).
  Ciphertext apply_galois(const Ciphertext& a, const Decomposition& d, std::uint64_t g) const;

  const Context& context_;
  const RelinKey* relin_key_;
  const GaloisKeys* galois_keys_;
};

// sum_k rot(c_k, step_k) over ciphertexts of one level, scale and slot count, divided by P
// once: every key switch stays over Q x P, its automorphism is applied there (it permutes
// coefficients with signs, which commutes with ModDown's symmetric rounding) and a single
// ModDown ends the sum. The giant steps of a BSGS transform save a ModDown each and add
// one rounding error instead of one per rotation.
class RotationSum {
 public:
  explicit RotationSum(const Evaluator& eval) : eval_(eval) {}
  void add(const Ciphertext& c, long step);
  // The sum; throws when nothing was added.
  Ciphertext result() const;
  // The sum rescaled (divided by q_l): the unrotated terms are multiplied by P and added to
  // the rotated ones over Q x P, and one division by P q_l ends it (mod_down_rescale: one
  // rounding where result() and a rescale take two, l NTTs fewer per polynomial). Consumes
  // the terms: the sum is empty afterwards.
  Ciphertext result_rescaled();

 private:
  void check_term(const Ciphertext& c);
  const Evaluator& eval_;
  std::size_t terms_ = 0, level_ = 0;
  double scale_ = 0;
  int log_slots_ = 0;
  Ciphertext unrotated_;  // step-0 terms (empty until one arrives)
  QPPoly sum0_, sum1_;    // rotated terms, over Q x P (empty until one arrives)
};

}  // namespace pfhe::ckks
