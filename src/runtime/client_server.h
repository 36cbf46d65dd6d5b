// The client/server split of encrypted inference of a compiled model, shared by the CLI (apps/pfhe)
// and the benchmark-harness stages. The client holds the secret key: it generates keys
// for the rotation set the compiled model needs, encrypts image patches and decrypts
// results. The server holds the compiled model and the evaluation keys only.
#pragma once
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "ckks/encoder.h"
#include "ckks/encryptor.h"
#include "ckks/evaluator.h"
#include "nn/compiled_graph.h"
#include "runtime/bundle.h"
#include "runtime/executor.h"
#include "runtime/key_files.h"
#include "runtime/process_stats.h"

namespace pfhe::runtime {

// What a client must know about a compiled model (JSON written next to the artefact):
// the parameter fingerprint, the input's shape and how it is cut into patches (a
// PatchCNN's grid; a graph takes its input whole, grid 1), how patches are packed and at
// which level and scale they are encrypted, how the output comes back, which rotation
// keys to generate at which level, where the model switches to the half ring (its keys and
// the output then belong to that ring), and which keys its bootstraps need.
struct ClientSpec {
  std::uint64_t fingerprint = 0;
  nn::Shape image;        // the whole input (C, H, W)
  std::size_t grid = 1;   // cut into grid x grid patches of (C, H / grid, W / grid)
  std::size_t input_level = 0;
  double input_scale = 0;
  nn::Layout input_layout, output_layout;
  std::map<long, std::size_t> rotation_levels;
  // The output is logits (a classifier PatchCNN, or a graph's output: its values), not a
  // normalised embedding (a PatchCNN's, or a graph's ending in L2Normalize).
  bool classifier = false;
  std::optional<nn::RingSwitchChoice> ring_switch;
  std::uint64_t half_ring_fingerprint = 0;  // with a ring switch
  std::map<long, std::size_t> half_ring_rotation_levels;
  // With bootstraps: the conjugation key's level and the ephemeral weight of encapsulation
  // (0: none); rotation_levels already holds the bootstrapper's rotations.
  std::optional<std::size_t> conjugation_level;
  int ephemeral_weight = 0;

  // The half ring of `big` (these parameters) the spec names, checked against its
  // fingerprint; null without a ring switch.
  std::shared_ptr<const nn::HalfRing> half_ring(const ckks::Parameters& big) const;
  KeyRequest key_request() const {
    return {rotation_levels, half_ring_rotation_levels, conjugation_level, ephemeral_weight};
  }

  const nn::Shape& image_shape() const { return image; }
  nn::Shape patch_shape() const { return {image.channels, image.height / grid, image.width / grid}; }
  std::string to_json() const;
  // Validates every field (throws std::invalid_argument naming the problem).
  static ClientSpec from_json(const std::string& text);
  // client.json on disk; errors name the path.
  static ClientSpec read(const std::string& path);
  void write(const std::string& path) const;
  static ClientSpec of(const nn::CompiledGraph& model, const ckks::Parameters& params);
};

// What `pfhe compile` writes for a compiled graph, into `dir` (created if missing):
// params.pfhe, model.pfhc (what ServedModel maps) and client.json (ClientSpec::of).
void write_compiled_graph(const std::string& dir, const ckks::Parameters& params, const nn::CompiledGraph& model);

// Reads parameters and refuses insecure (test-only) sets: the CLI never uses them.
ckks::Parameters read_secure_parameters(const std::string& path);

// Not copyable or movable: its encryptor and decryptor refer to its own secret key.
struct Client {
  // `secret_key` as read_secret_key(path, ctx, spec.half_ring(...).get()) gives it.
  Client(const ckks::Context& ctx, const ClientSpec& spec, SecretKeyFile secret_key);
  Client(const ckks::Context& ctx, const ClientSpec& spec, std::shared_ptr<const nn::HalfRing> half_ring,
         SecretKeyFile secret_key);
  // One seeded ciphertext per lane group of patches (compressed), in group order (one for
  // an input taken whole), tagged with the key set. The image must have the spec's shape.
  Bundle encrypt_image(const nn::Tensor& image) const;
  // Both check that the file belongs to this client's key set.
  nn::Tensor decrypt_output(const CiphertextFile& file) const;
  double decrypt_score(const CiphertextFile& file) const;  // slot 0
  Client(const Client&) = delete;
  Client& operator=(const Client&) = delete;

  // The ring of the results (the half ring's after a switch): the context to read them in.
  const ckks::Context& output_context() const { return half_ring ? half_ring->context : ctx; }

  const ckks::Context& ctx;
  ClientSpec spec;
  std::shared_ptr<const nn::HalfRing> half_ring;
  SecretKeyFile secret_key;  // owned: the encryptor and decryptor refer to it
  ckks::Encoder encoder;
  ckks::Encryptor encryptor;
  ckks::Decryptor decryptor;  // of the output ring

