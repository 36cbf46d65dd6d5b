// CKKS bootstrapping (Cheon, Han, Kim, Kim, Song, Eurocrypt 2018; the factored DFT of Chen,
// Chillotti, Song, Eurocrypt 2019 and Han-Ki's cosine with double angles, CT-RSA 2020; the
// parameter style of Bossuat et al., Eurocrypt 2021). A ciphertext at level 0 comes back at
// a higher level with the same slots:
//   ModRaise      the level-0 residues, centred, lifted to the whole chain: the coefficients
//                 become t = Delta*mu + e + q0*I with a small integer polynomial I;
//   (SubSum)      for n < N/2 slots, the trace onto Z[X^(N/2n)] (log2(N/2n) rotations);
//   CoeffsToSlots the inverse special FFT as `cts_stages` BSGS linear transforms (radix
//                 stages merged, bit reversal left out); the slots then hold t/q0 scaled
//                 into [-1, 1], real and imaginary halves split by a conjugation;
//   EvalMod       t/q0 mod 1 as sin(2 pi t/q0)/(2 pi): the Chebyshev interpolant of a
//                 cosine shifted by a quarter period on [-K, K] / 2^r, then r double
//                 angles, then optionally arcsin by its Taylor polynomial;
//   SlotsToCoeffs the forward special FFT in `stc_stages` transforms, scaled back to Delta.
// With n <= N/4 slots the real and imaginary halves share one ciphertext of 2n slots and
// EvalMod runs once; with n = N/2 it runs on each half.
//
// Sparse-secret encapsulation (Bossuat, Troncoso-Pastoriza, Hubaux, ACNS 2022), optional:
// at level 0 the ciphertext is switched from the main secret s to an ephemeral secret s' of
// small Hamming weight, raised, and switched back to s at the top level, so that K only
// has to bound I for s' (K ~ 16 for weight 32 instead of ~500 for the dense secret at
// N = 2^16). Security argument: docs/BOOTSTRAPPING.md.
//
// Precision: EvalMod approximates mod 1 by a sine, whose error is cubic in Delta*mu/q0, so
// the input's q0 / (Delta * max|m|) (the message ratio) trades precision against the
// amplification of EvalMod's own error. K must bound |I|: about 6-7 sqrt(h/12) for a
// secret of Hamming weight h (the uniform ternary secret of the HE standard has h ~ 2N/3).
#pragma once
#include <complex>
#include <cstddef>
#include <map>
#include <memory>
#include <vector>

#include "ckks/byte_stream.h"
#include "ckks/encoder.h"
#include "ckks/evaluator.h"
#include "ckks/keygen.h"
#include "ckks/linear_transform.h"
#include "ckks/operation_counts.h"
#include "ckks/polynomial.h"

namespace pfhe::ckks {

struct BootstrapConfig {
  int log_slots = 0;          // slots of the ciphertexts bootstrapped (log2)
  int cts_stages = 3;         // levels (BSGS transforms) of CoeffsToSlots
  int stc_stages = 3;         // levels of SlotsToCoeffs
  double k_range = 16;        // |I| < k_range (see above)
  int cosine_degree = 30;     // Chebyshev degree of the shifted cosine
  int double_angles = 3;      // r
  int arcsine_degree = 0;     // odd Taylor degree of arcsin (0: none)
  // Hamming weight of the ephemeral secret of encapsulation (0: no encapsulation).
  int ephemeral_weight = 0;
  // SlotsToCoeffs first (as Lattigo does): the input arrives at level stc_stages, the DFT
  // to coefficients runs there (on the smallest ciphertexts of the chain), and EvalMod's
  // result is already the message in the slots, without SlotsToCoeffs' sum of 2n
  // coefficient errors per slot. Its EvalMod sees the message itself (|m| <= 1) rather than
  // its coefficients, so it wants a larger message ratio or the arcsine step. Both halves
  // get their own EvalMod (no packing).
  bool slots_to_coeffs_first = false;
  // Scale of the result (0: the parameters' default scale).
  double output_scale = 0;
  // Diagonals of the DFT stages: encoded once (fast, (level + 1) limbs each) or kept as
  // rounded coefficients and encoded inside each bootstrap (one limb-sized vector each).
  DiagonalStorage storage = DiagonalStorage::kEncoded;
  // Giant steps of the DFT stages (ckks/linear_transform.h): kChained needs ~20 keys of the
  // top levels instead of ~40 (2^15 slots, 3 + 3 stages).
  GiantSteps giant_steps = GiantSteps::kSummed;
  // Baby steps of the DFT stages: the rotation-minimising count divided by 2^shift (at
  // least 1). Each baby step is a key of the stage's level (at the top levels for
  // CoeffsToSlots: ~151 MB each at N = 2^16, 4 digits), each giant step a rotation; a shift
  // of 1 trades ~1/3 of the keys for twice the giant rotations (docs/BENCHMARKS.md).
  int baby_step_shift = 0;

