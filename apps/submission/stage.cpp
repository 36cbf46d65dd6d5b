// The pfhe submission to the HomomorphicEncryption.org face-verification benchmark
// (fhe-benchmarking/face-recognition, docs/submission-interface.md there): one source,
// built once per stage with PFHE_STAGE set to the stage name (apps/CMakeLists.txt). Every
// stage runs from the benchmark's repository root, exits non-zero on failure and writes its
// outputs atomically. Layout under io/<instance>/ (docs/SUBMISSION.md), with the directory
// names whose sizes the harness reports (harness/run_submission.py):
//   client/                secret.key, inputs.bin (prepared tensors), scores.txt -- never read by the server
//   public_keys/           params.pfhe, client.json, eval.keys
//   public_model/          model.pfhm (the public model both sides use)
//   ciphertexts_upload/    <pair>_<k>.cts (encrypted patches of image k of a pair)
//   ciphertexts_download/  scores.cts
//   server/                model.pfhc
// The model is a PatchCNN made deterministically from public information on both sides
// (PFHE_SUBMISSION_MODEL: a .pfhm file; else a synthetic calibrated model of the kind in
// PFHE_SUBMISSION_KIND, default cryptofacenet4). Score = encrypted inner product of the
// two L2-normalised embeddings (cosine similarity).
#include <omp.h>

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>

#include "ckks/serialization.h"
#include "image.h"
#include "nn/model_file.h"
#include "nn/parameter_choice.h"
#include "nn/synthetic.h"
#include "ring/poly.h"
#include "runtime/client_server.h"
#include "runtime/process_stats.h"
#include "test_pairs.h"

using namespace pfhe;
namespace fs = std::filesystem;

