// pfhe: encrypted inference of PatchCNNs and model graphs from the command line, split the
// way it is deployed.
//   server: make-model, import (ONNX -> graph model file), compile, expand-keys, infer, enroll,
//           match, bench, serve (HTTP service)
//   client: keygen, encrypt, decrypt (the secret key never leaves the client), client register|infer
// `pfhe <command> --help` lists each command's options; docs/CLI.md walks through a run.
#include <CLI/CLI.hpp>
#include <omp.h>

#include <algorithm>
#include <cmath>
#include <csignal>
#include <cstdio>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <random>

#include "ckks/keygen.h"
#include "bench.h"
#include "ckks/serialization.h"
#include "image.h"
#include "inference_process.h"
#include "serve.h"
#include "template_store.h"
#include "nn/fit.h"
#include "nn/graph_file.h"
#include "nn/measured_precision.h"
#include "nn/model_file.h"
#include "nn/onnx_import.h"
#include "nn/noise_estimate.h"
#include "nn/parameter_choice.h"
#include "nn/precision.h"
#include "nn/synthetic.h"
#include "ring/poly.h"
#include "runtime/client_server.h"
#include "runtime/key_cache.h"
#include "runtime/process_stats.h"
#ifdef PFHE_HAVE_MPI
#include "runtime/mpi.h"
#endif

using namespace pfhe;
namespace fs = std::filesystem;