  // Levels EvalMod consumes.
  std::size_t eval_mod_depth() const;
  // Levels one bootstrap consumes from the top of the chain.
  std::size_t depth() const { return static_cast<std::size_t>(cts_stages + stc_stages) + eval_mod_depth(); }
};

// The two keys of encapsulation. to_sparse (s -> s') lives in a context of its own with
// the small modulus q0 * p0 (p0: the fewest special primes whose product exceeds q0; an
// RLWE sample under the sparse s' must not have a large modulus); to_dense (s' -> s) in
// the main context at its top level (under the dense s).
// s' itself is sampled from the OS CSPRNG, used for these keys and dropped.
struct EncapsulationKeys {
  SwitchingKey to_sparse, to_dense;
  std::size_t byte_size() const { return to_sparse.byte_size() + to_dense.byte_size(); }
};
// The context of to_sparse for `params` (q0 and p0 above); its own parameter set, so that
// key files can load the key without a Bootstrapper.
Parameters encapsulation_parameters(const Parameters& params);
// Samples s' of `ephemeral_weight` (OS CSPRNG) and makes both keys for keygen's secret;
// `encapsulation` is a context of encapsulation_parameters(keygen's parameters).
EncapsulationKeys create_encapsulation_keys(const KeyGenerator& keygen, const Context& encapsulation,
                                            int ephemeral_weight);

// A configuration in a stored artefact (docs/FORMAT.md, compiled graphs): every field,
// read back range-checked (SerializationError); the Bootstrapper checks the rest.
void save_bootstrap_config(ByteWriter& w, const BootstrapConfig& config);
BootstrapConfig load_bootstrap_config(ByteReader& r);

// A parameter set for bootstrapping with `compute_levels` levels of scale 2^scale_bits left
// after each bootstrap: q0 of scale_bits + log_message_ratio bits (the message ratio
// q0 / scale, for |m| <= 1), the computation levels, SlotsToCoeffs (scale_bits + 2),
// EvalMod (60; 61 above a message ratio of 2^12) and CoeffsToSlots (50; 52 above 2^12)
// from the bottom up, and as many 50-bit special primes as the 128-bit bound on log2(QP)
// leaves room for, with the fewest digits up to P.
// Parameters::create checks it.
ParameterSpec bootstrap_parameter_spec(int log_n, int compute_levels, const BootstrapConfig& config,
                                       int scale_bits = 40, int log_message_ratio = 10);

class Bootstrapper {
 public:
  // Builds the DFT transforms (encoded once, at the levels they run at) for contexts whose
  // chain has at least config.depth() levels above 0. Throws std::invalid_argument on a
  // configuration that cannot work (slot count, stage counts, depth, ranges).
  Bootstrapper(const Encoder& encoder, const BootstrapConfig& config);

  const BootstrapConfig& config() const { return config_; }
  const Encoder& encoder() const { return encoder_; }
  std::size_t slots() const { return std::size_t{1} << config_.log_slots; }
  // Level of a bootstrapped ciphertext, and the lowest level bootstrap() takes (0, or
  // stc_stages with SlotsToCoeffs first).
  std::size_t output_level() const;
  std::size_t input_level() const;

  // Rotation steps and the level each is used at; with conjugation (always needed) this is
  // the Galois key set of bootstrapping (make it with create_keys or the key generator).
  const std::map<long, std::size_t>& rotation_levels() const { return rotation_levels_; }
  // `also`: more rotation steps and their levels (a compiled model's), made in the same set.
  GaloisKeys create_galois_keys(const KeyGenerator& keygen, const std::map<long, std::size_t>& also = {}) const;
  // The level of the conjugation key create_galois_keys adds (CoeffsToSlots' last stage).
  std::size_t conjugation_level() const;
  // With config.ephemeral_weight > 0: the keys bootstrap() then needs (keygen over the
  // same context as the encoder).
  EncapsulationKeys create_encapsulation_keys(const KeyGenerator& keygen) const;
  // Null without encapsulation.
  const Context* encapsulation_context() const { return encapsulation_.get(); }

