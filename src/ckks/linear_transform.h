// Linear maps on slots given by their non-zero generalized diagonals,
//   y = sum_k diag_k (.) rot(x, k),   diag_k[i] = M[i][(i + k) mod n],
// evaluated with baby-step giant-step: k = g + b with g a multiple of the baby-step count
// n1, y = sum_g rot( sum_b rot(diag_{g+b}, -g) (.) rot(x, b), g ). The baby rotations of x
// share one decomposition (hoisting); the diagonals are pre-rotated by -g when encoded; the
// giant-step rotations are summed over Q x P and divided by P once (RotationSum), or
// folded into each other (GiantSteps::kChained).
#pragma once
#include <atomic>
#include <complex>
#include <map>
#include <memory>
#include <optional>
#include <span>
#include <vector>

#include "ckks/byte_stream.h"
#include "ckks/encoder.h"
#include "ckks/evaluator.h"
#include "ckks/operation_counts.h"

namespace pfhe::ckks {

using Diagonals = std::map<long, std::vector<std::complex<double>>>;

// Encoded: every diagonal is encoded once, at construction (fast to apply; (level+1) limbs
// of N words each). JustInTime: the scaled, rounded coefficients are kept (one N-word
// vector per diagonal) and reduced + transformed inside apply; the encoder must outlive
// the transform.
// PlanOnly: no diagonal values at all, only which diagonals exist (LinearTransform::plan):
// enough to list the rotation keys a client must generate; apply() and save() refuse it.
enum class DiagonalStorage { kEncoded, kJustInTime, kPlanOnly };

// How the giant steps are rotated. kSummed: each row by its own step over Q x P, one
// division by P for all (RotationSum: ~0.67 of a rotation each), one Galois key per giant
// step. kChained: Horner-like, from the outermost step inward on each side of 0, each fold
// a full rotation by the gap to the next step: the same number of rotations at ~1.5x the
// time, but one key per distinct gap (steps n1, 2 n1, 3 n1 ... need one). For settings
// whose keys bound memory (a bootstrapped network holds keys at up to 4 digits and 37
// limbs: ~150 MB each at N = 2^16).
enum class GiantSteps : std::uint8_t { kSummed = 0, kChained = 1 };

class LinearTransform {
 public:
  // diagonals: index k in (-slots, slots) -> `slots` values. level: the level of the input
  // ciphertext. The diagonals are encoded at `diagonal_scale` (0: q_level, so that rescaling
  // the result restores the input scale exactly; q_level * t / s maps an input of scale s
  // to an output of scale t). baby_steps = 0 picks the count minimising rotations.
  LinearTransform(const Encoder& encoder, const Diagonals& diagonals, std::size_t slots,
                  std::size_t level, std::size_t baby_steps = 0, double diagonal_scale = 0,
                  DiagonalStorage storage = DiagonalStorage::kEncoded, GiantSteps giant_steps = GiantSteps::kSummed);

  // The geometry of a transform with diagonals at these indices (baby steps chosen as the
  // constructor would), without their values.
  static LinearTransform plan(const Encoder& encoder, const std::vector<long>& indices, std::size_t slots,
                              std::size_t level, double diagonal_scale, GiantSteps giant_steps = GiantSteps::kSummed);

  // Bytes the encoded plaintexts of these diagonals would take at this level.
  static std::size_t encoded_bytes(const Context& context, std::size_t diagonals, std::size_t level);

  std::size_t slots() const { return slots_; }
  std::size_t level() const { return level_; }
  std::size_t baby_steps() const { return baby_steps_; }
  std::size_t diagonal_count() const;
  // Rotations one apply() performs: hoisted baby steps and (full) giant steps.
  std::size_t baby_rotations() const;
  std::size_t giant_rotations() const;
  // Rotation steps whose Galois keys evaluation needs (baby steps and giant steps).
  std::vector<long> rotation_steps() const;
  std::size_t plaintext_bytes() const;  // memory held for the diagonals
  // Adds what one apply() and its rescale perform at `level` (ckks/operation_counts.h; the
  // transform's own level, or another chain's for the same geometry): the shared
  // decomposition, the hoisted baby steps, the giant steps (each counted as a full key
  // switch; summed ones cost ~0.7 of that), the diagonal products, and the encoding of each
  // diagonal not encoded yet (a plan's: all of them, as a just-in-time transform would).
  void count_operations(OperationCounts& counts, std::size_t level) const;
  DiagonalStorage storage() const { return storage_; }
  GiantSteps giant_steps() const { return giant_steps_; }
  const Context& encoder_context() const { return encoder_->context(); }
  // Switches a just-in-time transform to encoded storage (encodes every diagonal now).
  void encode_all();