namespace {

using runtime::Clock;
using runtime::seconds_since;

struct Instance {
  std::string name;
  std::size_t pairs;
  fs::path io, client, keys, model, upload, download, server, dataset;
};

Instance instance(const std::string& arg) {
  const InstanceSize size = instance_size(arg);
  const fs::path io = fs::path("io") / size.name;
  return {size.name,
          size.pairs,
          io,
          io / "client",
          io / "public_keys",
          io / "public_model",
          io / "ciphertexts_upload",
          io / "ciphertexts_download",
          io / "server",
          fs::path("datasets") / size.name / "intermediate" / "test_pairs.h5"};
}

nn::PatchCNN submission_model() {
  if (const char* path = std::getenv("PFHE_SUBMISSION_MODEL")) return nn::load_model_file(path);
  const char* kind_env = std::getenv("PFHE_SUBMISSION_KIND");
  const nn::SyntheticKind kind = nn::synthetic_kind(kind_env ? kind_env : "cryptofacenet4");
  const std::size_t side = kind.grid * kind.patch;
  return nn::make_synthetic_patch_cnn(kind.shape, kind.grid, kind.patch, kind.embedding, 2025,
                                      nn::synthetic_images(128, {3, side, side}, 2026));
}

// The client's plan and the server's compile of the same model, ring switch included.
nn::CompiledPatchCNN compile(const nn::PatchCNN& model, const ckks::Encoder& enc, nn::Compilation mode) {
  const ckks::Parameters& params = enc.context().params();
  const nn::CompileTarget target = nn::compile_target(model, params);
  auto half_ring = nn::chosen_half_ring(model, params, target.level);
  return mode == nn::Compilation::kPlanOnly
             ? nn::CompiledPatchCNN::plan(model, enc, target.level, target.scale, 0, std::move(half_ring))
             : nn::CompiledPatchCNN::compile(model, enc, target.level, target.scale, std::size_t{1} << 30, 0,
                                             std::move(half_ring));
}

void write_text(const fs::path& path, const std::string& text) { ckks::write_text_file(path.string(), text); }

// Stage 2: the client learns the model's rotation set from a plan of the public model
// (the compiler's lowering without any encoding), then makes its keys. The model file it used is left in public/ so that the
// server compiles exactly the same one without synthesising it again.
void client_key_generation(const Instance& in) {
  fs::create_directories(in.client);
  fs::create_directories(in.keys);
  fs::create_directories(in.model);
  // Saved and read back: the file stores float32, and both sides must use the same weights.
  nn::save_model_file(submission_model(), (in.model / "model.pfhm").string());
  const nn::PatchCNN model = nn::load_model_file((in.model / "model.pfhm").string());
  const ckks::Context ctx(ckks::Parameters::create(nn::parameters_for(model)));
  const ckks::Encoder enc(ctx);
  const nn::CompiledPatchCNN plan = compile(model, enc, nn::Compilation::kPlanOnly);
  const runtime::ClientSpec spec = runtime::ClientSpec::of(plan, ctx.params());
  ckks::write_file((in.keys / "params.pfhe").string(), ckks::save_parameters(ctx.params()));
  spec.write((in.keys / "client.json").string());
  const runtime::SecretKeyFile secret = runtime::generate_keys(ctx, spec, (in.keys / "eval.keys").string());
  runtime::write_secret_key((in.client / "secret.key").string(), ctx, plan.half_ring().get(), secret);
}

// Stage 3: the server compiles the same public model for the client's parameters.
void server_preprocess_model(const Instance& in) {
  fs::create_directories(in.server);
  const ckks::Context ctx(runtime::read_secure_parameters((in.keys / "params.pfhe").string()));
  const ckks::Encoder enc(ctx);
  const fs::path shared = in.model / "model.pfhm";
  const nn::PatchCNN model = fs::exists(shared) ? nn::load_model_file(shared.string()) : submission_model();
  compile(model, enc, nn::Compilation::kFull).save_file((in.server / "model.pfhc").string());
}

// Stage 5: decode, crop and resize every image of the pairs to the model's input.
void client_preprocess_input(const Instance& in) {
  const runtime::ClientSpec spec = runtime::ClientSpec::read((in.keys / "client.json").string());
  const TestPairs pairs = read_test_pairs(in.dataset.string());
  if (pairs.image0.size() != in.pairs)
    throw std::invalid_argument(in.dataset.string() + ": " + std::to_string(pairs.image0.size()) + " pairs, the " +
                                in.name + " instance has " + std::to_string(in.pairs));
  ckks::ByteWriter w;
  w.put<std::uint64_t>(in.pairs);
  const std::size_t side = spec.image_shape().height;
  for (std::size_t i = 0; i < in.pairs; ++i)
    for (const auto* images : {&pairs.image0, &pairs.image1}) {
      const auto& bytes = (*images)[i];
      const nn::Tensor t = app::decode_image(bytes.data(), bytes.size(), side, "pair " + std::to_string(i));
      for (double v : t.data) w.put<float>(static_cast<float>(v));
    }
  ckks::write_file((in.client / "inputs.bin").string(), w.bytes());
}

fs::path encrypted_image(const Instance& in, std::size_t pair, int k) {
  return in.upload / (std::to_string(pair) + "_" + std::to_string(k) + ".cts");
}

// Stage 6: encrypt every prepared image (one bundle of patch groups per image).
void client_encode_encrypt_input(const Instance& in) {
  const runtime::LoadedClient loaded((in.keys / "params.pfhe").string(), (in.keys / "client.json").string(),
                                     (in.client / "secret.key").string());
  const runtime::ClientSpec& spec = loaded.spec;
  const runtime::Client& client = loaded.client;
  const ckks::Bytes inputs = ckks::read_file((in.client / "inputs.bin").string());
  ckks::ByteReader r(inputs);
  if (r.get_count("prepared inputs", 1 << 20) != in.pairs) throw std::invalid_argument("prepared inputs: wrong pair count");
  fs::create_directories(in.upload);
  for (std::size_t i = 0; i < in.pairs; ++i)
    for (int k = 0; k < 2; ++k) {
      nn::Tensor t(spec.image_shape());
      for (double& v : t.data) v = r.get<float>("prepared inputs");
      ckks::write_file(encrypted_image(in, i, k).string(), runtime::save_bundle(client.encrypt_image(t)));
    }
  r.expect_end("prepared inputs");
}

// Stage 7: embeddings of both images of every pair, then their encrypted inner product.
// Never opens client/.
void server_encrypted_compute(const Instance& in) {
  const auto start = Clock::now();
  const runtime::Server server((in.keys / "params.pfhe").string(), (in.server / "model.pfhc").string(),
                               (in.keys / "eval.keys").string());
  const double load_s = seconds_since(start);
  auto executor = runtime::make_thread_executor(static_cast<std::size_t>(omp_get_num_procs()));
  runtime::CiphertextFile scores{0, {}};
  const auto compute_start = Clock::now();
  for (std::size_t i = 0; i < in.pairs; ++i) {
    runtime::CiphertextFile e[2];
    for (int k = 0; k < 2; ++k)
      e[k] = server.infer(runtime::read_ciphertexts(encrypted_image(in, i, k).string(), server.context()), *executor);
    scores.key_set = e[0].key_set;
    scores.ciphertexts.push_back(
        server.model().similarity(server.evaluators().output(), e[0].ciphertexts[0], e[1].ciphertexts[0]));
  }
  const double compute_s = seconds_since(compute_start);
  fs::create_directories(in.download);
  runtime::write_ciphertexts((in.download / "scores.cts").string(), server.output_context(), scores);
  // The harness's schema (harness/utils.py): seconds, pure compute and the stage's total.
  write_text(in.io / "server_reported.json",
             nlohmann::json{{"Encrypted computation", compute_s},
                            {"Total", seconds_since(start)},
                            {"additional_measurements",
                             {{"Loading model and keys", load_s},
                              {"Encrypted computation per pair", compute_s / static_cast<double>(in.pairs)}}}}
                 .dump(1));
}

// Stage 8: decrypt the scores (slot 0 of each ciphertext).
void client_decrypt_decode(const Instance& in) {
  const runtime::LoadedClient loaded((in.keys / "params.pfhe").string(), (in.keys / "client.json").string(),
                                     (in.client / "secret.key").string());
  const runtime::Client& client = loaded.client;
  const runtime::CiphertextFile scores =
      runtime::read_ciphertexts((in.download / "scores.cts").string(), client.output_context());
  if (scores.ciphertexts.size() != in.pairs) throw std::invalid_argument("scores: wrong count");
  std::string text;
  char line[64];
  for (const auto& c : scores.ciphertexts) {
    std::snprintf(line, sizeof line, "%.9g\n", client.decrypt_score({scores.key_set, {c}}));
    text += line;
  }
  write_text(in.client / "scores.txt", text);
}

// Stage 9: the benchmark format, after checking count and finiteness.
void client_postprocess(const Instance& in) {
  std::istringstream s(ckks::read_text_file((in.client / "scores.txt").string()));
  std::string text;
  std::size_t n = 0;
  for (double v; s >> v; ++n) {
    if (!std::isfinite(v)) throw std::invalid_argument("score " + std::to_string(n) + " is not finite");
    char line[64];
    std::snprintf(line, sizeof line, "%.9g\n", v);
    text += line;
  }
  if (n != in.pairs) throw std::invalid_argument("expected " + std::to_string(in.pairs) + " scores, found " + std::to_string(n));
  write_text(in.io / "encrypted_model_predictions.txt", text);
  const auto size = [](const fs::path& p) { return fs::exists(p) ? fs::file_size(p) : 0; };
  std::uintmax_t encrypted_inputs = 0;
  for (const auto& f : fs::directory_iterator(in.upload)) encrypted_inputs += f.file_size();
  const ckks::Parameters params = runtime::read_secure_parameters((in.keys / "params.pfhe").string());
  const char* model_file = std::getenv("PFHE_SUBMISSION_MODEL");
  const char* kind = std::getenv("PFHE_SUBMISSION_KIND");
  write_text(in.io / "provenance.json",
             nlohmann::json{{"software", "pfhe " PFHE_VERSION " (RNS-CKKS, C++20)"},
                            {"model", model_file ? std::string(model_file)
                                                 : std::string("synthetic calibrated ") + (kind ? kind : "cryptofacenet4")},
                            {"parameters", params.describe()},
                            {"security", "128-bit (HomomorphicEncryption.org table)"},
                            {"score", "encrypted inner product of L2-normalised embeddings (cosine similarity)"}}
                 .dump(1));
  write_text(in.io / "submission_reported.json",
             nlohmann::json{{"Bandwidth",
                             {{"evaluation_keys", size(in.keys / "eval.keys")},
                              {"encrypted_inputs", encrypted_inputs},
                              {"encrypted_scores", size(in.download / "scores.cts")}}}}
                 .dump(1));
}

}  // namespace