 private:
  const ckks::Encoder& output_encoder() const { return half_ring ? half_ring->encoder : encoder; }
};

// A client from its files (parameters, spec, secret key), owning its context; errors name
// the file. Not copyable or movable (the client refers to the context).
struct LoadedClient {
  LoadedClient(const std::string& params_path, const std::string& spec_path, const std::string& secret_key_path);
  const ckks::Context ctx;
  const ClientSpec spec;
  const std::shared_ptr<const nn::HalfRing> half_ring;
  const Client client;
};

// Creates the client's secret key(s) and the evaluation keys the spec asks for.
std::pair<SecretKeyFile, EvaluationKeys> generate_keys(const ckks::Context& ctx, const ClientSpec& spec);
// The same, with the evaluation keys written to `eval_keys_path` as they are made (the key
// set is never in memory at once); returns the secret key(s).
SecretKeyFile generate_keys(const ckks::Context& ctx, const ClientSpec& spec, const std::string& eval_keys_path);

// The evaluators of a compiled model over one key set: the big ring's and, with a ring
// switch, the half ring's together with the switch key. Refers to `keys` and `half_ring`
// (both must outlive it); not copyable or movable.
class Evaluators {
 public:
  // Throws std::invalid_argument when the keys lack the half ring's part the model needs.
  Evaluators(const ckks::Context& ctx, const nn::HalfRing* half_ring, const EvaluationKeys& keys);
  Evaluators(const Evaluators&) = delete;
  Evaluators& operator=(const Evaluators&) = delete;

  const ckks::Evaluator& big() const { return big_; }
  // Results (aggregation, normalisation, similarity, matching) are evaluated here.
  const ckks::Evaluator& output() const { return half_ ? *half_ : big_; }
  const nn::HalfRingEvaluation* half_ring() const { return switch_ ? &*switch_ : nullptr; }
  TaskRings rings() const { return {big_.context(), output().context()}; }

 private:
  ckks::Evaluator big_;
  std::optional<ckks::Evaluator> half_;
  std::optional<nn::HalfRingEvaluation> switch_;
};

// What a server loads once and shares with every client: the parameters, the encoder and
// the compiled model (or, given a PatchCNN model file, the model compiled per task).
// Clients' evaluation keys are separate KeySets, so one loaded model serves many key sets.
class ServedModel {
 public:
  // `model_path` is a compiled artefact (model.pfhc from `pfhe compile`, used in place from
  // its mapping) or a model file (.pfhm). A graph model file is compiled here as `pfhe
  // compile` compiles it. A PatchCNN model file is compiled per task (nn::Compilation::
  // kPerTask): the server keeps the plan of its branches (their rotation keys, no
  // diagonals) and every task compiles its lane group when it runs and drops it after
  // (compiling_graph_tasks), for models whose artefact would not fit on disk or in memory.
  // `lanes` (PatchCNN model files only; 0: as many as fit) must be what the client's spec
  // was planned with (`pfhe compile --plan-only --lanes`).
  ServedModel(const std::string& params_path, const std::string& model_path, std::size_t lanes = 0);
  // In memory: `compile` builds the model with this object's encoder (tests, embedding).
  ServedModel(const ckks::Parameters& params, const std::function<nn::CompiledGraph(const ckks::Encoder&)>& compile);
  ServedModel(const ServedModel&) = delete;
  ServedModel& operator=(const ServedModel&) = delete;

  const ckks::Context& context() const { return *ctx_; }  // of the encrypted input
  const ckks::Encoder& encoder() const { return *enc_; }
  const nn::CompiledGraph& graph() const { return *graph_; }
  // Ciphertexts one inference takes (1, or its patches' lane groups) and the tasks it hands
  // to an executor (the branches of every parallel region: a PatchCNN's lane groups).
  std::size_t inputs() const { return graph_->inputs(); }
  std::size_t tasks() const;
  std::map<long, std::size_t> rotation_levels() const { return graph_->rotation_levels(); }
  // Null when the model does not switch rings.
  std::shared_ptr<const nn::HalfRing> half_ring() const { return graph_->half_ring(); }
  // The context of the encapsulation keys its bootstraps use (null: none).
  const ckks::Context* encapsulation_context() const {
    return graph_->bootstrapper() ? graph_->bootstrapper()->encapsulation_context() : nullptr;
  }
  ClientSpec client_spec() const { return ClientSpec::of(*graph_, ctx_->params()); }
  // True when tasks compile their lane group (a PatchCNN model file was given).
  bool compiles_per_task() const { return weights_ != nullptr; }
  double load_seconds() const { return load_seconds_; }

 private:
  friend class KeySet;
  std::unique_ptr<ckks::Context> ctx_;
  std::unique_ptr<ckks::Encoder> enc_;
  std::unique_ptr<nn::Graph> weights_;  // only when compiling per task (a PatchCNN model file)
  std::unique_ptr<nn::CompiledGraph> graph_;
  double load_seconds_ = 0;
};

// One client's evaluation keys for a served model, checked against the model's rotation
// set, with their evaluators; inference and matching for that client. Refers to `model`,
// which must outlive it; not copyable or movable.
class KeySet {
 public:
  // `keys_path` is a key file or its key cache (runtime/key_cache.h: mapped in place).
  // Errors name it.
  KeySet(const ServedModel& model, const std::string& keys_path);
  KeySet(const ServedModel& model, EvaluationKeys keys, const std::string& what = "the evaluation keys");
  KeySet(const KeySet&) = delete;
  KeySet& operator=(const KeySet&) = delete;