namespace {

using runtime::Clock;
using runtime::seconds_since;

// One fprintf per line: stderr is unbuffered, and the executors' threads report their
// branches concurrently, so a line written in three calls could interleave with another's.
void progress(const char* fmt, auto... args) {
  const std::string line = std::string("[pfhe] ") + fmt + "\n";
  std::fprintf(stderr, line.c_str(), args...);
}

void write_json_report(const std::string& path, const nlohmann::json& j) {
  if (path.empty()) return;
  if (path == "-") std::printf("%s\n", j.dump(1).c_str());
  else ckks::write_text_file(path, j.dump(1) + "\n");
}

runtime::CiphertextFile read_single_ciphertext(const std::string& path, const ckks::Context& ctx) {
  runtime::CiphertextFile f = runtime::read_ciphertexts(path, ctx);
  if (f.ciphertexts.size() != 1)
    throw std::invalid_argument(path + ": expected one ciphertext, found " + std::to_string(f.ciphertexts.size()));
  return f;
}

// ---- make-model / sample-image -------------------------------------------------------

// Calibration inputs: `count` synthetic images, or every decodable image of `dir` as an
// input would be (centre square, resized), topped up to `count` with random crops of them
// (a quarter to the whole side) when the directory holds fewer. Decision: whole images
// first, because aligned faces are what the model sees; crops only widen the statistics
// when there are few.
std::vector<nn::Tensor> calibration_images(const std::string& dir, std::size_t side, std::uint64_t seed,
                                           std::size_t count) {
  if (dir.empty()) return nn::synthetic_images(count, {3, side, side}, seed + 1);
  std::vector<fs::path> paths;
  for (const auto& entry : fs::directory_iterator(dir)) paths.push_back(entry.path());
  std::sort(paths.begin(), paths.end());  // directory order is not deterministic
  std::vector<nn::Tensor> out;
  std::vector<fs::path> images;
  for (const auto& path : paths) {
    try {
      out.push_back(app::load_image(path.string(), side));
      images.push_back(path);
    } catch (const std::invalid_argument&) {
      // not an image: skipped
    }
  }
  if (out.empty()) throw std::invalid_argument(dir + ": no decodable images for calibration");
  std::vector<nn::Tensor> sources;  // crops are cut from a 4x larger decode
  if (out.size() < count)
    for (const auto& path : images) sources.push_back(app::load_image(path.string(), 4 * side));
  std::mt19937_64 rng(seed);
  for (std::size_t n = 0; out.size() < count; ++n) {
    const nn::Tensor& src = sources[n % sources.size()];
    const std::size_t full = src.shape.width;
    const std::size_t crop = std::uniform_int_distribution<std::size_t>(full / 4, full)(rng);
    const std::size_t x0 = std::uniform_int_distribution<std::size_t>(0, full - crop)(rng);
    const std::size_t y0 = std::uniform_int_distribution<std::size_t>(0, full - crop)(rng);
    nn::Tensor t({3, side, side});
    for (std::size_t c = 0; c < 3; ++c)
      for (std::size_t y = 0; y < side; ++y)
        for (std::size_t x = 0; x < side; ++x) t.at(c, y, x) = src.at(c, y0 + y * crop / side, x0 + x * crop / side);
    out.push_back(std::move(t));
  }
  return out;
}

// A model exported to ONNX (e.g. by torch.onnx.export) as a graph model file, for compile.
int cmd_import(const std::string& onnx_path, const std::string& out) {
  const nn::Graph graph = nn::import_onnx_file(onnx_path);
  nn::save_graph_file(graph, out);
  progress("imported %s: %zu nodes, input %zux%zux%zu, %zu outputs -> %s", onnx_path.c_str(), graph.nodes().size(),
           graph.input_shape().channels, graph.input_shape().height, graph.input_shape().width,
           graph.output_shape().size(), out.c_str());
  return 0;
}

// Calibration inputs of a graph's input shape: synthetic, or from a directory of images
// (square 1- or 3-channel inputs; grey = the mean of R, G, B).
std::vector<nn::Tensor> graph_inputs(const nn::Shape& shape, const std::string& dir, std::uint64_t seed,
                                     std::size_t count) {
  if (dir.empty()) return nn::synthetic_images(count, shape, seed + 1);
  if (shape.height != shape.width || (shape.channels != 1 && shape.channels != 3))
    throw std::invalid_argument("--calibrate-on: images give square 1- or 3-channel inputs, the model takes " +
                                shape.str());
  std::vector<nn::Tensor> out = calibration_images(dir, shape.height, seed, count);
  if (shape.channels == 1)
    for (nn::Tensor& image : out) image = app::to_grey(image);
  return out;
}

int cmd_make_model(const std::string& kind_name, std::uint64_t seed, const std::string& calibrate_on,
                   const std::string& out) {
  if (nn::is_synthetic_graph_kind(kind_name)) {
    const auto t = Clock::now();
    const nn::Shape shape = nn::synthetic_graph_input(kind_name);
    const nn::Graph graph = nn::make_synthetic_graph(kind_name, seed, graph_inputs(shape, calibrate_on, seed, 128));
    nn::save_graph_file(graph, out);
    progress("wrote %s (a synthetic %s graph, %zu nodes, input %s) in %.1f s", out.c_str(), kind_name.c_str(),
             graph.nodes().size(), shape.str().c_str(), seconds_since(t));
    return 0;
  }
  const nn::SyntheticKind kind = nn::synthetic_kind(kind_name);
  const auto t = Clock::now();
  const std::size_t side = kind.grid * kind.patch;
  progress("generating a synthetic %s (seed %llu), BatchNorm statistics calibrated on %s", kind_name.c_str(),
           static_cast<unsigned long long>(seed), calibrate_on.empty() ? "128 synthetic images" : calibrate_on.c_str());
  const nn::PatchCNN model = nn::make_synthetic_patch_cnn(kind.shape, kind.grid, kind.patch, kind.embedding, seed,
                                                          calibration_images(calibrate_on, side, seed, 128));
  nn::save_model_file(model, out);
  progress("wrote %s in %.1f s", out.c_str(), seconds_since(t));
  return 0;
}

// A synthetic face-like image; with variation v > 0, the same image blended with a fraction
// v of another one ("the same person, another photo").
int cmd_sample_image(std::size_t size, std::uint64_t seed, double variation, const std::string& out) {
  if (!(variation >= 0 && variation <= 1)) throw std::invalid_argument("--variation must be in [0, 1]");
  nn::Tensor image = nn::synthetic_images(1, {3, size, size}, seed)[0];
  const nn::Tensor other = nn::synthetic_images(1, {3, size, size}, seed + 1000)[0];
  for (std::size_t i = 0; i < image.data.size(); ++i)
    image.data[i] = (1 - variation) * image.data[i] + variation * other.data[i];
  app::save_png(image, out);
  progress("wrote %s (%zux%zu synthetic face-like image)", out.c_str(), size, size);
  return 0;
}

// ---- compile (server) ----------------------------------------------------------------

// The parameters of a compile: from the depth at a 2^40 scale, or with precision_bits > 0
// the smallest scale whose estimated precision reaches it (nn/parameter_choice.h); q_0 from
// the range of the model's output on a few calibration images (the model file's own
// inputs if none are given: synthetic images like make-model's). Reports the estimated
// precision either way (nn/noise_estimate.h).
ckks::Parameters compile_parameters(const nn::PatchCNN& model, const std::string& calibrate_on, double precision_bits) {
  constexpr std::size_t kImages = 8;  // enough for the range and the estimate (~1 s at full size)
  const auto t = Clock::now();
  const std::vector<nn::Tensor> images = calibration_images(calibrate_on, model.image_shape().height, 1, kImages);
  ckks::ParameterSpec spec;
  double estimated_bits = 0;
  if (precision_bits > 0) {
    const nn::PrecisionChoice choice = nn::parameters_for_precision(model, images, precision_bits);
    spec = choice.spec;
    estimated_bits = choice.estimated_bits;  // made at exactly these parameters by the search
  } else {
    const nn::FitReport ranges = nn::measure_ranges(model, images, nn::kIntermediateLimit);
    spec = nn::choose_parameters(nn::required_levels(model), nn::kDefaultScaleBits,
                                 nn::base_bits_for_range(nn::output_bound(model, ranges), nn::kDefaultScaleBits));
  }
  const ckks::Parameters params = ckks::Parameters::create(spec);
  if (precision_bits <= 0)
    estimated_bits = nn::estimate_precision(model, images, params.n(), params.default_scale()).bits();
  progress("estimated precision of the encrypted output: %.1f bits (relative error %.1e) on %zu %s images, %.1f s%s",
           estimated_bits, std::exp2(-estimated_bits), images.size(), calibrate_on.empty() ? "synthetic" : "calibration",
           seconds_since(t), precision_bits > 0 ? " (scale chosen for the target)" : "");
  return params;
}

// plan_only: parameters and client spec without the artefact (no diagonals encoded), for
// a server that is given the model file and compiles each lane group per task.
struct CompileOptions {
  std::string model, out_dir, calibrate_on;
  // 0.5 GB of pre-encoded diagonals by default: each GB spares ~2,000 limb NTTs (~0.35 s
  // of a 60 s CryptoFaceNet4 inference) but adds a GB to the server's resident memory.
  double budget_gb = 0.5, precision_bits = 0;
  std::size_t lanes = 0;
  bool plan_only = false, no_ring_switch = false;
  bool bootstrap = false;  // graphs: the bootstrapping chain even when the graph fits without
  int bootstrap_levels = 0;  // graphs that bootstrap: the cap on levels between bootstraps (0: none)
};

void report_ring_switch(const nn::HalfRing* half, bool switched_off) {
  if (half)
    progress("ring switch at level %zu: the rest runs at %s", half->choice.level,
             half->context.params().describe().c_str());
  else
    progress("no ring switch (%s)", switched_off ? "--no-ring-switch"
                                                 : "no level where the half ring pays off in time and key size");
}

// The automatic ring switch (nn::choose_ring_switch) unless switched off; reported.
std::shared_ptr<const nn::HalfRing> compile_half_ring(const CompileOptions& o, const nn::Graph& graph,
                                                      const ckks::Encoder& enc, std::size_t level) {
  // A server given the model file plans with the automatic choice; a plan without it would
  // not match the keys made from its spec.
  if (o.no_ring_switch && o.plan_only)
    throw std::invalid_argument("--no-ring-switch applies to compiled artefacts, not to --plan-only");
  const auto half = o.no_ring_switch ? nullptr : nn::chosen_half_ring(graph, enc, level, o.lanes);
  report_ring_switch(half.get(), o.no_ring_switch);
  return half;
}

// An ONNX model (by its extension) is imported as `pfhe import` does and compiled as a graph.
bool is_onnx(const std::string& path) { return fs::path(path).extension() == ".onnx"; }

// A graph model: parameters from its depth (measured by planning it) and its output's range
// on calibration inputs, compiled whole at their top level (nn::compile_graph).
int cmd_compile_graph(const CompileOptions& o) {
  if (o.plan_only || o.lanes != 0)
    throw std::invalid_argument("--plan-only and --lanes apply to PatchCNN models; a graph is compiled whole");
  auto t = Clock::now();
  const nn::Graph graph = is_onnx(o.model) ? nn::import_onnx_file(o.model) : nn::load_graph_file(o.model);
  const std::vector<nn::Tensor> calibration = graph_inputs(graph.input_shape(), o.calibrate_on, 1, 8);
  const nn::FitReport ranges = nn::fit(graph, calibration, nn::kIntermediateLimit);
  const auto choice = Clock::now();
  std::vector<nn::LevelsEstimate> estimates;
  nn::GraphParameters chosen = nn::graph_parameters_for_compile(graph, ranges, nn::kDefaultScaleBits, o.bootstrap,
                                                                o.bootstrap_levels, &estimates);
  if (chosen.bootstrapping)
    progress("%zu levels between bootstraps (%s; chosen in %.1f s)", chosen.compute_levels,
             o.bootstrap_levels != 0
                 ? "--bootstrap-levels"
                 : ("the least estimated latency on one thread of " + nn::estimates_text(estimates)).c_str(),
             seconds_since(choice));
  if (o.precision_bits > 0) {
    progress("precision target %.1f bits: measuring encrypted runs of the graph (a key pair made for it, dropped%s)",
             o.precision_bits, chosen.bootstrapping ? "; with bootstraps, minutes and the bootstrapping keys' memory" : "");
    const nn::GraphPrecisionChoice choice =
        nn::graph_parameters_for_precision(graph, calibration, ranges, chosen, o.precision_bits);
    chosen = choice.parameters;
    progress("%s: %.1f bits measured on the first calibration inputs, %.1f s", choice.what.c_str(),
             choice.measured_bits, seconds_since(t));
  }
  const ckks::ParameterSpec& spec = chosen.spec;
  const ckks::Context ctx(ckks::Parameters::create(spec));
  const std::string depth = nn::levels_text(chosen.graph_levels);  // a graph past the plan only bootstraps
  progress("model %s: a graph of %zu nodes, input %s, depth %s -> parameters %s", o.model.c_str(),
           graph.nodes().size(), graph.input_shape().str().c_str(), depth.c_str(), ctx.params().describe().c_str());
  const ckks::Encoder enc(ctx);
  const auto budget = static_cast<std::size_t>(o.budget_gb * static_cast<double>(1ULL << 30));
  if (chosen.bootstrapping)
    progress("bootstrapping at N = 2^16 (%s; the graph's %zu calibration inputs give the ranges values are scaled by)",
             o.bootstrap ? "--bootstrap" : "the graph is deeper than N = 2^16 holds without it", calibration.size());
  const nn::CompiledGraph compiled =
      nn::compile_graph(graph, enc, budget, !o.no_ring_switch && !chosen.bootstrapping, chosen.bootstrapping, &ranges);
  if (compiled.bootstrapper()) {
    progress("%zu bootstrap(s) placed; a bootstrap leaves level %zu, the input is at level %zu", compiled.bootstraps(),
             compiled.bootstrapper()->output_level(), compiled.input_level());
    for (const auto& b : compiled.placed_bootstraps())
      progress("  %s: level %zu -> %zu", b.name.c_str(), b.input_level, b.output_level);
  } else
    report_ring_switch(compiled.half_ring().get(), o.no_ring_switch);
  std::size_t branches = 0;
  for (const auto& region : compiled.parallel_regions()) branches += region.branches.size();
  progress("compiled in %.1f s: %s levels used, %zu parallel region(s) with %zu branch tasks, diagonals hold %.2f GB, "
           "%zu rotation keys",
           seconds_since(t), compiled.bootstraps() > 0 ? depth.c_str() : std::to_string(compiled.depth()).c_str(),
           compiled.parallel_regions().size(), branches,
           static_cast<double>(compiled.plaintext_bytes()) / 1e9,
           compiled.rotation_levels().size() + compiled.half_ring_rotation_levels().size());
  t = Clock::now();
  runtime::write_compiled_graph(o.out_dir, ctx.params(), compiled);
  progress("wrote %s/{params.pfhe, model.pfhc, client.json} in %.1f s", o.out_dir.c_str(), seconds_since(t));
  return 0;
}

int cmd_compile(const CompileOptions& o) {
  if (is_onnx(o.model) || nn::is_graph_model_file(o.model)) return cmd_compile_graph(o);
  if (o.bootstrap || o.bootstrap_levels != 0)
    throw std::invalid_argument("--bootstrap and --bootstrap-levels apply to graph models; a PatchCNN fits its chain");
  auto t = Clock::now();
  const nn::PatchCNN model = nn::load_model_file(o.model);
  const ckks::Context ctx(compile_parameters(model, o.calibrate_on, o.precision_bits));
  const nn::CompileTarget target = nn::compile_target(model, ctx.params());
  progress("model %s: %zu patches, depth %zu -> parameters %s", o.model.c_str(), model.backbones.size(),
           target.level, ctx.params().describe().c_str());
  const ckks::Encoder enc(ctx);
  // The PatchCNN as a graph (a crop per patch, its backbone and head block, the sum, the
  // normalisation) through the one compiler, which puts its patches in lanes.
  const nn::Graph graph = model.to_graph();
  const auto half_ring = compile_half_ring(o, graph, enc, target.level);
  const std::string& out_dir = o.out_dir;
  if (o.plan_only) {
    const nn::CompiledGraph plan = nn::CompiledGraph::compile(graph, enc, target.level, target.scale, 0,
                                                              nn::Compilation::kPlanOnly, nullptr, nullptr, o.lanes, half_ring);
    fs::create_directories(out_dir);
    ckks::write_file(out_dir + "/params.pfhe", ckks::save_parameters(ctx.params()));
    runtime::ClientSpec::of(plan, ctx.params()).write(out_dir + "/client.json");
    progress("planned in %.1f s: %zu patches in %zu ciphertext(s) of %zu lanes, %zu rotation keys; wrote "
             "%s/{params.pfhe, client.json} (serve the model file itself: each lane group compiles per task)",
             seconds_since(t), model.backbones.size(), plan.inputs(), plan.input_layout().lanes,
             plan.rotation_levels().size() + plan.half_ring_rotation_levels().size(), out_dir.c_str());
    return 0;
  }
  const auto budget = static_cast<std::size_t>(o.budget_gb * static_cast<double>(1ULL << 30));
  const nn::CompiledGraph compiled = nn::CompiledGraph::compile(graph, enc, target.level, target.scale, budget,
                                                                nn::Compilation::kFull, nullptr, nullptr, o.lanes, half_ring);
  progress("compiled in %.1f s: %zu patches in %zu ciphertext(s) of %zu lanes, diagonals hold %.2f GB, %zu rotation keys",
           seconds_since(t), model.backbones.size(), compiled.inputs(), compiled.input_layout().lanes,
           static_cast<double>(compiled.plaintext_bytes()) / 1e9,
           compiled.rotation_levels().size() + compiled.half_ring_rotation_levels().size());
  t = Clock::now();
  runtime::write_compiled_graph(out_dir, ctx.params(), compiled);
  progress("wrote %s/{params.pfhe, model.pfhc, client.json} in %.1f s", out_dir.c_str(), seconds_since(t));
  return 0;
}

// ---- keygen / encrypt / decrypt (client) -----------------------------------------------

int cmd_keygen(const std::string& spec_path, const std::string& params_path, const std::string& secret_out,
               const std::string& eval_out) {
  const auto t = Clock::now();
  const ckks::Context ctx(runtime::read_secure_parameters(params_path));
  const runtime::ClientSpec spec = runtime::ClientSpec::read(spec_path);
  const auto half_ring = spec.half_ring(ctx.params());
  if (half_ring)
    progress("generating the secret keys of both rings, their relinearization keys, %zu + %zu Galois keys and the "
             "ring-switch key",
             spec.rotation_levels.size(), spec.half_ring_rotation_levels.size());
  else if (spec.conjugation_level)
    progress("generating the secret key, a relinearization key, %zu Galois keys, the conjugation key%s (the model "
             "bootstraps)",
             spec.rotation_levels.size(), spec.ephemeral_weight > 0 ? " and the two encapsulation keys" : "");
  else
    progress("generating the secret key, a relinearization key and %zu Galois keys", spec.rotation_levels.size());
  // The evaluation keys go to their file as they are made; the secret key is written after.
  const runtime::SecretKeyFile secret = runtime::generate_keys(ctx, spec, eval_out);
  runtime::write_secret_key(secret_out, ctx, half_ring.get(), secret);
  progress("keys in %.1f s: secret key %s (keep it), evaluation keys %s (%.2f GB, for the server)", seconds_since(t),
           secret_out.c_str(), eval_out.c_str(), static_cast<double>(fs::file_size(eval_out)) / 1e9);
  return 0;
}

// Server side: a client's key file expanded into a key cache (runtime/key_cache.h), which
// `infer`, `match` and `bench` map instead of parsing the key file every run.
int cmd_expand_keys(const std::string& spec_path, const std::string& params_path, const std::string& keys_path,
                    const std::string& out) {
  const auto t = Clock::now();
  const ckks::Context ctx(runtime::read_secure_parameters(params_path));
  const runtime::ClientSpec spec = runtime::ClientSpec::read(spec_path);
  const auto half_ring = spec.half_ring(ctx.params());
  const auto encapsulation = runtime::encapsulation_context(ctx, spec.key_request());
  progress("expanding %s (%.2f GB) into a key cache", keys_path.c_str(), static_cast<double>(fs::file_size(keys_path)) / 1e9);
  runtime::write_key_cache(keys_path, out, ctx, half_ring.get(), encapsulation.get());
  progress("key cache %s (%.2f GB) in %.1f s", out.c_str(), static_cast<double>(fs::file_size(out)) / 1e9,
           seconds_since(t));
  return 0;
}

int cmd_encrypt(const std::string& spec_path, const std::string& params_path, const std::string& secret_path,
                const std::string& image_path, const std::string& out) {
  const auto t = Clock::now();
  const runtime::LoadedClient loaded(params_path, spec_path, secret_path);
  const runtime::ClientSpec& spec = loaded.spec;
  const nn::Tensor image = app::load_input(image_path, spec.image_shape());
  ckks::write_file(out, runtime::save_bundle(loaded.client.encrypt_image(image)));
  progress("encrypted %s (%zu patch(es)) in %.2f s -> %s (%.1f MB)", image_path.c_str(), spec.grid * spec.grid,
           seconds_since(t), out.c_str(), static_cast<double>(fs::file_size(out)) / 1e6);
  return 0;
}

struct DecryptOptions {
  std::string spec, params, secret, input, model, image, json;
  bool score = false;
};

int cmd_decrypt(const DecryptOptions& o) {
  const runtime::LoadedClient loaded(o.params, o.spec, o.secret);
  const runtime::Client& client = loaded.client;
  const runtime::CiphertextFile ct = read_single_ciphertext(o.input, client.output_context());
  nlohmann::json report;
  if (o.score) {
    const double score = client.decrypt_score(ct);
    std::printf("score %.6f -> %s\n", score, score < 0 ? "MATCH (same person)" : "NO MATCH");
    report = {{"score", score}, {"match", score < 0}};
  } else {
    const nn::Tensor e = client.decrypt_output(ct);
    if (client.spec.classifier) {
      const auto best = std::max_element(e.data.begin(), e.data.end()) - e.data.begin();
      std::printf("logits: %zu classes, predicted class %td (logit %.6f)\n", e.data.size(), best, e.data[best]);
      report = {{"logits", e.data}, {"class", best}};
    } else {
      double norm = 0;
      for (double v : e.data) norm += v * v;
      std::printf("embedding: %zu values, L2 norm %.6f, first values %.6f %.6f %.6f\n", e.data.size(), std::sqrt(norm),
                  e.data[0], e.data[1], e.data[2]);
      report = {{"embedding", e.data}};
    }
    if (!o.model.empty()) {
      // Precision against the float64 reference (needs the plaintext model: demo/testing).
      nn::Tensor want;
      if (nn::is_graph_model_file(o.model)) {
        const nn::Graph graph = nn::load_graph_file(o.model);
        want = graph.forward(app::load_input(o.image, graph.input_shape()));
      } else {
        const nn::PatchCNN model = nn::load_model_file(o.model);
        const nn::Tensor image = app::load_image(o.image, model.image_shape().height);
        want = model.classifier ? model.embedding(image) : model.normalized(image);
      }
      want.shape = e.shape;  // a graph's output may be flattened
      if (want.data.size() != e.data.size())
        throw std::invalid_argument(o.model + ": its output has " + std::to_string(want.data.size()) +
                                    " values, the decrypted one " + std::to_string(e.data.size()));
      const nn::Precision p = nn::precision_of(e, want);
      std::printf("precision vs float64: max abs error %.3e, mean abs error %.3e, relative %.3e (%.1f bits)\n",
                  p.max_abs, p.mean_abs, p.relative, p.bits());
      report["max_abs_error"] = p.max_abs;
      report["mean_abs_error"] = p.mean_abs;
      report["relative_error"] = p.relative;
    }
  }
  write_json_report(o.json, report);
  return 0;
}

// ---- infer / enroll / match (server) ---------------------------------------------------

struct InferOptions {
  std::string params, model, keys, input, out, executor = "seq", json;
  std::size_t workers = 1;
  std::size_t retries = 0;  // fork only: runs of a task again after its worker died
  std::size_t lanes = 0;    // model files only: as planned by compile --plan-only
};

std::unique_ptr<runtime::Executor> make_executor(const InferOptions& o) {
  if (o.workers == 0) throw std::invalid_argument("--workers must be at least 1");
  return runtime::make_executor(o.executor, o.workers, o.retries);
}

// The server's task function, printing a line as each task (a graph's branch: a PatchCNN's
// lane group) finishes, wherever it runs (thread, forked worker or MPI rank: each prints to
// the inherited stderr), so long runs show progress.
runtime::TaskFunction with_progress(runtime::TaskFunction tasks, const runtime::ServedModel& model) {
  return [tasks = std::move(tasks), count = model.tasks()](std::size_t t, const ckks::Ciphertext& in) {
    const auto start = Clock::now();
    ckks::Ciphertext out = tasks(t, in);
    progress("branch %zu of %zu done in %.1f s", t + 1, count, seconds_since(start));
    return out;
  };
}

int run_inference(const InferOptions& o, const runtime::Server& server, runtime::Executor& executor, double load_s) {
  const auto inputs = runtime::read_ciphertexts(o.input, server.context());
  progress("running %zu input ciphertext(s), %zu task(s) on the %s executor (%zu workers)", inputs.ciphertexts.size(),
           server.served().tasks(), executor.name().c_str(), executor.workers());
  const auto t = Clock::now();
  runtime::RunStats stats;
  const runtime::CiphertextFile result =
      server.key_set().infer(inputs, executor, with_progress(server.tasks(), server.served()), &stats);
  const double infer_s = seconds_since(t);
  runtime::write_ciphertexts(o.out, server.output_context(), result);
  progress("encrypted %s in %.2f s (executor %.2f s, serialization/transfer %.3f s) -> %s",
           server.key_set().spec().classifier ? "logits" : "embedding", infer_s, stats.seconds,
           stats.transfer_seconds, o.out.c_str());
  nlohmann::json steps = nlohmann::json::array();
  for (const auto& step : stats.steps)
    steps.push_back({{"name", step.name}, {"level", step.level}, {"seconds", step.seconds}});
  if (!stats.steps.empty()) {
    auto slowest = stats.steps;
    std::sort(slowest.begin(), slowest.end(), [](const auto& a, const auto& b) { return a.seconds > b.seconds; });
    slowest.resize(std::min<std::size_t>(slowest.size(), 3));
    std::string line;
    for (const auto& step : slowest) {
      char seconds[32];
      std::snprintf(seconds, sizeof seconds, " %.2f s;", step.seconds);
      line += " " + step.name + seconds;
    }
    progress("slowest steps outside the branches:%s (all of them: --json)", line.c_str());
  }
  write_json_report(o.json, {{"executor", executor.name()},
                             {"workers", executor.workers()},
                             {"load_seconds", load_s},
                             {"infer_seconds", infer_s},
                             {"executor_seconds", stats.seconds},
                             {"task_seconds", stats.task_seconds},
                             {"transfer_seconds", stats.transfer_seconds},
                             {"transfer_bytes", stats.transfer_bytes},
                             {"steps", steps},
                             {"peak_rss_gb", runtime::peak_rss_gb()}});
  return 0;
}

int cmd_infer(InferOptions o, int* argc, char*** argv) {
  if (o.retries > 0 && o.executor != "fork")
    throw std::invalid_argument("--retries applies to the fork executor (a dead thread or rank ends the run)");
  if (o.executor == "fork") omp_set_num_threads(1);  // the parent must stay single-threaded
  if (o.executor == "mpi") {
#ifdef PFHE_HAVE_MPI
    runtime::MpiSession mpi(argc, argv);
    omp_set_num_threads(1);
    const auto t = Clock::now();
    const runtime::Server server(o.params, o.model, o.keys, o.lanes);
    if (mpi.rank() != 0) {
      runtime::serve_mpi_tasks(mpi, server.rings(), with_progress(server.tasks(), server.served()));
      return 0;
    }
    const double load_s = seconds_since(t);
    auto executor = runtime::make_mpi_executor(mpi);
    return run_inference(o, server, *executor, load_s);
#else
    (void)argc;
    (void)argv;
    throw std::invalid_argument("this pfhe was built without MPI (install libopenmpi-dev and rebuild)");
#endif
  }
  auto executor = make_executor(o);
  const auto t = Clock::now();
  progress("loading parameters, model and evaluation keys");
  const runtime::Server server(o.params, o.model, o.keys, o.lanes);
  const double load_s = seconds_since(t);
  progress("loaded in %.1f s (model %.1f s, evaluation keys %.1f s)%s", load_s, server.load_seconds().model,
           server.load_seconds().keys,
           server.compiles_per_task() ? "; a model file: each lane group is compiled when its task runs" : "");
  return run_inference(o, server, *executor, load_s);
}

std::string template_path(const std::string& store, const std::string& name) {
  if (!app::TemplateStore::is_name_text(name))
    throw std::invalid_argument("template name must be non-empty and use only letters, digits, '_' and '-'");
  return store + "/" + name + ".ct";
}

// The spec says in which ring embeddings come back (the half ring's after a ring switch).
int cmd_enroll(const std::string& params, const std::string& spec_path, const std::string& store,
               const std::string& name, const std::string& input) {
  const ckks::Context ctx(runtime::read_secure_parameters(params));
  const auto half_ring = runtime::ClientSpec::read(spec_path).half_ring(ctx.params());
  const ckks::Context& output = half_ring ? half_ring->context : ctx;
  const runtime::CiphertextFile e = read_single_ciphertext(input, output);  // validated before it is stored
  fs::create_directories(store);
  runtime::write_ciphertexts(template_path(store, name), output, e);
  progress("enrolled '%s' (encrypted template) in %s", name.c_str(), store.c_str());
  return 0;
}

int cmd_match(const InferOptions& o, const std::string& store, const std::string& name, double threshold) {
  const runtime::Server server(o.params, o.model, o.keys, o.lanes);
  if (server.key_set().spec().classifier)
    throw std::invalid_argument("match: the model is a classifier (its output is logits), not a face matcher");
  const std::string path = template_path(store, name);
  if (!fs::exists(path)) throw std::invalid_argument("no enrolled template '" + name + "' in " + store);
  const runtime::CiphertextFile enrolled = read_single_ciphertext(path, server.output_context());
  const runtime::CiphertextFile probe = read_single_ciphertext(o.input, server.output_context());
  runtime::write_ciphertexts(o.out, server.output_context(), server.key_set().match(probe, enrolled, threshold));
  progress("encrypted match score against '%s' -> %s", name.c_str(), o.out.c_str());
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  ring::keep_freed_memory_for_reuse();
  // A peer that closes a connection (a server refusing an upload before reading all of it,
  // a client gone) is an error to report, not a signal that kills the process.
  std::signal(SIGPIPE, SIG_IGN);
  CLI::App app{"pfhe: encrypted inference (CryptoFace PatchCNNs and model graphs) under RNS-CKKS"};
  app.require_subcommand(1);

  std::string kind = "reduced", calibrate_on, out, model, out_dir, spec, params, secret, keys, image, input, store, name, json;
  std::uint64_t seed = 2025;
  std::size_t size = 64;
  double threshold = 0, variation = 0;
  InferOptions infer;
  DecryptOptions dec;

  auto* make = app.add_subcommand("make-model", "write a synthetic calibrated model file (a PatchCNN or a graph)");
  make->add_option("--kind", kind,
                  "PatchCNNs: tiny | reduced | cryptofacenet4 | cryptofacenet9 | cryptofacenet16 | cryptofacenet64 "
                  "(8x8); graphs: two-tower | two-tower-tiny | two-tower-large")->capture_default_str();
  make->add_option("--seed", seed)->capture_default_str();
  make->add_option("--calibrate-on", calibrate_on, "directory of real images to calibrate on (random crops)")
      ->check(CLI::ExistingDirectory);
  make->add_option("--out", out, "model file (.pfhm)")->required();

  std::string onnx_model;
  auto* import = app.add_subcommand("import", "read an ONNX model (torch.onnx.export) into a graph model file");
  import->add_option("model", onnx_model, "the .onnx file")->required()->check(CLI::ExistingFile);
  import->add_option("--out", out, "graph model file (.pfhm)")->required();

  auto* sample = app.add_subcommand("sample-image", "write a synthetic face-like PNG image");
  sample->add_option("--size", size)->capture_default_str()->check(CLI::Range(1, 4096));
  sample->add_option("--seed", seed)->capture_default_str();
  sample->add_option("--variation", variation, "blend in this fraction of another image")->capture_default_str();
  sample->add_option("--out", out)->required();

  CompileOptions comp;
  auto* compile = app.add_subcommand("compile", "server: model file -> parameters, compiled artefact, client spec");
  compile->add_option("--model", comp.model, "model file (.pfhm: a PatchCNN or a graph) or an ONNX model (.onnx)")
      ->required()
      ->check(CLI::ExistingFile);
  compile->add_option("--out-dir", comp.out_dir)->required();
  compile->add_option("--budget-gb", comp.budget_gb, "memory for pre-encoded diagonals (the rest is encoded just in time)")
      ->capture_default_str()
      ->check(CLI::Range(0.0, 1e6));
  compile->add_option("--lanes", comp.lanes, "patches per ciphertext (power of two; 0: as many as fit)")->capture_default_str();
  compile->add_option("--precision-bits", comp.precision_bits,
                      "target bits of the encrypted output (-log2 relative error): the scale is chosen for it, "
                      "or, for a graph that bootstraps, the bootstraps (0: a 2^40 scale)")
      ->check(CLI::Range(0.0, 40.0))
      ->capture_default_str();
  compile->add_option("--calibrate-on", comp.calibrate_on,
                      "directory of images for the output range and the precision estimate (default: synthetic)")
      ->check(CLI::ExistingDirectory);
  compile->add_flag("--plan-only", comp.plan_only,
                    "write params.pfhe and client.json only; serve the model file itself (compiled per task)");
  compile->add_flag("--no-ring-switch", comp.no_ring_switch,
                    "keep every block in the big ring (default: switch to N/2 where it is estimated to pay off)");
  compile->add_flag("--bootstrap", comp.bootstrap,
                    "graphs: the bootstrapping chain (N = 2^16, up to 12 levels of 2^40 between bootstraps) even when the graph fits "
                    "without it (default: only for graphs deeper than N = 2^16 holds)");
  compile->add_option("--bootstrap-levels", comp.bootstrap_levels,
                      "graphs that bootstrap: at most this many levels between bootstraps (0: the count with the least "
                      "estimated latency, from 2 to the most a 4-digit chain holds, 12); fewer give smaller keys and less "
                      "memory for more bootstraps (docs/BOOTSTRAPPING.md)")
      ->check(CLI::Range(0, nn::kBootstrapMostComputeLevels))
      ->capture_default_str();

  auto* keygen = app.add_subcommand("keygen", "client: secret key + evaluation keys for a compiled model");
  keygen->add_option("--spec", spec, "client.json from compile")->required()->check(CLI::ExistingFile);
  keygen->add_option("--params", params)->required()->check(CLI::ExistingFile);
  keygen->add_option("--secret-key", secret, "output; stays with the client")->required();
  keygen->add_option("--eval-keys", keys, "output; sent to the server")->required();

  auto* expand = app.add_subcommand("expand-keys",
                                    "server: evaluation keys -> a key cache that infer, match and bench map in place");
  expand->add_option("--spec", spec, "client.json from compile")->required()->check(CLI::ExistingFile);
  expand->add_option("--params", params)->required()->check(CLI::ExistingFile);
  expand->add_option("--eval-keys", keys, "from keygen")->required()->check(CLI::ExistingFile);
  expand->add_option("--out", out, "the key cache (twice the key file's size)")->required();

  auto* encrypt = app.add_subcommand("encrypt", "client: image or .npy input -> encrypted patches (or input)");
  encrypt->add_option("--spec", spec)->required()->check(CLI::ExistingFile);
  encrypt->add_option("--params", params)->required()->check(CLI::ExistingFile);
  encrypt->add_option("--secret-key", secret)->required()->check(CLI::ExistingFile);
  encrypt->add_option("--image", image, "PNG / PPM / JPEG / BMP, or a .npy array of the model's input shape")
      ->required()
      ->check(CLI::ExistingFile);
  encrypt->add_option("--out", out)->required();

  auto* run = app.add_subcommand("infer", "server: encrypted input -> encrypted embedding or logits");
  auto* match = app.add_subcommand("match", "server: encrypted embedding vs enrolled template -> encrypted score");
  for (auto* c : {run, match}) {
    c->add_option("--params", infer.params)->required()->check(CLI::ExistingFile);
    c->add_option("--model", infer.model, "model.pfhc from compile, or the model file (.pfhm): compiled per task")
        ->required()
        ->check(CLI::ExistingFile);
    c->add_option("--lanes", infer.lanes, "with a model file: the lanes compile --plan-only was given")
        ->capture_default_str();
    c->add_option("--eval-keys", infer.keys, "from keygen, or its key cache from expand-keys")
        ->required()
        ->check(CLI::ExistingFile);
    c->add_option("--input", infer.input)->required()->check(CLI::ExistingFile);
    c->add_option("--out", infer.out)->required();
  }
  run->add_option("--executor", infer.executor, "seq | threads | fork | mpi (under mpirun)")->capture_default_str();
  run->add_option("--workers", infer.workers)->capture_default_str();
  run->add_option("--retries", infer.retries, "fork: run a task again on a new worker if its worker dies")
      ->capture_default_str();
  run->add_option("--json", infer.json, "write a timing report (- for stdout)");
  match->add_option("--store", store)->required();
  match->add_option("--name", name)->required();
  match->add_option("--threshold", threshold, "squared-distance threshold")->required();

  auto* enroll = app.add_subcommand("enroll", "server: store an encrypted embedding as a named template");
  enroll->add_option("--params", params)->required()->check(CLI::ExistingFile);
  enroll->add_option("--spec", spec, "client.json from compile (in which ring embeddings come back)")
      ->required()
      ->check(CLI::ExistingFile);
  enroll->add_option("--store", store)->required();
  enroll->add_option("--name", name)->required();
  enroll->add_option("--embedding", input)->required()->check(CLI::ExistingFile);

  app::BenchOptions bench;
  auto* bench_cmd = app.add_subcommand("bench", "server: time executor configurations on one encrypted input");
  bench_cmd->add_option("--params", bench.params)->required()->check(CLI::ExistingFile);
  bench_cmd->add_option("--model", bench.model, "model.pfhc from compile, or the model file (.pfhm): compiled per task")
      ->required()
      ->check(CLI::ExistingFile);
  bench_cmd->add_option("--lanes", bench.lanes, "with a model file: the lanes compile --plan-only was given")
      ->capture_default_str();
  bench_cmd->add_option("--eval-keys", bench.keys, "from keygen, or its key cache from expand-keys")
      ->required()
      ->check(CLI::ExistingFile);
  bench_cmd->add_option("--input", bench.input, "encrypted patches from encrypt")->required()->check(CLI::ExistingFile);
  bench_cmd->add_option("--runs", bench.runs, "comma-separated: seq, threads:W, fork:W, recompile:W")
      ->capture_default_str();
  bench_cmd->add_option("--model-file", bench.model_file, "model weights (.pfhm), for recompile runs")
      ->check(CLI::ExistingFile);
  bench_cmd->add_option("--out-dir", bench.out_dir, "keep each run's output ciphertext here");
  bench_cmd->add_option("--json", bench.json, "write the report as JSON (- for stdout)");

  app::ServeOptions serve;
  auto* serve_cmd = app.add_subcommand("serve", "server: a long-running HTTP service (model loaded once, many clients)");
  serve_cmd->add_option("--params", serve.params)->required()->check(CLI::ExistingFile);
  serve_cmd->add_option("--model", serve.model, "model.pfhc from compile, or a model file")
      ->required()
      ->check(CLI::ExistingFile);
  serve_cmd->add_option("--state-dir", serve.state_dir,
                        "registered key sets and the job journal (kept across restarts), and the port")
      ->required();
  serve_cmd->add_option("--host", serve.host)->capture_default_str();
  serve_cmd->add_option("--port", serve.port, "0: any free port")->capture_default_str()->check(CLI::Range(0, 65535));
  serve_cmd->add_option("--executor", serve.executor,
                        "threads; fork: each job slot's inference process runs jobs on a fork pool; mpi: each job "
                        "slot's MPI job (mpirun) runs them on its ranks")
      ->capture_default_str()
      ->check(CLI::IsMember({"threads", "fork", "mpi"}));
  serve_cmd->add_option("--workers", serve.workers,
                        "threads shared by the running jobs (fork: workers per job; mpi: worker ranks per job)")
      ->capture_default_str();
  auto* serve_retries = serve_cmd->add_option("--retries", serve.retries,
                                              "fork: runs of a task again after its worker died")
                            ->capture_default_str()
                            ->check(CLI::Range(0, 16));
  serve_cmd->add_option("--mpirun", serve.mpirun, "mpi: the MPI launcher")->capture_default_str();
  serve_cmd->add_option("--max-requests", serve.max_requests, "jobs running at once")->capture_default_str();
  serve_cmd->add_option("--max-queue", serve.max_queue, "jobs waiting or running; more get HTTP 503")
      ->capture_default_str();
  serve_cmd->add_option("--max-loaded-keys", serve.max_loaded_keys,
                        "key sets kept mapped; the others are mapped from their key cache when a job needs them")
      ->capture_default_str()
      ->check(CLI::Range(std::size_t{1}, std::size_t{1} << 20));
  serve_cmd->add_option("--keep-jobs", serve.keep_jobs_seconds,
                        "seconds a finished job's input and result stay fetchable (0: forever)")
      ->capture_default_str()
      ->check(CLI::Range(0.0, 1e9));
  // Started by `pfhe serve --executor fork` (apps/pfhe/inference_process.h), not by users.
  app::InferenceProcessOptions inference_process;
  int inference_fd = -1;
  std::string inference_socket;
  auto* inference_cmd = app.add_subcommand("inference-process", "")->group("");
  inference_cmd->add_option("--params", inference_process.params)->required();
  inference_cmd->add_option("--model", inference_process.model)->required();
  inference_cmd->add_option("--executor", inference_process.executor)->required()->check(CLI::IsMember({"fork", "mpi"}));
  inference_cmd->add_option("--workers", inference_process.workers)->required();
  inference_cmd->add_option("--retries", inference_process.retries)->required();
  inference_cmd->add_option("--fd", inference_fd, "fork: the server's socket");
  inference_cmd->add_option("--socket", inference_socket, "mpi: the path rank 0 connects to");
  std::string server_url, job;
  auto* client_cmd = app.add_subcommand("client", "client: talk to a pfhe serve");
  client_cmd->require_subcommand(1);
  auto* client_health = client_cmd->add_subcommand("health", "print the server's state (JSON)");
  auto* client_metrics = client_cmd->add_subcommand("metrics", "print the server's counters (JSON)");
  auto* client_register = client_cmd->add_subcommand("register", "send the evaluation keys to the server");
  auto* client_submit = client_cmd->add_subcommand("submit", "send encrypted input; print its job id");
  auto* client_status = client_cmd->add_subcommand("status", "print a job's state (JSON)");
  auto* client_fetch = client_cmd->add_subcommand("fetch", "wait for a job and write its encrypted result");
  auto* client_infer = client_cmd->add_subcommand("infer", "submit encrypted input, wait, write the encrypted result");
  auto* client_enroll =
      client_cmd->add_subcommand("enroll", "store an encrypted embedding as a named template of its key set");
  auto* client_match = client_cmd->add_subcommand(
      "match", "match an encrypted embedding against its key set's template; write the encrypted score");
  auto* client_forget = client_cmd->add_subcommand("forget", "remove a template of a key set");
  double client_wait = 600;
  for (auto* c : {client_health, client_metrics, client_register, client_submit, client_status, client_fetch,
                  client_infer, client_enroll, client_match, client_forget})
    c->add_option("--server", server_url, "http://host:port")->required();
  for (auto* c : {client_enroll, client_match, client_forget})
    c->add_option("--name", name, "the template's name (letters, digits, '_', '-')")->required();
  client_enroll->add_option("--embedding", input, "an encrypted embedding (an infer result)")
      ->required()
      ->check(CLI::ExistingFile);
  client_match->add_option("--input", input, "the probe: an encrypted embedding")->required()->check(CLI::ExistingFile);
  client_match->add_option("--threshold", threshold, "squared-distance threshold")->required();
  client_match->add_option("--out", out)->required();
  std::string client_key_set;
  client_forget->add_option("--key-set", client_key_set, "the key set's tag (register printed it)")->required();
  for (auto* c : {client_register, client_submit, client_fetch, client_infer, client_enroll, client_match})
    c->add_option("--wait", client_wait, "seconds to wait for the job and to keep asking a busy or restarting server")
        ->capture_default_str()
        ->check(CLI::Range(0.0, 86400.0));
  client_register->add_option("--eval-keys", keys)->required()->check(CLI::ExistingFile);
  for (auto* c : {client_submit, client_infer}) c->add_option("--input", input)->required()->check(CLI::ExistingFile);
  for (auto* c : {client_status, client_fetch}) c->add_option("--job", job, "the id submit printed")->required();
  for (auto* c : {client_fetch, client_infer}) c->add_option("--out", out)->required();

  auto* decrypt = app.add_subcommand("decrypt", "client: decrypt an embedding, logits or a match score");
  decrypt->add_option("--spec", dec.spec)->required()->check(CLI::ExistingFile);
  decrypt->add_option("--params", dec.params)->required()->check(CLI::ExistingFile);
  decrypt->add_option("--secret-key", dec.secret)->required()->check(CLI::ExistingFile);
  decrypt->add_option("--input", dec.input)->required()->check(CLI::ExistingFile);
  decrypt->add_flag("--score", dec.score, "the input is a match score");
  decrypt->add_option("--reference-model", dec.model, "plaintext model: report precision against float64");
  decrypt->add_option("--reference-image", dec.image, "the image that was encrypted");
  decrypt->add_option("--json", dec.json, "write the result as JSON (- for stdout)");

  CLI11_PARSE(app, argc, argv);
  try {
    if (*make) return cmd_make_model(kind, seed, calibrate_on, out);
    if (*import) return cmd_import(onnx_model, out);
    if (*sample) return cmd_sample_image(size, seed, variation, out);
    if (*compile) return cmd_compile(comp);
    if (*keygen) return cmd_keygen(spec, params, secret, keys);
    if (*expand) return cmd_expand_keys(spec, params, keys, out);
    if (*encrypt) return cmd_encrypt(spec, params, secret, image, out);
    if (*run) return cmd_infer(infer, &argc, &argv);
    if (*enroll) return cmd_enroll(params, spec, store, name, input);
    if (*match) return cmd_match(infer, store, name, threshold);
    if (*bench_cmd) return app::run_bench(bench);
    if (*serve_cmd) {
      if (serve.executor == "mpi" && serve_retries->count() > 0)
        throw std::invalid_argument("--retries applies to the fork executor (a dead MPI rank ends its MPI job: the "
                                    "server starts another and runs the job once more)");
      return app::run_serve(serve);
    }
    if (*inference_cmd) {
      if (inference_process.executor == "mpi")
        return app::run_mpi_inference_process(inference_process, inference_socket, &argc, &argv);
      if (inference_fd < 0) throw std::invalid_argument("inference-process: --fd is required");
      return app::run_inference_process(inference_process, inference_fd);
    }
    if (*client_health) return app::run_client_health(server_url);
    if (*client_register) return app::run_client_register(server_url, keys, client_wait);
    if (*client_metrics) return app::run_client_metrics(server_url);
    if (*client_submit) return app::run_client_submit(server_url, input, client_wait);
    if (*client_enroll) return app::run_client_enroll(server_url, name, input, client_wait);
    if (*client_match) return app::run_client_match(server_url, name, input, threshold, out, client_wait);
    if (*client_forget) return app::run_client_forget(server_url, name, client_key_set);
    if (*client_status) return app::run_client_status(server_url, job);
    if (*client_fetch) return app::run_client_fetch(server_url, job, out, client_wait);
    if (*client_infer) return app::run_client_infer(server_url, input, out, client_wait);
    if (*decrypt) {
      if (dec.model.empty() != dec.image.empty())
        throw std::invalid_argument("--reference-model and --reference-image go together");
      return cmd_decrypt(dec);
    }
  } catch (const std::bad_alloc&) {
    std::fprintf(stderr,
                 "pfhe: error: out of memory: this step needs more RAM than the process may use (peak figures in "
                 "docs/BENCHMARKS.md); compile with a smaller --budget-gb or run fewer workers\n");
    return 1;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "pfhe: error: %s\n", e.what());
    return 1;
  }
  return 2;
}