int main(int argc, char** argv) {
  ring::keep_freed_memory_for_reuse();
  const std::string stage = PFHE_STAGE;
  try {
    if (stage == "server_preprocess_model") {
      // No size argument; every instance's parameters are the same, so the first one
      // present is used.
      bool found = false;
      for (const char* size : {"0", "1", "2", "3"}) {
        const Instance in = instance(size);
        if (!fs::exists(in.keys / "params.pfhe")) continue;
        server_preprocess_model(in);
        found = true;
      }
      if (!found) throw std::invalid_argument("no io/<instance>/public_keys/params.pfhe: run client_key_generation first");
      return 0;
    }
    if (argc != 2) throw std::invalid_argument("usage: " + stage + " <size 0|1|2|3>");
    const Instance in = instance(argv[1]);
    if (stage == "client_key_generation") client_key_generation(in);
    else if (stage == "client_preprocess_input") client_preprocess_input(in);
    else if (stage == "client_encode_encrypt_input") client_encode_encrypt_input(in);
    else if (stage == "server_encrypted_compute") server_encrypted_compute(in);
    else if (stage == "client_decrypt_decode") client_decrypt_decode(in);
    else if (stage == "client_postprocess") client_postprocess(in);
    else throw std::logic_error("unknown stage " + stage);
    return 0;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "%s: error: %s\n", stage.c_str(), e.what());
    return 1;
  }
}
