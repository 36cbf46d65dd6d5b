// fit: run the float64 reference on calibration images, fit the L2 polynomial, record the
// value range at every polynomial input and layer output, and check that the encrypted
// program can hold them: the ranges are what decides the CKKS scale/headroom trade-off.
#pragma once
#include <string>
#include <vector>

#include "nn/graph.h"
#include "nn/patch_cnn.h"

namespace pfhe::nn {

struct LayerRange {
  std::string name;  // e.g. "nets.0.layers.1.herpn2 input"
  double max_abs = 0;
};

struct FitReport {
  std::vector<LayerRange> ranges;    // in evaluation order, over all images
  double l2_domain_lo = 0, l2_domain_hi = 0;  // the fitted interval [mu - sigma (clamped), mu + sigma]
  double y_min = 0, y_max = 0;       // observed sum of squares of the embedding
  double fraction_outside = 0;       // of the images, y outside the fitted interval
  double max_abs() const;            // largest |value| anywhere
};

// Fits model.l2 on the images (not for a classifier) and reports the ranges. Throws
// std::invalid_argument if a value is not finite, or if max |value| * headroom_factor
// exceeds `value_limit` (pass the largest magnitude the chosen parameters decrypt
// correctly, e.g. q_0 / (2 scale)).
FitReport fit(PatchCNN& model, const std::vector<Tensor>& images, double value_limit, double headroom_factor = 4.0);

// The ranges of a fitted model on these images, its L2 polynomial unchanged (l2_domain_*
// and fraction_outside then say how well the images match the statistics it was fitted
// on): what `pfhe compile` checks a model file with.
FitReport measure_ranges(const PatchCNN& model, const std::vector<Tensor>& images, double value_limit,
                         double headroom_factor = 4.0);

// The same for a model graph (nn/graph.h): one range per node (named by the node), and
// std::invalid_argument when a PolynomialActivation's input leaves the domain it was
// designed for ([lower, upper]), besides the value-limit check above.
FitReport fit(const Graph& graph, const std::vector<Tensor>& inputs, double value_limit, double headroom_factor = 4.0);

}  // namespace pfhe::nn
