// libFuzzer target for every loader: the checksum trailer of files and messages, the CKKS binary format (docs/FORMAT.md), model files
// (docs/MODEL_FORMAT.md: PatchCNNs and graphs), ONNX import, compiled models and their linear transforms, compiled graphs, bundle files and
// the client spec (JSON). Built with
// -DPFHE_BUILD_FUZZ=ON and clang; see docs/FUZZING.md for the corpus and how long it ran.
// Every input must either load or raise SerializationError / ModelFormatError (or
// invalid_argument from the client spec parser): any crash,
// sanitizer report or other exception is a bug.
#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>

#include "ckks/encoder.h"
#include "ckks/linear_transform.h"
#include "ckks/serialization.h"
#include "nn/compiled_graph.h"
#include "nn/graph_file.h"
#include "nn/model_file.h"
#include "nn/onnx_import.h"
#include "nn/patch_cnn.h"
#include "runtime/bundle.h"
#include "runtime/client_server.h"

using namespace pfhe::ckks;

namespace {
// The fixed test-only parameter set the seed corpus was made with (tests/fuzz/make_corpus.cpp).
const Context& context() {
  static const Context ctx([] {
    ParameterSpec spec;
    spec.log_n = 6;
    spec.q_bits = {40, 30};
    spec.p_bits = {40};
    return Parameters::create_insecure_for_testing(spec);
  }());
  return ctx;
}
}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::span<const std::uint8_t> bytes(data, size);
  const Context& ctx = context();
  try { verify_trailer(bytes, "fuzz input"); } catch (const SerializationError&) {}
  try { load_parameters(bytes); } catch (const SerializationError&) {}
  try { load_plaintext(ctx, bytes); } catch (const SerializationError&) {}
  try { load_ciphertext(ctx, bytes); } catch (const SerializationError&) {}
  try { load_seeded_ciphertext(ctx, bytes); } catch (const SerializationError&) {}
  try { load_secret_key(ctx, bytes); } catch (const SerializationError&) {}
  try { load_public_key(ctx, bytes); } catch (const SerializationError&) {}
  try { load_relin_key(ctx, bytes); } catch (const SerializationError&) {}
  try { load_galois_keys(ctx, bytes); } catch (const SerializationError&) {}
  try { load_switching_key(ctx, bytes); } catch (const SerializationError&) {}
  try { pfhe::nn::load_model(bytes); } catch (const pfhe::nn::ModelFormatError&) {}
  try { pfhe::nn::load_graph(bytes); } catch (const pfhe::nn::ModelFormatError&) {}
  try { pfhe::nn::import_onnx(bytes, "fuzz input"); } catch (const pfhe::nn::OnnxImportError&) {}
  static const Encoder encoder(ctx);
  // A compiled model's layers cannot be reached through the fingerprint check of the test
  // parameters above (no backbone fits two levels), so its linear transforms are loaded
  // directly too, copied and in place (the input is the backing).
  try {
    ByteReader r(bytes);
    LinearTransform::load(encoder, r);
  } catch (const SerializationError&) {}
  try {
    const auto backing = std::make_shared<const pfhe::ckks::HeldBytes>(Bytes(bytes.begin(), bytes.end()));
    ByteReader r(backing->bytes);
    LinearTransform::load(encoder, r, backing);
  } catch (const SerializationError&) {}
  try { pfhe::nn::CompiledGraph::load(encoder, bytes); } catch (const SerializationError&) {}
  try {
    const auto backing = std::make_shared<const pfhe::ckks::HeldBytes>(Bytes(bytes.begin(), bytes.end()));
    pfhe::nn::CompiledGraph::load(encoder, backing->bytes, backing);
  } catch (const SerializationError&) {}
  try { pfhe::runtime::load_bundle(bytes); } catch (const SerializationError&) {}
  try {
    pfhe::runtime::ClientSpec::from_json(std::string(reinterpret_cast<const char*>(data), size));
  } catch (const std::invalid_argument&) {}
  return 0;
}
