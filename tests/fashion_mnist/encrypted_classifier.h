// The trained Fashion-MNIST model (tests/data/fashion_pcnn.pfhm) set up for encrypted
// classification at 128-bit secure parameters chosen from its depth: a client with the
// secret key and the server's compiled model and evaluator, shared by the CI test and the
// benchmark (bench/fashion_mnist_bench.cpp). The PatchCNN is compiled as a graph
// (PatchCNN::to_graph, the one graph compiler: its four patches in lanes of one ciphertext).
#pragma once
#include <algorithm>
#include <utility>

#include "nn/compiled_graph.h"
#include "nn/model_file.h"
#include "nn/parameter_choice.h"
#include "nn/precision.h"
#include "runtime/client_server.h"
#include "runtime/process_stats.h"

namespace pfhe::test {

inline std::size_t argmax(const std::vector<double>& v) {
  return static_cast<std::size_t>(std::max_element(v.begin(), v.end()) - v.begin());
}

inline nn::PatchCNN load_fashion_model() { return nn::load_model_file(PFHE_SOURCE_DIR "/tests/data/fashion_pcnn.pfhm"); }

struct EncryptedClassifier {
  nn::PatchCNN model = load_fashion_model();
  ckks::Context ctx{ckks::Parameters::create(nn::parameters_for(model))};
  ckks::Encoder enc{ctx};
  nn::CompileTarget target = nn::compile_target(model, ctx.params());
  runtime::Clock::time_point start = runtime::Clock::now();
  nn::CompiledGraph compiled = nn::CompiledGraph::compile(model.to_graph(), enc, target.level, target.scale);
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
