// The trained Fashion-MNIST model set up for encrypted classification at 128-bit secure
// parameters chosen from its depth: a client with the secret key and the server's compiled
// model and evaluator, shared by the CI test and the benchmark (bench/fashion_mnist_bench.cpp).
// The model comes either from its pfhe model file (tests/data/fashion_pcnn.pfhm, compiled
// as PatchCNN::to_graph) or from the ONNX file torch wrote for it
// (tests/data/fashion_pcnn.onnx, imported and compiled as `pfhe compile` does); both are
// graphs through the one compiler, their four patches in lanes of one ciphertext.
#pragma once
#include <algorithm>
#include <utility>

#include "nn/compiled_graph.h"
#include "nn/fit.h"
#include "nn/model_file.h"
#include "nn/onnx_import.h"
#include "nn/parameter_choice.h"
#include "nn/precision.h"
#include "runtime/client_server.h"
#include "runtime/process_stats.h"

namespace pfhe::test {

inline std::size_t argmax(const std::vector<double>& v) {
  return static_cast<std::size_t>(std::max_element(v.begin(), v.end()) - v.begin());
}

inline const char* kFashionModelFile = PFHE_SOURCE_DIR "/tests/data/fashion_pcnn.pfhm";
inline const char* kFashionOnnxFile = PFHE_SOURCE_DIR "/tests/data/fashion_pcnn.onnx";

inline nn::PatchCNN load_fashion_model() { return nn::load_model_file(kFashionModelFile); }

// A model graph with its parameters and the level its input is encrypted at.
struct ClassifierModel {
  nn::Graph graph;
  ckks::ParameterSpec spec;
  std::size_t input_level = 0;
};

// The pfhe model file: parameters from the PatchCNN's depth (nn::parameters_for).
inline ClassifierModel fashion_model_from_file() {
  const nn::PatchCNN model = load_fashion_model();
  const ckks::ParameterSpec spec = nn::parameters_for(model);
  return {model.to_graph(), spec, nn::compile_target(model, ckks::Parameters::create(spec)).level};
}

// The ONNX export: imported, its output range measured on `calibration` images, parameters
// chosen from the graph as `pfhe compile --model M.onnx` chooses them.
inline ClassifierModel fashion_model_from_onnx(const std::vector<nn::Tensor>& calibration) {
  nn::Graph graph = nn::import_onnx_file(kFashionOnnxFile);
  const nn::FitReport ranges = nn::fit(graph, calibration, nn::kIntermediateLimit);
  const ckks::ParameterSpec spec = nn::parameters_for(graph, ranges.ranges.back().max_abs);
  const std::size_t top = ckks::Parameters::create(spec).max_level();
  return {std::move(graph), spec, top};
}

struct EncryptedClassifier {
  explicit EncryptedClassifier(ClassifierModel m)
      : graph(std::move(m.graph)), ctx(ckks::Parameters::create(m.spec)), input_level(m.input_level) {}

  nn::Graph graph;
  ckks::Context ctx;
  std::size_t input_level;
  ckks::Encoder enc{ctx};
  runtime::Clock::time_point start = runtime::Clock::now();
  nn::CompiledGraph compiled = nn::CompiledGraph::compile(graph, enc, input_level, ctx.params().default_scale());
  double compile_seconds = runtime::seconds_since(start);
  runtime::ClientSpec spec = runtime::ClientSpec::of(compiled, ctx.params());
  std::pair<runtime::SecretKeyFile, runtime::EvaluationKeys> keys = runtime::generate_keys(ctx, spec);
  double keygen_seconds = runtime::seconds_since(start) - compile_seconds;
  runtime::Client client{ctx, spec, keys.first};
  ckks::Evaluator eval{ctx, &keys.second.relin, &keys.second.galois};

  // The client encrypts the image's patch groups, the server evaluates the graph, the
  // client decrypts the logits.
  nn::Tensor logits(const nn::Tensor& image) const {
    const runtime::CiphertextFile patches = runtime::load_ciphertexts(runtime::view_of(client.encrypt_image(image)), ctx);
    return client.decrypt_output({patches.key_set, {compiled.run(eval, patches.ciphertexts)}});
  }
};

}  // namespace pfhe::test
