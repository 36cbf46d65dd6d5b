// What an evaluation costs before it runs: counts of the homomorphic operations it performs
// at each level, and their estimated time on a chain. The graph compiler weighs candidate
// chains with it (nn/parameter_choice.h: the levels between bootstraps); the counts come
// from the geometry of planned transforms (LinearTransform, Bootstrapper, compiled graphs),
// so nothing has to be encrypted or run.
#pragma once
#include <cstddef>
#include <map>

#include "ckks/parameters.h"
#include "ckks/polynomial.h"

namespace pfhe::ckks {

// Operations at one level, each on a two-polynomial ciphertext of that level's limbs.
struct LevelOperations {
  // Full key switches: a decomposition (ModUp), the inner product with the key and a
  // ModDown (a rotation, a relinearization, a conjugation, a giant step of a transform).
  double key_switches = 0;
  // Hoisted rotations: the automorphism of a shared decomposition, the inner product and a
  // ModDown (the baby steps of a transform), and the decompositions they share.
  double hoisted_rotations = 0;
  double decompositions = 0;
  double plaintext_products = 0;  // ciphertext x plaintext, accumulated
  double diagonal_encodings = 0;  // just-in-time plaintexts: every limb reduced and NTT'd
  double tensor_products = 0;     // ciphertext x ciphertext before relinearization
  double rescales = 0;
  LevelOperations& operator+=(const LevelOperations& o);
};
using OperationCounts = std::map<std::size_t, LevelOperations>;  // by level
OperationCounts& operator+=(OperationCounts& a, const OperationCounts& b);
// `times` copies of the operations.
OperationCounts repeated(const OperationCounts& counts, double times);
// One product of two ciphertexts at `level`: the tensor product, its relinearization and
// the rescale.
void count_product(OperationCounts& counts, std::size_t level);

// The products evaluate_polynomial makes (each a tensor product, a relinearization and a
// rescale) for `p` from `level`, at the level each starts from: the same recursion the
// evaluation runs, without ciphertexts.
void count_polynomial(OperationCounts& counts, const Polynomial& p, std::size_t level);

// Estimated seconds of the operations on one thread at the chain of `params`: each
// operation as its forward/inverse NTTs of one limb and its element-wise passes over one
// limb (products, additions, base-conversion terms, automorphisms), times the seconds of
// one of each at N = 2^16 (kNttLimbSeconds, kPassLimbSeconds), scaled by N. What
// decides is how the counts grow with limbs, special primes and digits, not the absolute
// figure. The two constants are a least-squares fit (relative errors) to the P16 table of
// docs/BENCHMARKS.md (rotation, hoisted rotation, ct x pt, rescale, ct x ct at the top and
// mid levels): each of those within -22 % .. +28 % ("Latency estimate" there). It does not
// see memory traffic: the chains it compares keep key switching at a few digits, but a
// half ring of 1 special prime and 20 digits (14 GB of keys) after CryptoFaceNet4's block 2
// is estimated to save 21 % of its time; a lane group measured 9 % (docs/BENCHMARKS.md,
// session 7), against 22 % estimated and 18 % measured after block 3. So the ring-switch
// choice keeps its measured rule (nn/parameter_choice.h).
inline constexpr double kNttLimbSeconds = 0.132e-3;
inline constexpr double kPassLimbSeconds = 0.038e-3;
double estimated_seconds(const OperationCounts& counts, const Parameters& params);

// The estimate of one operation alone (one count of it at `level`): for tests and reports.
double estimated_seconds(const LevelOperations& ops, const Parameters& params, std::size_t level);

}  // namespace pfhe::ckks
