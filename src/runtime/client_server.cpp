#include "runtime/client_server.h"

#include <nlohmann/json.hpp>

#include <cmath>
#include <filesystem>
#include <stdexcept>

#include "ckks/keygen.h"
#include "ckks/serialization.h"
#include "nn/graph_file.h"
#include "nn/linear_map.h"
#include "nn/model_file.h"
#include "nn/parameter_choice.h"
#include "runtime/key_cache.h"
#include "runtime/mapped_file.h"
#include "runtime/process_stats.h"

namespace pfhe::runtime {

namespace {

nlohmann::json layout_json(const nn::Layout& l) {
  return {{"channels", l.shape.channels}, {"height", l.shape.height}, {"width", l.shape.width}, {"gap", l.gap},
          {"slots", l.slots},           {"replicas", l.replicas},    {"lanes", l.lanes},
          {"grid_rows", l.grid_rows},   {"grid_cols", l.grid_cols}};
}

// Strict readers: nlohmann's get<integer>() converts a float (1e30) with undefined
// behaviour (found by fuzzing), so the JSON type is checked first.
std::uint64_t unsigned_at(const nlohmann::json& j, const char* key, std::uint64_t max) {
  const nlohmann::json& v = j.at(key);
  if (!v.is_number_unsigned() || v.get<std::uint64_t>() > max)
    throw std::invalid_argument(std::string("'") + key + "' must be an integer in [0, " + std::to_string(max) + "]");
  return v.get<std::uint64_t>();
}

long signed_value(const nlohmann::json& v, long bound) {
  if (!v.is_number_integer()) throw std::invalid_argument("rotation steps must be integers");
  const auto x = v.get<std::int64_t>();
  if (x <= -bound || x >= bound) throw std::invalid_argument("rotation step out of range");
  return static_cast<long>(x);
}

constexpr std::uint64_t kMaxSlots = std::uint64_t{1} << 16;

nn::Layout layout_from(const nlohmann::json& j) {
  nn::Layout l;
  l.shape = {unsigned_at(j, "channels", kMaxSlots), unsigned_at(j, "height", kMaxSlots), unsigned_at(j, "width", kMaxSlots)};
  l.gap = unsigned_at(j, "gap", kMaxSlots);
  l.slots = unsigned_at(j, "slots", kMaxSlots);
  l.replicas = unsigned_at(j, "replicas", kMaxSlots);
  l.lanes = unsigned_at(j, "lanes", kMaxSlots);
  l.grid_rows = unsigned_at(j, "grid_rows", kMaxSlots);
  l.grid_cols = unsigned_at(j, "grid_cols", kMaxSlots);
  l.validate();
  return l;
}

}  // namespace

namespace {
nlohmann::json rotations_json(const std::map<long, std::size_t>& levels) {
  nlohmann::json rotations = nlohmann::json::array();
  for (const auto& [step, level] : levels) rotations.push_back({step, level});
  return rotations;
}

std::map<long, std::size_t> rotations_from(const nlohmann::json& rotations) {
  if (!rotations.is_array() || rotations.size() > kMaxSlots) throw std::invalid_argument("'rotations' must be a list");
  std::map<long, std::size_t> levels;
  for (const auto& r : rotations) {
    if (!r.is_array() || r.size() != 2) throw std::invalid_argument("a rotation is [step, level]");
    levels[signed_value(r[0], static_cast<long>(kMaxSlots))] = unsigned_at({{"level", r[1]}}, "level", 64);
  }
  return levels;
}

// XXH3-64 (ckks/checksum.h) of the spec's compact JSON without its "checksum" member, in
// hex. nlohmann's objects keep their keys sorted and print doubles so that they read back
// to the same value, so the text hashed is the same after a round trip.
std::string spec_checksum(nlohmann::json j) {
  j.erase("checksum");
  const std::string text = j.dump();
  return ckks::checksum_hex(ckks::checksum({reinterpret_cast<const std::uint8_t*>(text.data()), text.size()}));
}

}  // namespace

std::string ClientSpec::to_json() const {
  nlohmann::json ring_switch_json = nullptr;
  if (ring_switch)
    ring_switch_json = {{"level", ring_switch->level},
                        {"special_primes", ring_switch->special_primes},
                        {"parameter_fingerprint", half_ring_fingerprint},
                        {"rotations", rotations_json(half_ring_rotation_levels)}};
  nlohmann::json bootstrapping_json = nullptr;
  if (conjugation_level)
    bootstrapping_json = {{"conjugation_level", *conjugation_level}, {"ephemeral_weight", ephemeral_weight}};
  nlohmann::json j = {{"format", "pfhe-client-spec"},
                            {"version", 7},
                            {"parameter_fingerprint", fingerprint},
                            {"image", {{"channels", image.channels}, {"height", image.height}, {"width", image.width}}},
                            {"grid", grid},
                            {"input_level", input_level},
                            {"input_scale", input_scale},
                            {"input_layout", layout_json(input_layout)},
                            {"output_layout", layout_json(output_layout)},
                            {"output", classifier ? "logits" : "embedding"},
                            {"rotations", rotations_json(rotation_levels)},
                            {"ring_switch", ring_switch_json},
                            {"bootstrapping", bootstrapping_json}};
  j["checksum"] = spec_checksum(j);
  return j.dump(1);
}

ClientSpec ClientSpec::from_json(const std::string& text) {
  try {
    const nlohmann::json j = nlohmann::json::parse(text);
    if (j.at("format") != "pfhe-client-spec" || j.at("version") != 7)
      throw std::invalid_argument("not a version-7 pfhe client spec (rerun pfhe compile)");
    ClientSpec s;
    s.fingerprint = unsigned_at(j, "parameter_fingerprint", UINT64_MAX);
    const nlohmann::json& image = j.at("image");
    s.image = {unsigned_at(image, "channels", kMaxSlots), unsigned_at(image, "height", 4096),
               unsigned_at(image, "width", 4096)};
    s.grid = unsigned_at(j, "grid", 16);
    s.input_level = unsigned_at(j, "input_level", 64);
    if (!j.at("input_scale").is_number()) throw std::invalid_argument("'input_scale' must be a number");
    s.input_scale = j.at("input_scale").get<double>();
    s.input_layout = layout_from(j.at("input_layout"));
    s.output_layout = layout_from(j.at("output_layout"));
    const nlohmann::json& output = j.at("output");
    if (output != "logits" && output != "embedding") throw std::invalid_argument("'output' must be logits or embedding");
    s.classifier = output == "logits";
    s.rotation_levels = rotations_from(j.at("rotations"));
    const nlohmann::json& ring_switch = j.at("ring_switch");
    if (!ring_switch.is_null()) {
      if (!ring_switch.is_object()) throw std::invalid_argument("'ring_switch' must be null or an object");
      s.ring_switch = nn::RingSwitchChoice{unsigned_at(ring_switch, "level", 64),
                                           unsigned_at(ring_switch, "special_primes", 64)};
      s.half_ring_fingerprint = unsigned_at(ring_switch, "parameter_fingerprint", UINT64_MAX);
      s.half_ring_rotation_levels = rotations_from(ring_switch.at("rotations"));
    }
    const nlohmann::json& bootstrapping = j.at("bootstrapping");
    if (!bootstrapping.is_null()) {
      if (!bootstrapping.is_object() || s.ring_switch)
        throw std::invalid_argument("'bootstrapping' must be null or an object, and not with a ring switch");
      s.conjugation_level = unsigned_at(bootstrapping, "conjugation_level", 64);
      s.ephemeral_weight = static_cast<int>(unsigned_at(bootstrapping, "ephemeral_weight", kMaxSlots));
    }
    if (s.grid == 0 || s.image.size() == 0 || s.image.height % s.grid != 0 || s.image.width % s.grid != 0 ||
        s.input_level == 0 || !(s.input_scale > 1) || !std::isfinite(s.input_scale) ||
        !(s.input_layout.shape == s.patch_shape()) || (s.grid > 1 && s.image.height != s.image.width))
      throw std::invalid_argument("inconsistent geometry");
    // Last, so that the field checks above stay reachable (and fuzzed) on their own.
    if (!j.contains("checksum") || j.at("checksum") != spec_checksum(j))
      throw std::invalid_argument("checksum mismatch: the spec is corrupt or was edited (rerun pfhe compile)");
    return s;
  } catch (const nlohmann::json::exception& e) {
    throw std::invalid_argument(std::string("client spec: ") + e.what());
  } catch (const std::invalid_argument& e) {
    throw std::invalid_argument(std::string("client spec: ") + e.what());
  }
}

ClientSpec ClientSpec::read(const std::string& path) {
  try {
    return from_json(ckks::read_text_file(path));
  } catch (const std::invalid_argument& e) {
    throw std::invalid_argument(path + ": " + e.what());
  }
}

void ClientSpec::write(const std::string& path) const { ckks::write_text_file(path, to_json()); }

ClientSpec ClientSpec::of(const nn::CompiledGraph& model, const ckks::Parameters& params) {
  ClientSpec s;
  if (const ckks::Bootstrapper* boot = model.bootstrapper()) {
    s.conjugation_level = boot->conjugation_level();
    s.ephemeral_weight = boot->config().ephemeral_weight;
  }
  s.fingerprint = params.fingerprint();
  s.image = model.input_shape();
  s.grid = model.grid();
  s.input_level = model.input_level();
  s.input_scale = model.input_scale();
  s.input_layout = model.input_layout();
  s.output_layout = model.output_layout();
  s.rotation_levels = model.rotation_levels();
  s.classifier = !model.embeds();
  if (const auto& half = model.half_ring()) {
    s.ring_switch = half->choice;
    s.half_ring_fingerprint = half->context.params().fingerprint();
    s.half_ring_rotation_levels = model.half_ring_rotation_levels();
  }
  return s;
}

std::shared_ptr<const nn::HalfRing> ClientSpec::half_ring(const ckks::Parameters& big) const {
  if (!ring_switch) return nullptr;
  std::shared_ptr<const nn::HalfRing> half;
  try {
    half = nn::HalfRing::make(big, *ring_switch);
  } catch (const std::invalid_argument& e) {
    throw std::invalid_argument(std::string("client spec: invalid ring switch: ") + e.what());
  }
  if (half->context.params().fingerprint() != half_ring_fingerprint)
    throw std::invalid_argument("client spec: the half ring's fingerprint does not match its parameters");
  return half;
}

void write_compiled_graph(const std::string& dir, const ckks::Parameters& params, const nn::CompiledGraph& model) {
  std::filesystem::create_directories(dir);
  ckks::write_file(dir + "/params.pfhe", ckks::save_parameters(params));
  model.save_file(dir + "/model.pfhc");
  ClientSpec::of(model, params).write(dir + "/client.json");
}

ckks::Parameters read_secure_parameters(const std::string& path) {
  ckks::Parameters p = load_mapped(path, [](std::span<const std::uint8_t> bytes) { return ckks::load_parameters(bytes); });
  if (p.insecure()) throw std::invalid_argument(path + ": parameters are marked insecure (test only); refused");
  return p;
}

namespace {
void check_spec_parameters(const ckks::Context& ctx, const ClientSpec& spec) {
  if (spec.fingerprint != ctx.params().fingerprint())
    throw std::invalid_argument("client spec was made for other parameters (fingerprint mismatch)");
}
}  // namespace

Client::Client(const ckks::Context& context, const ClientSpec& s, SecretKeyFile key)
    : Client(context, s, s.half_ring(context.params()), std::move(key)) {}

namespace {
const ckks::SecretKey& output_secret(const nn::HalfRing* half_ring, const SecretKeyFile& key) {
  check_secret_keys(half_ring, key);
  return half_ring ? *key.half_key : key.key;
}
}  // namespace

Client::Client(const ckks::Context& context, const ClientSpec& s, std::shared_ptr<const nn::HalfRing> half,
               SecretKeyFile key)
    : ctx(context), spec(s), half_ring(std::move(half)), secret_key(std::move(key)), encoder(context),
      encryptor(context, secret_key.key), decryptor(output_context(), output_secret(half_ring.get(), secret_key)) {
  check_spec_parameters(ctx, spec);
}

Bundle Client::encrypt_image(const nn::Tensor& image) const {
  nn::expect_shape(image, spec.image_shape(), "encrypt_image");
  std::vector<nn::Tensor> patches;
  for (std::size_t p = 0; p < spec.grid * spec.grid; ++p)
    patches.push_back(spec.grid == 1 ? image : nn::extract_patch(image, spec.grid, spec.patch_shape().height, p));
  Bundle out{secret_key.key_set, {}};
  for (const auto& slots : nn::pack_patch_groups(patches, spec.input_layout)) {
    const ckks::Plaintext pt = encoder.encode(slots, spec.input_level, spec.input_scale);
    out.objects.push_back(ckks::save(ctx, encryptor.encrypt_seeded(pt), {.compress = true}));
  }
  return out;
}

namespace {
const ckks::Ciphertext& single(const CiphertextFile& file, std::uint64_t key_set) {
  check_same_key_set(file.key_set, "the ciphertext", key_set, "the secret key");
  if (file.ciphertexts.size() != 1)
    throw std::invalid_argument("expected one ciphertext, found " + std::to_string(file.ciphertexts.size()));
  return file.ciphertexts.front();
}
}  // namespace

nn::Tensor Client::decrypt_output(const CiphertextFile& file) const {
  return nn::unpack(output_encoder().decode_real(decryptor.decrypt(single(file, secret_key.key_set))),
                    spec.output_layout);
}

double Client::decrypt_score(const CiphertextFile& file) const {
  return output_encoder().decode_real(decryptor.decrypt(single(file, secret_key.key_set)))[0];
}

LoadedClient::LoadedClient(const std::string& params_path, const std::string& spec_path,
                           const std::string& secret_key_path)
    : ctx(read_secure_parameters(params_path)),
      spec(ClientSpec::read(spec_path)),
      half_ring(spec.half_ring(ctx.params())),
      client(ctx, spec, half_ring, read_secret_key(secret_key_path, ctx, half_ring.get())) {}

std::pair<SecretKeyFile, EvaluationKeys> generate_keys(const ckks::Context& ctx, const ClientSpec& spec) {
  check_spec_parameters(ctx, spec);
  const auto half = spec.half_ring(ctx.params());
  SecretKeyFile secret = new_secret_keys(ctx, half.get());
  EvaluationKeys keys = make_evaluation_keys(ctx, half.get(), secret, spec.key_request());
  return {std::move(secret), std::move(keys)};
}

SecretKeyFile generate_keys(const ckks::Context& ctx, const ClientSpec& spec, const std::string& eval_keys_path) {
  check_spec_parameters(ctx, spec);
  const auto half = spec.half_ring(ctx.params());
  SecretKeyFile secret = new_secret_keys(ctx, half.get());
  write_evaluation_keys(eval_keys_path, ctx, half.get(), secret, spec.key_request());
  return secret;
}

namespace {
const HalfRingKeys* half_ring_keys(const nn::HalfRing* half_ring, const EvaluationKeys& keys) {
  if ((half_ring != nullptr) != keys.half.has_value())
    throw std::invalid_argument(half_ring ? "the evaluation keys have no half-ring keys (keys of another model?)"
                                          : "the evaluation keys have half-ring keys the model does not use");
  return keys.half ? &*keys.half : nullptr;
}
}  // namespace

Evaluators::Evaluators(const ckks::Context& ctx, const nn::HalfRing* half_ring, const EvaluationKeys& keys)
    : big_(ctx, &keys.relin, &keys.galois) {
  if (const HalfRingKeys* half = half_ring_keys(half_ring, keys)) {
    half_.emplace(half_ring->context, &half->relin, &half->galois);
    switch_.emplace(nn::HalfRingEvaluation{half_ring->switch_context, half->switch_key, *half_});
  }
}

ServedModel::ServedModel(const std::string& params_path, const std::string& model_path, std::size_t lanes) {
  ctx_ = std::make_unique<ckks::Context>(read_secure_parameters(params_path));
  enc_ = std::make_unique<ckks::Encoder>(*ctx_);
  const auto start = Clock::now();
  const bool model_file = nn::is_model_file(model_path);
  const bool graph_file = model_file && nn::is_graph_model_file(model_path);
  if (lanes != 0 && (!model_file || graph_file))
    throw std::invalid_argument("lanes are chosen when compiling a PatchCNN; this model has its own");
  if (graph_file) {
    try {
      graph_ = std::make_unique<nn::CompiledGraph>(nn::compile_graph(nn::load_graph_file(model_path), *enc_));
    } catch (const nn::ModelTooDeep& e) {
      // A bootstrapped graph's placement depends on its calibration ranges: `pfhe compile` has them.
      throw std::invalid_argument(std::string(e.what()) + " (" + kServeBootstrappedFromArtefact + ")");
    }
  } else if (model_file) {
    const nn::PatchCNN model = nn::load_model_file(model_path);
    weights_ = std::make_unique<nn::Graph>(model.to_graph());
    // Planned as `pfhe compile --plan-only` plans it, ring switch included.
    const nn::CompileTarget target = nn::compile_target(model, ctx_->params());
    graph_ = std::make_unique<nn::CompiledGraph>(
        nn::CompiledGraph::compile(*weights_, *enc_, target.level, target.scale, 0, nn::Compilation::kPerTask, nullptr,
                                   nullptr, lanes, nn::chosen_half_ring(*weights_, *enc_, target.level, lanes)));
  } else {
    // The diagonals, just-in-time and pre-encoded, stay in the mapped file (shared by every
    // process that maps it, reclaimable), not in a private copy. Once decoded, none of the
    // file's pages needs to stay resident: what was copied (geometry, biases) is never read
    // again, and each diagonal is faulted back in when its layer runs.
    load_mapped_in_place(model_path, [&](std::span<const std::uint8_t> bytes,
                                         const std::shared_ptr<const ckks::Backing>& mapping) {
      graph_ = std::make_unique<nn::CompiledGraph>(nn::CompiledGraph::load(*enc_, bytes, mapping));
      mapping->release(bytes);
      return 0;
    });
  }
  load_seconds_ = seconds_since(start);
}

ServedModel::ServedModel(const ckks::Parameters& params,
                         const std::function<nn::CompiledGraph(const ckks::Encoder&)>& compile)
    : ctx_(std::make_unique<ckks::Context>(params)),
      enc_(std::make_unique<ckks::Encoder>(*ctx_)),
      graph_(std::make_unique<nn::CompiledGraph>(compile(*enc_))) {}

std::size_t ServedModel::tasks() const { return graph_task_offsets(*graph_).back(); }

KeySet::KeySet(const ServedModel& model, const std::string& keys_path) : KeySet(model, keys_path, Clock::now()) {}

const KeySet& LastKeySet::get(const std::string& keys_path) {
  if (set_ && keys_path == path_) return *set_;
  set_.reset();
  set_ = std::make_unique<KeySet>(model_, keys_path);
  path_ = keys_path;
  return *set_;
}

KeySet::KeySet(const ServedModel& model, const std::string& keys_path, Clock::time_point start)
    : KeySet(model, load_evaluation_keys(keys_path, model.context(), model.half_ring().get(), model.encapsulation_context()),
             keys_path) {
  load_seconds_ = seconds_since(start);
}

KeySet::KeySet(const ServedModel& model, EvaluationKeys keys, const std::string& what)
    : model_(model), spec_(model.client_spec()), keys_(std::move(keys)) {
  const auto half_ring = model.half_ring();
  evaluators_ = std::make_unique<Evaluators>(model.context(), half_ring.get(), keys_);  // checks the half ring's part
  check_rotation_keys(spec_.rotation_levels, keys_.galois, model.context().n(), what);
  if (half_ring) check_rotation_keys(spec_.half_ring_rotation_levels, keys_.half->galois, half_ring->context.n(), what);
  check_bootstrapping_keys(what);
}

void KeySet::check_bootstrapping_keys(const std::string& what) const {
  if (spec_.conjugation_level) {
    const auto key = keys_.galois.keys.find(ckks::galois_element_conjugate(model_.context().n()));
    if (key == keys_.galois.keys.end() || key->second.max_level() < *spec_.conjugation_level)
      throw std::invalid_argument(what + ": no conjugation key at level " + std::to_string(*spec_.conjugation_level) +
                                  " for the model's bootstraps (keys generated for another model?)");
  }
  if (keys_.encapsulation.has_value() != (spec_.ephemeral_weight > 0))
    throw std::invalid_argument(what + (keys_.encapsulation ? ": bootstrapping keys the model does not use"
                                                            : ": no encapsulation keys for the model's bootstraps") +
                                " (keys generated for another model?)");
}

void KeySet::check_rotation_keys(const std::map<long, std::size_t>& levels, const ckks::GaloisKeys& keys,
                                 std::size_t n, const std::string& what) const {
  for (const auto& [step, level] : levels) {
    const auto key = keys.keys.find(ckks::galois_element_for_step(step, n));
    if (key == keys.keys.end() || key->second.max_level() < level)
      throw std::invalid_argument(what + ": no Galois key for rotation " + std::to_string(step) + " at level " +
                                  std::to_string(level) + (n < model_.context().n() ? " of the half ring" : "") +
                                  (model_.compiles_per_task() ? " (keys generated for another model or another --lanes?)"
                                                              : " (keys generated for another model?)"));
  }
}

TaskFunction KeySet::tasks() const {
  const Evaluators& e = *evaluators_;
  return model_.weights_ ? compiling_graph_tasks(*model_.weights_, *model_.graph_, e.big(), e.half_ring())
                         : graph_tasks(*model_.graph_, e.big(), e.half_ring(), encapsulation());
}

CiphertextFile KeySet::infer(const CiphertextFile& input, Executor& executor, RunStats* stats) const {
  return infer(input, executor, tasks(), stats);
}

CiphertextFile KeySet::infer(const CiphertextFile& input, Executor& executor, const TaskFunction& tasks,
                             RunStats* stats) const {
  const nn::CompiledGraph& graph = *model_.graph_;
  check_input(input);
  // stats: the regions' executor runs added up.
  RunStats total;
  const std::vector<std::size_t> first = graph_task_offsets(graph);
  const auto runner = [&](std::size_t region, const std::vector<ckks::Ciphertext>& entries) {
    RunStats run;
    // The rings of this region's entries and exits (a branch may switch rings).
    const auto& branch = graph.parallel_regions()[region].branches.front();
    const auto ring = [&](std::size_t v) -> const ckks::Context& {
      return graph.in_half_ring(v) ? evaluators_->output().context() : evaluators_->big().context();
    };
    std::vector<ckks::Ciphertext> exits =
        executor.run({ring(branch.entry), ring(branch.exit)}, tasks, entries, &run, first[region]);
    total.seconds += run.seconds;
    total.transfer_seconds += run.transfer_seconds;
    total.transfer_bytes += run.transfer_bytes;
    total.task_seconds.insert(total.task_seconds.end(), run.task_seconds.begin(), run.task_seconds.end());
    return exits;
  };
  ckks::Ciphertext out =
      graph.run(evaluators_->big(), input.ciphertexts, &total.steps, encapsulation(), runner, evaluators_->half_ring());
  if (stats) *stats = std::move(total);
  return {keys_.key_set, {std::move(out)}};
}

void KeySet::check_input(const CiphertextFile& input) const {
  check_same_key_set(input.key_set, "the encrypted input", keys_.key_set, "the evaluation keys");
  const std::size_t inputs = model_.graph_->inputs();
  if (input.ciphertexts.size() != inputs)
    throw std::invalid_argument("the model takes " + std::to_string(inputs) + " input ciphertext(s), the file has " +
                                std::to_string(input.ciphertexts.size()));
}

std::vector<CiphertextFile> KeySet::infer_batch(std::vector<CiphertextFile> inputs) const {
  // Decision: batches need the compiled model. Served from its model file, a model compiles
  // each branch inside its task (compiling_graph_tasks); doing that per batch is possible
  // but has no user yet (the benchmark stages serve the artefact), and untested code would
  // be the result.
  if (model_.weights_)
    throw std::invalid_argument("a batch of inputs needs the compiled model (pfhe compile), not the model file");
  const nn::CompiledGraph& graph = *model_.graph_;
  std::vector<std::vector<ckks::Ciphertext>> batch;
  for (CiphertextFile& input : inputs) {
    check_input(input);
    batch.push_back(std::move(input.ciphertexts));  // taken, not copied: a batch's inputs are large
  }
  const Evaluators& e = *evaluators_;
  std::vector<ckks::Ciphertext> outs = graph.run_batch(e.big(), batch, nullptr, encapsulation(), {}, e.half_ring());
  std::vector<CiphertextFile> results;
  for (ckks::Ciphertext& out : outs) results.push_back({keys_.key_set, {std::move(out)}});
  return results;
}

CiphertextFile KeySet::match(const CiphertextFile& probe, const CiphertextFile& enrolled, double threshold) const {
  if (spec_.classifier) throw std::invalid_argument("match: the model is a classifier, not a face matcher");
  check_same_key_set(probe.key_set, "the probe", keys_.key_set, "the evaluation keys");
  check_same_key_set(enrolled.key_set, "the enrolled template", keys_.key_set, "the evaluation keys");
  if (probe.ciphertexts.size() != 1 || enrolled.ciphertexts.size() != 1)
    throw std::invalid_argument("match: the probe and the template must be one ciphertext each");
  const ckks::Ciphertext &a = probe.ciphertexts[0], &b = enrolled.ciphertexts[0];
  return {keys_.key_set, {model_.graph_->match(evaluators_->output(), a, b, threshold)}};
}

}  // namespace pfhe::runtime