  double diagonal_scale() const { return diagonal_scale_; }
  // Result: level unchanged, scale = input scale * diagonal_scale (rescale next).
  Ciphertext apply(const Evaluator& eval, const Ciphertext& input) const;
  // apply() and a rescale: level - 1, scale = input scale * diagonal_scale / q_level. With
  // summed giant steps their division by P and the rescale are one division by P q_level
  // (RotationSum::result_rescaled): one rounding instead of two, l NTTs fewer per polynomial.
  Ciphertext apply_rescaled(const Evaluator& eval, const Ciphertext& input) const;
  // apply() (or apply_rescaled()) to several inputs at once, results in their order, each
  // byte-identical to its own apply(). A diagonal encoded just in time is made once per limb
  // for all of them: a batch of images through one layer pays its diagonals' encoding once.
  std::vector<Ciphertext> apply(const Evaluator& eval, std::span<const Ciphertext> inputs, bool rescale) const;

  // Stored form (inside a compiled model file): geometry, then every diagonal either as a
  // serialized plaintext or as its rounded coefficients. load validates everything.
  void save(ByteWriter& w) const;
  // With `backing` (what keeps the reader's bytes alive, e.g. a file mapping), rounded
  // coefficients are used in place instead of copied, and given back to the backing
  // (Backing::release) after each use in apply(): a mapped model's just-in-time diagonals
  // are resident only while they are encoded. Their range is checked at first use (a
  // file's corruption is its checksum's to catch; the values are not read at load).
  static LinearTransform load(const Encoder& encoder, ByteReader& r, const std::shared_ptr<const Backing>& backing = {});

  // The baby-step count that minimises baby + giant rotations for these diagonal indices.
  static std::size_t optimal_baby_steps(const std::vector<long>& indices, std::size_t slots);

 private:
  explicit LinearTransform(const Encoder& encoder)
      : encoder_(&encoder), slots_(0), level_(0), baby_steps_(0), diagonal_scale_(0),
        storage_(DiagonalStorage::kEncoded), giant_steps_(GiantSteps::kSummed) {}
  // The bit width of in-place coefficients, measured by whichever thread uses them first
  // (threads that race measure the same value): loading does not read the diagonals
  // (measuring CryptoFaceNet4's 3.4 GB was most of its load time, and faulted the pages in
  // twice), the first product reads them anyway. -1 until measured.
  struct MeasuredWidth {
    MeasuredWidth() = default;
    MeasuredWidth(const MeasuredWidth& other) : bits(other.bits.load(std::memory_order_relaxed)) {}
    mutable std::atomic<int> bits{-1};
  };
  struct Term {
    std::optional<Plaintext> encoded;              // kEncoded
    Encoder::RoundedCoefficients coefficients;     // kJustInTime: only reduction + NTT left
    bool in_place = false;                         // coefficients viewed in backing_'s bytes
    MeasuredWidth width;                           // in place only
    // The coefficients with their width (measured now on first use; throws
    // SerializationError for values beyond 62 bits, which no compiler writes).
    Encoder::RoundedCoefficients measured() const;
  };
  // Gives an in-place term's coefficient bytes back to the backing.
  void release(const Term& term) const;
  // *acc += diagonal (encoded now if kept as coefficients) * *rotated, for a batch of
  // products computed limb by limb (Evaluator::multiply_plain_accumulate).
  struct Product {
    Ciphertext* acc;
    const Ciphertext* rotated;
    const Term* term;
  };
  void accumulate(const Evaluator& eval, const std::vector<Product>& products) const;
  // apply() of a batch, with or without the rescale.
  std::vector<Ciphertext> evaluate(const Evaluator& eval, std::span<const Ciphertext> inputs, bool rescale) const;
  // The baby steps the diagonals use, sorted, 0 included when present (one hoisted
  // rotation each in apply(), the identity for 0).
  std::vector<long> baby_steps_used() const;
  // The giant steps (as stored, in [0, slots)) in the order kChained folds them: positive
  // offsets from the largest down, then negative ones (k - slots for k > slots / 2) from
  // the most negative up, 0 last.
  std::vector<long> fold_order() const;
  const Encoder* encoder_;
  std::size_t slots_, level_, baby_steps_;
  double diagonal_scale_;
  DiagonalStorage storage_;
  GiantSteps giant_steps_;
  // giant step g -> (baby step b -> rot(diag_{g+b}, -g))
  std::map<long, std::map<long, Term>> terms_;
  std::shared_ptr<const Backing> backing_;  // set when terms are used in place
};

}  // namespace pfhe::ckks
