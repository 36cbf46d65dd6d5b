// The precision report of an encrypted result against its float64 reference: what the CLI,
// the benchmarks and the tests print and check.
#pragma once
#include <algorithm>
#include <cmath>
#include <stdexcept>
#include <string>

#include "nn/tensor.h"

namespace pfhe::nn {

struct Precision {
  double max_abs = 0, mean_abs = 0;
  double relative = 0;  // max |got - want| / max |want|
  double bits() const { return -std::log2(relative); }
};

// Throws std::invalid_argument when the sizes differ or the reference is not finite (a
// comparison with NaN would pass every bound).
inline Precision precision_of(const Tensor& got, const Tensor& want) {
  if (got.data.size() != want.data.size() || want.data.empty())
    throw std::invalid_argument("precision: " + std::to_string(got.data.size()) + " values against a reference of " +
                                std::to_string(want.data.size()));
  if (!std::all_of(want.data.begin(), want.data.end(), [](double v) { return std::isfinite(v); }))
    throw std::invalid_argument("the float64 reference output is not finite: this input drives the model far "
                                "outside the value ranges it was calibrated on");
  Precision p;
  double max_ref = 0;
  for (std::size_t i = 0; i < want.data.size(); ++i) {
    const double err = std::fabs(got.data[i] - want.data[i]);
    p.max_abs = std::max(p.max_abs, err);
    p.mean_abs += err / static_cast<double>(want.data.size());
    max_ref = std::max(max_ref, std::fabs(want.data[i]));
  }
  p.relative = p.max_abs / max_ref;
  return p;
}

}  // namespace pfhe::nn
