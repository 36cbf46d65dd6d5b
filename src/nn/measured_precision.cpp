#include "nn/measured_precision.h"

#include <algorithm>
#include <cmath>
#include <stdexcept>
#include <string>

#include "ckks/encryptor.h"
#include "ckks/evaluator.h"
#include "ckks/keygen.h"
#include "nn/compiled_graph.h"
#include "nn/precision.h"

namespace pfhe::nn {

double measured_precision_bits(const Graph& graph, const std::vector<Tensor>& inputs, const ckks::ParameterSpec& spec) {
  if (inputs.empty()) throw std::invalid_argument("precision: no calibration inputs to measure on");
  const ckks::Context ctx(ckks::Parameters::create(spec));
  const ckks::Encoder enc(ctx);
  const std::size_t level = ctx.params().max_level();
  const double scale = ctx.params().default_scale();
  const CompiledGraph compiled = CompiledGraph::compile(graph, enc, level, scale, 0);  // diagonals just in time
  const ckks::KeyGenerator keygen(ctx);
  const ckks::RelinKey relin = keygen.create_relin_key();
  const ckks::GaloisKeys galois = keygen.create_galois_keys(compiled.rotation_levels());
  const ckks::Evaluator eval(ctx, &relin, &galois);
  const ckks::Encryptor encryptor(ctx, keygen.secret_key());
  const ckks::Decryptor decryptor(ctx, keygen.secret_key());
  double worst = INFINITY;
  for (const Tensor& x : inputs) {
    std::vector<ckks::Ciphertext> in;
    for (const auto& slots : compiled.pack_inputs(x)) in.push_back(encryptor.encrypt(enc.encode(slots, level, scale)));
    const Tensor got = compiled.unpack_output(enc.decode_real(decryptor.decrypt(compiled.run(eval, in))));
    worst = std::min(worst, precision_of(got, graph.forward(x)).bits());
  }
  return worst;
}

PrecisionChoice parameters_for_precision(const Graph& graph, const std::vector<Tensor>& inputs, double output_max_abs,
                                         double target_bits, double margin_bits) {
  if (inputs.empty()) throw std::invalid_argument("precision: no calibration inputs to measure on");
  const std::vector<Tensor> runs(inputs.begin(),
                                 inputs.begin() + static_cast<std::ptrdiff_t>(std::min<std::size_t>(2, inputs.size())));
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

}  // namespace pfhe::nn