  std::uint64_t tag() const { return keys_.key_set; }
  // The output's meaning (embedding or logits) and geometry.
  const ClientSpec& spec() const { return spec_; }
  const ServedModel& served_model() const { return model_; }
  const Evaluators& evaluators() const { return *evaluators_; }
  // Of the results (embeddings, templates, scores): the half ring's when the model switches.
  const ckks::Context& output_context() const { return evaluators_->output().context(); }
  TaskRings rings() const { return evaluators_->rings(); }
  TaskFunction tasks() const;
  double load_seconds() const { return load_seconds_; }

  // The graph's steps, each parallel region's branches on the executor (tasks numbered
  // across regions: a PatchCNN's lane groups), then the sums and the rest (a PatchCNN's
  // normalisation unless it is a classifier). The input must belong to this key set; the
  // result carries it too.
  CiphertextFile infer(const CiphertextFile& input, Executor& executor, RunStats* stats = nullptr) const;
  // The same with another task function (e.g. compiling_graph_tasks).
  CiphertextFile infer(const CiphertextFile& input, Executor& executor, const TaskFunction& tasks,
                       RunStats* stats = nullptr) const;
  // infer() of several inputs at once on the calling thread, results in their order, each
  // the bytes infer() gives it: every region's branches run one after another, each on the
  // whole batch, so that each linear layer's just-in-time diagonals are encoded once for
  // all of them (CompiledGraph::run_batch). What a server keeping its cores busy with
  // several images in flight runs per core (the two images of a face pair). Needs the
  // compiled model (a model served from its model file is refused).
  std::vector<CiphertextFile> infer_batch(std::vector<CiphertextFile> inputs) const;
  CiphertextFile match(const CiphertextFile& probe, const CiphertextFile& enrolled, double threshold) const;

 private:
  // Throws unless the input belongs to this key set and has the model's ciphertext count.
  void check_input(const CiphertextFile& input) const;
  // Reads the file, then checks as the in-memory constructor does; the load time counts
  // from `start`.
  KeySet(const ServedModel& model, const std::string& keys_path, Clock::time_point start);
  void check_rotation_keys(const std::map<long, std::size_t>& levels, const ckks::GaloisKeys& keys, std::size_t n,
                           const std::string& what) const;
  // The conjugation and encapsulation keys a bootstrapping model needs, and no others.
  void check_bootstrapping_keys(const std::string& what) const;
  const ckks::EncapsulationKeys* encapsulation() const {
    return keys_.encapsulation ? &*keys_.encapsulation : nullptr;
  }
  const ServedModel& model_;
  ClientSpec spec_;
  EvaluationKeys keys_;
  std::unique_ptr<Evaluators> evaluators_;
  double load_seconds_ = 0;
};

// The key set of the last key file or key cache asked for, kept loaded: an inference
// process's (a fork pool's or MPI rank's, apps/pfhe/inference_process.h) consecutive jobs
// mostly come from one client. The previous set is dropped (unmapped) before the next is
// loaded, and a failed load leaves none, so the next request loads its path anew.
class LastKeySet {
 public:
  explicit LastKeySet(const ServedModel& model) : model_(model) {}
  const KeySet& get(const std::string& keys_path);

 private:
  const ServedModel& model_;
  std::unique_ptr<KeySet> set_;
  std::string path_;
};

// One served model with one client's keys: what the CLI's server commands load.
class Server {
 public:
  Server(const std::string& params_path, const std::string& model_path, const std::string& keys_path,
         std::size_t lanes = 0)
      : model_(params_path, model_path, lanes), keys_(model_, keys_path) {}
  bool compiles_per_task() const { return model_.compiles_per_task(); }
  // Wall time of the two loads: the model (artefact, or the plan of a model file) and the
  // evaluation keys, which dominate a CryptoFaceNet server's start-up.
  struct LoadSeconds {
    double model = 0, keys = 0;
  };
  LoadSeconds load_seconds() const { return {model_.load_seconds(), keys_.load_seconds()}; }

  const ckks::Context& context() const { return model_.context(); }
  const ckks::Context& output_context() const { return keys_.output_context(); }
  TaskRings rings() const { return keys_.rings(); }
  const ServedModel& served() const { return model_; }
  const ckks::Encoder& encoder() const { return model_.encoder(); }
  const Evaluators& evaluators() const { return keys_.evaluators(); }
  TaskFunction tasks() const { return keys_.tasks(); }
  const KeySet& key_set() const { return keys_; }

 private:
  ServedModel model_;
  KeySet keys_;
};

}  // namespace pfhe::runtime
