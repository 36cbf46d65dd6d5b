#include "ckks/operation_counts.h"

namespace pfhe::ckks {

LevelOperations& LevelOperations::operator+=(const LevelOperations& o) {
  key_switches += o.key_switches;
  hoisted_rotations += o.hoisted_rotations;
  decompositions += o.decompositions;
  plaintext_products += o.plaintext_products;
  diagonal_encodings += o.diagonal_encodings;
  tensor_products += o.tensor_products;
  rescales += o.rescales;
  return *this;
}

OperationCounts& operator+=(OperationCounts& a, const OperationCounts& b) {
  for (const auto& [level, ops] : b) a[level] += ops;
  return a;
}

OperationCounts repeated(const OperationCounts& counts, double times) {
  OperationCounts out;
  for (const auto& [level, ops] : counts) {
    LevelOperations& o = out[level];
    o.key_switches = ops.key_switches * times;
    o.hoisted_rotations = ops.hoisted_rotations * times;
    o.decompositions = ops.decompositions * times;
    o.plaintext_products = ops.plaintext_products * times;
    o.diagonal_encodings = ops.diagonal_encodings * times;
    o.tensor_products = ops.tensor_products * times;
    o.rescales = ops.rescales * times;
  }
  return out;
}

void count_product(OperationCounts& counts, std::size_t level) {
  LevelOperations& ops = counts[level];
  ops.tensor_products += 1;
  ops.key_switches += 1;
  ops.rescales += 1;
}

namespace {

// Work in limb-sized units: NTTs (forward or inverse) and element-wise passes.
struct LimbWork {
  double ntts = 0, passes = 0;
  LimbWork& operator+=(const LimbWork& o) {
    ntts += o.ntts;
    passes += o.passes;
    return *this;
  }
};
LimbWork operator*(double k, const LimbWork& w) { return {k * w.ntts, k * w.passes}; }

// The work of the key-switching parts at `level` (hybrid key switching, ckks/key_switch.h):
// l limbs, alpha special primes, digits of the chain's cut.
struct SwitchWork {
  LimbWork decomposition, inner_product, mod_down;
  double l = 0, extended = 0, digits = 0;

  SwitchWork(const Parameters& p, std::size_t level) {
    l = static_cast<double>(level + 1);
    const double alpha = static_cast<double>(p.p().size());
    extended = l + alpha;
    digits = static_cast<double>(p.digits_at(level));
    // ModUp: the input to coefficients, then each digit's primes converted to the others
    // (one multiply-add per source and target limb) and transformed back.
    decomposition.ntts = l;
    for (std::size_t j = 0; j < p.digits_at(level); ++j) {
      const double beta = static_cast<double>(p.digit_end(j, level) - p.digit_begin(j));
      decomposition.ntts += extended - beta;
      decomposition.passes += beta * (extended - beta);
    }
    inner_product.passes = 2 * digits * extended;  // both outputs, every digit, Q x P
    // ModDown of both outputs: P's limbs to coefficients, converted to Q's limbs,
    // transformed, subtracted and scaled by 1/P.
    mod_down.ntts = 2 * (alpha + l);
    mod_down.passes = 2 * (alpha * l + l);
  }
};

LimbWork work_of(const LevelOperations& ops, const Parameters& p, std::size_t level) {
  const SwitchWork s(p, level);
  const double l = s.l;
  LimbWork full = s.decomposition;
  full += s.inner_product;
  full += s.mod_down;
  full.passes += 2 * l;  // the automorphism (or the relinearized sum)
  LimbWork hoisted = s.inner_product;
  hoisted += s.mod_down;
  hoisted.passes += s.digits * s.extended + l;  // the automorphism of the shared digits
  LimbWork w;
  w += ops.key_switches * full;
  w += ops.hoisted_rotations * hoisted;
  w += ops.decompositions * s.decomposition;
  w += ops.plaintext_products * LimbWork{0, 2 * l};
  w += ops.diagonal_encodings * LimbWork{l, l};  // reduce every limb, NTT it
  w += ops.tensor_products * LimbWork{0, 4 * l};
  w += ops.rescales * LimbWork{2 * l, 2 * l};
  return w;
}

double seconds_of(const LimbWork& w, const Parameters& p) {
  const double ring = static_cast<double>(p.n()) / 65536.0;
  return ring * (w.ntts * kNttLimbSeconds + w.passes * kPassLimbSeconds);
}

}  // namespace

double estimated_seconds(const LevelOperations& ops, const Parameters& params, std::size_t level) {
  return seconds_of(work_of(ops, params, level), params);
}

double estimated_seconds(const OperationCounts& counts, const Parameters& params) {
  double s = 0;
  for (const auto& [level, ops] : counts) s += estimated_seconds(ops, params, level);
  return s;
}

}  // namespace pfhe::ckks
