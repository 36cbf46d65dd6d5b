#include "nn/measured_precision.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <stdexcept>
#include <string>

#include "ckks/bootstrapping.h"
#include "ckks/encryptor.h"
#include "ckks/evaluator.h"
#include "ckks/keygen.h"
#include "nn/compiled_graph.h"
#include "nn/precision.h"
#include "ring/poly.h"

namespace pfhe::nn {

namespace {
// The inputs a precision search runs (each candidate is one encrypted run per input).
std::vector<Tensor> first_two(const std::vector<Tensor>& inputs) {
  if (inputs.empty()) throw std::invalid_argument("precision: no calibration inputs to measure on");
  return {inputs.begin(), inputs.begin() + static_cast<std::ptrdiff_t>(std::min<std::size_t>(2, inputs.size()))};
}
}  // namespace

double measured_precision_bits(const Graph& graph, const std::vector<Tensor>& inputs, const ckks::ParameterSpec& spec) {
  return measured_precision_bits(graph, inputs, GraphParameters{spec, std::nullopt, 0}, FitReport{});
}

namespace {
double measure(const Graph& graph, const std::vector<Tensor>& inputs, const GraphParameters& parameters,
               const FitReport& ranges) {
  if (inputs.empty()) throw std::invalid_argument("precision: no calibration inputs to measure on");
  const ckks::Context ctx(ckks::Parameters::create(parameters.spec));
  const ckks::Encoder enc(ctx);
  // Diagonals just in time, no ring switch.
  const CompiledGraph compiled = compile_graph(graph, enc, 0, false, parameters.bootstrapping, &ranges);
  const ckks::Bootstrapper* boot = compiled.bootstrapper();
  const ckks::KeyGenerator keygen(ctx);
  const ckks::RelinKey relin = keygen.create_relin_key();
  const ckks::GaloisKeys galois = boot ? boot->create_galois_keys(keygen, compiled.rotation_levels())
                                       : keygen.create_galois_keys(compiled.rotation_levels());
  const ckks::EncapsulationKeys encapsulation =
      boot && boot->config().ephemeral_weight > 0 ? boot->create_encapsulation_keys(keygen) : ckks::EncapsulationKeys{};
  const ckks::Evaluator eval(ctx, &relin, &galois);
  const ckks::Encryptor encryptor(ctx, keygen.secret_key());
  const ckks::Decryptor decryptor(ctx, keygen.secret_key());
  const std::size_t level = compiled.input_level();
  const double scale = compiled.input_scale();
  std::vector<std::vector<ckks::Ciphertext>> batch;
  for (const Tensor& x : inputs) {
    std::vector<ckks::Ciphertext>& in = batch.emplace_back();
    for (const auto& slots : compiled.pack_inputs(x)) in.push_back(encryptor.encrypt(enc.encode(slots, level, scale)));
  }
  // One batch: each linear step encodes its just-in-time diagonals once for every input.
  const std::vector<ckks::Ciphertext> outs = compiled.run_batch(eval, batch, nullptr, boot ? &encapsulation : nullptr);
  double worst = INFINITY;
  for (std::size_t i = 0; i < inputs.size(); ++i) {
    const Tensor got = compiled.unpack_output(enc.decode_real(decryptor.decrypt(outs[i])));
    worst = std::min(worst, precision_of(got, graph.forward(inputs[i])).bits());
  }
  return worst;
}
}  // namespace

double measured_precision_bits(const Graph& graph, const std::vector<Tensor>& inputs, const GraphParameters& parameters,
                               const FitReport& ranges) {
  const double bits = measure(graph, inputs, parameters, ranges);
  // The measurement's keys and working set are gone; without this, the process kept them
  // (keep_freed_memory_for_reuse) under the compile that follows: ResNet-20's `pfhe
  // compile --precision-bits` peaked at 19.8 GB.
  ring::return_freed_memory();
  return bits;
}

PrecisionChoice parameters_for_precision(const Graph& graph, const std::vector<Tensor>& inputs, double output_max_abs,
                                         double target_bits, double margin_bits) {
  const std::vector<Tensor> runs = first_two(inputs);
  const auto at = [&](int scale_bits) {
    PrecisionChoice c;
    c.scale_bits = scale_bits;
    c.spec = parameters_for(graph, output_max_abs, scale_bits);
    c.base_bits = c.spec.q_bits.front();
    c.estimated_bits = measured_precision_bits(graph, runs, c.spec);
    return c;
  };
  // Upwards only: every step down would be one more encrypted run.
  return smallest_scale_reaching(at, target_bits, margin_bits, "measured", false);
}

GraphPrecisionChoice graph_parameters_for_precision(const Graph& graph, const std::vector<Tensor>& inputs,
                                                    const FitReport& ranges, const GraphParameters& chosen,
                                                    double target_bits, double margin_bits) {
  if (ranges.ranges.empty()) throw std::invalid_argument("precision: the graph's ranges (fit()) are needed");
  const double output_max_abs = ranges.ranges.back().max_abs;
  if (!chosen.bootstrapping) {
    const PrecisionChoice c = parameters_for_precision(graph, inputs, output_max_abs, target_bits, margin_bits);
    return {{c.spec, std::nullopt, chosen.graph_levels}, c.estimated_bits, "scale 2^" + std::to_string(c.scale_bits)};
  }
  check_target_bits(target_bits, margin_bits);
  const std::vector<Tensor> runs = first_two(inputs);
  const double wanted = target_bits + margin_bits;
  GraphPrecisionChoice standard{chosen, measured_precision_bits(graph, runs, chosen, ranges), "standard bootstraps"};
  if (standard.measured_bits >= wanted) return standard;
  // The same scale (a bootstrapping spec states it, ckks::bootstrap_parameter_spec).
  const int scale_bits = std::ilogb(chosen.spec.default_scale);
  const GraphParameters precise =
      graph_parameters(graph, output_max_abs, scale_bits, true, true, static_cast<int>(chosen.compute_levels));
  GraphPrecisionChoice better{precise, measured_precision_bits(graph, runs, precise, ranges),
                              "precise bootstraps (the arcsine step)"};
  if (better.measured_bits >= wanted) return better;
  char message[320];
  std::snprintf(message, sizeof message,
                "precision target of %.1f bits (+%.1f margin) not reached by a graph that bootstraps: measured %.1f "
                "bits with the standard bootstraps and %.1f with the precise ones (docs/BOOTSTRAPPING.md)",
                target_bits, margin_bits, standard.measured_bits, better.measured_bits);
  throw std::invalid_argument(message);
}

}  // namespace pfhe::nn