  // The whole procedure. `ct` must have this bootstrapper's slot count; it is dropped to
  // level 0 first. Needs an evaluator with the relinearization key and create_galois_keys,
  // and the encapsulation keys exactly when config.ephemeral_weight > 0.
  // `times`, when given, receives the seconds each step took.
  struct StepSeconds {
    double mod_raise = 0, coeffs_to_slots = 0, eval_mod = 0, slots_to_coeffs = 0;
  };
  Ciphertext bootstrap(const Evaluator& eval, const Ciphertext& ct, const EncapsulationKeys* keys = nullptr,
                       StepSeconds* times = nullptr) const;

  // The steps, exposed for tests and profiles.
  // Level 0 -> top level (through s' and back with encapsulation keys).
  Ciphertext mod_raise(const Ciphertext& ct, const EncapsulationKeys* keys) const;
  // After mod_raise: the coefficients' t / (q0 * k_range) in the slots (bit-reversed), real and
  // imaginary halves (one ciphertext of 2n slots when packed, two of n otherwise).
  std::vector<Ciphertext> coeffs_to_slots(const Evaluator& eval, const Ciphertext& raised) const;
  // sin(2 pi t/q0) (or, with the arcsine step, its arcsin / 2 pi, i.e. t/q0 mod 1) at
  // exactly `target_scale`.
  Ciphertext eval_mod(const Evaluator& eval, const Ciphertext& x, double target_scale) const;
  // Standard order: parts whose slots hold the message's coefficients (bit-reversed,
  // halves as coeffs_to_slots gives them) -> the message in the slots at the output scale.
  Ciphertext slots_to_coeffs(const Evaluator& eval, const std::vector<Ciphertext>& parts) const;

  // Which n <= N/4 bootstraps put both halves in one ciphertext of 2n slots.
  bool packed() const { return packed_; }
  // Adds what one bootstrap() performs (ckks/operation_counts.h), at the levels it runs at:
  // what a compiler weighs a bootstrap with against the layers on a chain.
  void count_operations(OperationCounts& counts) const;
  std::size_t cts_rotations() const;  // rotations of one CoeffsToSlots (baby + giant)
  std::size_t stc_rotations() const;

 private:
  void check_config() const;
  // A DFT stage's baby-step count (BootstrapConfig::baby_step_shift).
  std::size_t baby_steps(const Diagonals& stage, std::size_t width) const;
  Ciphertext multiply_by_i(const Evaluator& eval, const Ciphertext& a) const;
  Ciphertext sub_sum(const Evaluator& eval, Ciphertext ct) const;
  Ciphertext apply_stc_stages(const Evaluator& eval, Ciphertext x) const;
  // EvalMod's result over (t/q0 mod 1): 2 pi for the sine alone, 1 with the arcsine step.
  double eval_mod_factor() const;

  const Encoder& encoder_;
  BootstrapConfig config_;
  std::unique_ptr<Context> encapsulation_;  // q0 and p0 only (see EncapsulationKeys)
  bool packed_ = false;
  Polynomial cosine_, arcsine_;
  double stc_input_scale_ = 0;  // scale of the parts entering SlotsToCoeffs (standard order)
  std::vector<LinearTransform> cts_, stc_;
  std::map<long, std::size_t> rotation_levels_;
};

// Merged radix stages of the special FFT as diagonals over `slots` cyclic slots (exposed
// for tests): the forward transform (decode direction) applied to bit-reversed input, or the
// inverse one (encode direction, scaled by 1/n) giving bit-reversed output, on n = 2^log_n
// slots replicated in slots >= n. Stage groups are split as evenly as the stage count
// allows; group g of the inverse comes first in evaluation order.
std::vector<Diagonals> special_fft_stages(const Encoder& encoder, int log_n, std::size_t slots, int groups,
                                          bool inverse);

}  // namespace pfhe::ckks
