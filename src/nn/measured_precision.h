// A graph's parameters from a precision target (`pfhe compile --precision-bits B` on a
// graph model, `Model.compile(precision_bits=B)` in Python). A PatchCNN's precision is
// estimated by a noise simulation of its known structure (nn/noise_estimate.h); a graph
// may be any network, so its precision is measured instead: the graph is compiled at a
// candidate scale and run encrypted on calibration inputs under a key pair generated for
// the measurement (from the OS CSPRNG, at the candidate's 128-bit secure parameters) and
// dropped after it; nothing a client encrypts ever meets that key.
//
// Search: precision grows about one bit per bit of scale (the roundings' error is fixed
// in absolute terms and divided by the scale), so one run at the default 2^40 predicts the
// scale for target + margin bits; that scale is measured and raised a bit at a time until
// it reaches them. Two or three encrypted runs in all.
#pragma once
#include <string>
#include <vector>

#include "nn/fit.h"
#include "nn/graph.h"
#include "nn/parameter_choice.h"

namespace pfhe::nn {

// The precision in bits (nn::Precision::bits, the worst over `inputs`) of `graph` run
// encrypted at `spec` (inputs at its top level and default scale, no ring switch).
double measured_precision_bits(const Graph& graph, const std::vector<Tensor>& inputs, const ckks::ParameterSpec& spec);
// The same for parameters that may bootstrap (compiled as compile_graph does, bootstraps
// placed from `ranges`; the measurement's keys include the bootstrapping keys).
double measured_precision_bits(const Graph& graph, const std::vector<Tensor>& inputs, const GraphParameters& parameters,
                               const FitReport& ranges);

// The smallest scale in [kMinScaleBits, kMaxScaleBits] whose measured precision on
// `inputs` (at most the first two are run) reaches target_bits + margin_bits, q_0 from
// the output's range `output_max_abs` (fit()), as parameters_for(graph, ...) builds them.
// PrecisionChoice::estimated_bits holds the measured precision. Throws
// std::invalid_argument when the target is out of (0, 40], there are no inputs, or no scale
// reaches it.
PrecisionChoice parameters_for_precision(const Graph& graph, const std::vector<Tensor>& inputs, double output_max_abs,
                                         double target_bits, double margin_bits = 1.0);

// A precision target for the parameters graph_parameters chose (`pfhe compile
// --precision-bits B` on a graph, Python's `Model.compile(precision_bits=B)`), measured on
// at most the first two `inputs`:
// - a graph without bootstraps: the smallest scale reaching target + margin (above);
// - a graph that bootstraps (its scale stays 2^40: a bootstrap's error does not shrink
//   with the scale): `chosen` if it reaches target + margin, else the same graph with
//   precise bootstraps (graph_parameters(..., precise_bootstraps)), else
//   std::invalid_argument with both measurements. Decision: measure rather than predict,
//   because how a bootstrap's error (21-22 worst-slot bits at N = 2^16) reaches the output
//   depends on the layers after it.
struct GraphPrecisionChoice {
  GraphParameters parameters;
  double measured_bits = 0;
  std::string what;  // for progress output: "scale 2^S", "standard bootstraps", "precise bootstraps"
};
GraphPrecisionChoice graph_parameters_for_precision(const Graph& graph, const std::vector<Tensor>& inputs,
                                                    const FitReport& ranges, const GraphParameters& chosen,
                                                    double target_bits, double margin_bits = 1.0);

}  // namespace pfhe::nn
