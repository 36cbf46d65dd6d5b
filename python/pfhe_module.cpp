// The C++ half of the Python package (python/README.md): Orion's flow over pfhe's graph
// path. Model (a graph: from ONNX or a graph model file; fit on calibration inputs) ->
// CompiledModel (nn::compile_graph under a runtime::ServedModel; its KeySets run
// inferences on an executor) -> Spec (parameters + client spec: what a client needs) ->
// Client (the secret key, encryption, decryption, evaluation keys) -> Ciphertext (the
// checksummed bytes of a ciphertext file, as the CLI writes them). Every object saves and
// loads in the CLI's formats, so Python and `pfhe` commands interoperate. C++ exceptions
// become Python exceptions with their message (std::invalid_argument: ValueError; the
// rest: RuntimeError); the GIL is released around long computations.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "ckks/checksum.h"
#include "ckks/serialization.h"
#include "nn/fit.h"
#include "nn/graph_file.h"
#include "nn/measured_precision.h"
#include "nn/onnx_import.h"
#include "nn/parameter_choice.h"
#include "runtime/client_server.h"
#include "runtime/executor.h"

namespace py = pybind11;
using namespace pfhe;

namespace {

using Clock = std::chrono::steady_clock;
using Array = py::array_t<double, py::array::c_style | py::array::forcecast>;

double seconds_since(Clock::time_point t) { return std::chrono::duration<double>(Clock::now() - t).count(); }

template <typename... Args>
void report(bool on, const char* format, Args... args) {
  if (!on) return;
  std::fprintf(stderr, "pfhe: ");
  std::fprintf(stderr, format, args...);
  std::fprintf(stderr, "\n");
}

std::string dims_str(const py::buffer_info& info) {
  std::string s = "(";
  for (std::size_t i = 0; i < info.shape.size(); ++i) s += (i ? ", " : "") + std::to_string(info.shape[i]);
  return s + (info.shape.size() == 1 ? ",)" : ")");
}

// Inputs of shape (C, H, W), or (B, C, H, W) for a batch (B = 1 also for one input).
std::vector<nn::Tensor> tensors_of(const Array& array, const nn::Shape& shape, bool batch, const char* what) {
  const py::buffer_info info = array.request();
  const std::vector<py::ssize_t> want{static_cast<py::ssize_t>(shape.channels), static_cast<py::ssize_t>(shape.height),
                                      static_cast<py::ssize_t>(shape.width)};
  const bool one = info.shape == want;
  const bool many = info.ndim == 4 && std::vector<py::ssize_t>(info.shape.begin() + 1, info.shape.end()) == want &&
                    (batch || info.shape[0] == 1);
  if (!one && !many)
    throw std::invalid_argument(std::string(what) + ": the model takes arrays of shape " + shape.str() +
                                (batch ? " or a batch (B, C, H, W) of them" : " (or (1, C, H, W))") + ", got " +
                                dims_str(info));
  const std::size_t count = one ? 1 : static_cast<std::size_t>(info.shape[0]);
  if (count == 0) throw std::invalid_argument(std::string(what) + ": the batch is empty");
  const double* data = static_cast<const double*>(info.ptr);
  std::vector<nn::Tensor> out;
  for (std::size_t b = 0; b < count; ++b) {
    nn::Tensor t(shape);
    std::copy(data + b * shape.size(), data + (b + 1) * shape.size(), t.data.begin());
    for (double v : t.data)
      if (!std::isfinite(v)) throw std::invalid_argument(std::string(what) + ": the input has a NaN or an infinity");
    out.push_back(std::move(t));
  }
  return out;
}

// A (C,) vector when the tensor is C x 1 x 1 (logits), (C, H, W) otherwise.
Array array_of(const nn::Tensor& t) {
  std::vector<py::ssize_t> dims{static_cast<py::ssize_t>(t.shape.channels)};
  if (t.shape.height != 1 || t.shape.width != 1) {
    dims.push_back(static_cast<py::ssize_t>(t.shape.height));
    dims.push_back(static_cast<py::ssize_t>(t.shape.width));
  }
  Array out(dims);
  std::copy(t.data.begin(), t.data.end(), out.mutable_data());
  return out;
}

py::tuple shape_tuple(const nn::Shape& s) { return py::make_tuple(s.channels, s.height, s.width); }

// ---- the model and its fit ---------------------------------------------------------------

struct Model {
  nn::Graph graph;
  std::optional<nn::FitReport> ranges;  // from fit(); compile needs it
  std::vector<nn::Tensor> calibration;  // fit()'s inputs: a precision target is measured on them
};

// Parameters plus the client spec: everything a client needs, nothing secret.
struct Spec {
  ckks::Parameters params;
  runtime::ClientSpec client;

  static Spec load(const std::string& dir) {
    return {runtime::read_secure_parameters(dir + "/params.pfhe"), runtime::ClientSpec::read(dir + "/client.json")};
  }
  void save(const std::string& dir) const {
    std::filesystem::create_directories(dir);
    ckks::write_file(dir + "/params.pfhe", ckks::save_parameters(params));
    client.write(dir + "/client.json");
  }
};

// ---- ciphertexts and keys -----------------------------------------------------------------

// A ciphertext file's bytes, checksum trailer included (runtime/bundle.h): what `pfhe
// encrypt` and `pfhe infer` write and the service sends.
struct Ciphertext {
  ckks::Bytes bytes;

  static Ciphertext load(const std::string& path) {
    Ciphertext c{ckks::read_file(path)};  // verified and named by path
    ckks::append_trailer(c.bytes);
    return c;
  }
  static Ciphertext from_bytes(const py::bytes& data) {
    const std::string s = data;
    Ciphertext c{ckks::Bytes(s.begin(), s.end())};
    ckks::verify_trailer(c.bytes, "the ciphertext bytes");
    return c;
  }
  runtime::CiphertextFile parse(const ckks::Context& ctx, const std::string& what) const {
    return runtime::parse_ciphertext_file(bytes, ctx, what);
  }
};

struct EvaluationKeys {
  std::shared_ptr<const ckks::Context> ctx;
  std::shared_ptr<const nn::HalfRing> half_ring;
  std::shared_ptr<const runtime::EvaluationKeys> keys;

  static EvaluationKeys load(const std::string& path, const Spec& spec) {
    auto ctx = std::make_shared<const ckks::Context>(spec.params);
    auto half = spec.client.half_ring(spec.params);
    auto keys =
        std::make_shared<const runtime::EvaluationKeys>(runtime::read_evaluation_keys(path, *ctx, half.get()));
    return {ctx, half, keys};
  }
  void save(const std::string& path) const { runtime::write_evaluation_keys(path, *ctx, half_ring.get(), *keys); }
  std::size_t bytes() const {
    std::size_t b = keys->galois.byte_size();
    if (keys->half) b += keys->half->galois.byte_size();
    return b;
  }
};

// ---- the client: the secret key stays here ------------------------------------------------

class Client {
 public:
  // New keys: a fresh key set (tag and secret from the OS CSPRNG).
  explicit Client(const Spec& spec)
      : spec_(spec), ctx_(std::make_shared<const ckks::Context>(spec.params)), half_(spec.client.half_ring(spec.params)),
        client_(std::make_unique<runtime::Client>(*ctx_, spec.client, half_, runtime::new_secret_keys(*ctx_, half_.get()))) {}

  static std::unique_ptr<Client> load(const std::string& dir) {
    return std::unique_ptr<Client>(new Client(Spec::load(dir), dir + "/secret.key"));
  }
  // params.pfhe, client.json and secret.key (owner-readable only); the evaluation keys are
  // saved on their own (they go to the server).
  void save(const std::string& dir) const {
    spec_.save(dir);
    runtime::write_secret_key(dir + "/secret.key", *ctx_, half_.get(), client_->secret_key);
  }

  Ciphertext encrypt(const Array& x) const {
    const nn::Tensor input = tensors_of(x, spec_.client.image_shape(), false, "encrypt").front();
    Ciphertext c{runtime::save_bundle(client_->encrypt_image(input))};
    ckks::append_trailer(c.bytes);
    return c;
  }
  Array decrypt(const Ciphertext& c) const {
    return array_of(client_->decrypt_output(c.parse(client_->output_context(), "decrypt")));
  }
  // Made on first use (from the secret key; a loaded client makes a new set with the same
  // tag), then the same object.
  EvaluationKeys evaluation_keys(bool progress) {
    if (!keys_) {
      const auto t = Clock::now();
      report(progress, "generating a relinearization key and %zu Galois keys", spec_.client.rotation_levels.size());
      {
        py::gil_scoped_release release;
        keys_ = std::make_shared<const runtime::EvaluationKeys>(
            runtime::make_evaluation_keys(*ctx_, half_.get(), client_->secret_key, spec_.client.key_request()));
      }
      report(progress, "evaluation keys in %.1f s", seconds_since(t));
    }
    return {ctx_, half_, keys_};
  }
  const Spec& spec() const { return spec_; }
  std::uint64_t key_set() const { return client_->secret_key.key_set; }

 private:
  Client(const Spec& spec, const std::string& secret_path)
      : spec_(spec), ctx_(std::make_shared<const ckks::Context>(spec.params)), half_(spec.client.half_ring(spec.params)),
        client_(std::make_unique<runtime::Client>(*ctx_, spec.client, half_,
                                                  runtime::read_secret_key(secret_path, *ctx_, half_.get()))) {}
  Spec spec_;
  std::shared_ptr<const ckks::Context> ctx_;
  std::shared_ptr<const nn::HalfRing> half_;
  std::unique_ptr<runtime::Client> client_;
  std::shared_ptr<const runtime::EvaluationKeys> keys_;
};

// ---- the compiled model: the server side --------------------------------------------------

class CompiledModel {
 public:
  explicit CompiledModel(std::unique_ptr<runtime::ServedModel> served) : served_(std::move(served)) {}

  static std::unique_ptr<CompiledModel> load(const std::string& dir) {
    return std::make_unique<CompiledModel>(
        std::make_unique<runtime::ServedModel>(dir + "/params.pfhe", dir + "/model.pfhc"));
  }
  void save(const std::string& dir) const {
    runtime::write_compiled_graph(dir, served_->context().params(), served_->graph());
  }
  Spec spec() const { return {served_->context().params(), served_->client_spec()}; }
  const nn::CompiledGraph& graph() const { return served_->graph(); }
  std::size_t branch_tasks() const { return served_->tasks(); }

  Ciphertext run(const Ciphertext& input, const EvaluationKeys& keys, const std::string& executor_name,
                 std::size_t workers, std::size_t retries, bool progress) {
    const runtime::KeySet& key_set = key_set_of(keys);
    const runtime::CiphertextFile in = input.parse(served_->context(), "the input ciphertext");
    const auto executor = runtime::make_executor(executor_name, workers, retries);
    const std::size_t tasks = served_->tasks();
    runtime::TaskFunction task = key_set.tasks();
    if (progress)
      task = [task, tasks](std::size_t t, const ckks::Ciphertext& c) {
        const auto start = Clock::now();
        ckks::Ciphertext out = task(t, c);
        report(true, "branch %zu of %zu done in %.1f s", t + 1, tasks, seconds_since(start));
        return out;
      };
    const auto t = Clock::now();
    runtime::CiphertextFile out;
    {
      py::gil_scoped_release release;
      out = key_set.infer(in, *executor, task);
    }
    report(progress, "inference in %.1f s on the %s executor (%zu workers, %zu branch tasks)", seconds_since(t),
           executor->name().c_str(), executor->workers(), tasks);
    return {runtime::ciphertext_file_bytes(key_set.output_context(), out)};
  }

 private:
  // Each key set is checked against the model's rotations and gets its evaluators once;
  // the model keeps a copy of the keys it has seen (by tag).
  const runtime::KeySet& key_set_of(const EvaluationKeys& keys) {
    if (keys.ctx->params().fingerprint() != served_->context().params().fingerprint())
      throw std::invalid_argument("the evaluation keys belong to other parameters (keys of another model?)");
    auto& slot = key_sets_[keys.keys->key_set];
    if (!slot) slot = std::make_unique<runtime::KeySet>(*served_, *keys.keys);
    return *slot;
  }
  std::unique_ptr<runtime::ServedModel> served_;
  std::map<std::uint64_t, std::unique_ptr<runtime::KeySet>> key_sets_;
};

std::unique_ptr<CompiledModel> compile_model(const Model& model, int scale_bits, double precision_bits, double budget_gb,
                                             bool bootstrap, int bootstrap_levels, bool progress) {
  if (!model.ranges)
    throw std::invalid_argument("compile: call fit(calibration_inputs) first (the ranges choose q_0 and check "
                                "every polynomial's domain)");
  if (!(budget_gb >= 0)) throw std::invalid_argument("compile: budget_gb must be 0 or more");
  if (precision_bits > 0 && scale_bits != nn::kDefaultScaleBits)
    throw std::invalid_argument("compile: give scale_bits or precision_bits, not both");
  const auto t = Clock::now();
  std::unique_ptr<runtime::ServedModel> served;
  {
    py::gil_scoped_release release;
    // As `pfhe compile` chooses: the smallest ring holding the graph, else (or with
    // `bootstrap`) the bootstrapping chain with bootstraps placed from the fit() ranges.
    nn::GraphParameters chosen =
        nn::graph_parameters_for_compile(model.graph, *model.ranges, scale_bits, bootstrap, bootstrap_levels);
    if (precision_bits > 0) {
      report(progress, "precision target %.1f bits: measuring encrypted runs (a key pair made for it, dropped)",
             precision_bits);
      const nn::GraphPrecisionChoice choice =
          nn::graph_parameters_for_precision(model.graph, model.calibration, *model.ranges, chosen, precision_bits);
      chosen = choice.parameters;
      report(progress, "%s: %.1f bits measured", choice.what.c_str(), choice.measured_bits);
    }
    const ckks::ParameterSpec& spec = chosen.spec;
    const ckks::Parameters params = ckks::Parameters::create(spec);
    report(progress, "a graph of %zu nodes, input %s -> parameters %s", model.graph.nodes().size(),
           model.graph.input_shape().str().c_str(), params.describe().c_str());
    const auto budget = static_cast<std::size_t>(budget_gb * static_cast<double>(1ULL << 30));
    if (chosen.bootstrapping)
      report(progress, "bootstrapping at N = 2^16 (%s)",
             bootstrap ? "bootstrap=True" : "the graph is deeper than N = 2^16 holds without it");
    served = std::make_unique<runtime::ServedModel>(params, [&](const ckks::Encoder& enc) {
      return nn::compile_graph(model.graph, enc, budget, !chosen.bootstrapping, chosen.bootstrapping, &*model.ranges);
    });
  }
  const nn::CompiledGraph& g = served->graph();
  report(progress, "compiled in %.1f s: depth %zu, %zu bootstrap(s), %zu parallel region(s), %zu rotation keys",
         seconds_since(t), g.depth(), g.bootstraps(), g.parallel_regions().size(), g.rotation_levels().size());
  return std::make_unique<CompiledModel>(std::move(served));
}

py::dict fit_model(Model& model, const Array& batch) {
  const std::vector<nn::Tensor> inputs = tensors_of(batch, model.graph.input_shape(), true, "fit");
  {
    py::gil_scoped_release release;
    model.ranges = nn::fit(model.graph, inputs, nn::kIntermediateLimit);
    model.calibration.assign(inputs.begin(), inputs.begin() + static_cast<std::ptrdiff_t>(std::min<std::size_t>(2, inputs.size())));
  }
  py::dict out;
  for (const auto& r : model.ranges->ranges) out[py::str(r.name)] = r.max_abs;
  return out;
}

}  // namespace

PYBIND11_MODULE(_pfhe, m) {
  m.doc() = "pfhe: private inference of neural networks under RNS-CKKS (C++ core)";
  py::register_exception_translator([](std::exception_ptr p) {
    try {
      if (p) std::rethrow_exception(p);
    } catch (const ckks::SerializationError& e) {
      PyErr_SetString(PyExc_ValueError, e.what());  // a corrupt or foreign file: bad input
    } catch (const nn::OnnxImportError& e) {
      PyErr_SetString(PyExc_ValueError, e.what());  // an operator or shape pfhe cannot run
    }
  });

  py::class_<Model>(m, "Model", "A model graph (nn/graph.h), plaintext, with its fitted ranges")
      .def_property_readonly("input_shape", [](const Model& mo) { return shape_tuple(mo.graph.input_shape()); })
      .def_property_readonly("output_size", [](const Model& mo) { return mo.graph.output_shape().size(); })
      .def_property_readonly("nodes", [](const Model& mo) { return mo.graph.nodes().size(); })
      .def_property_readonly("fitted", [](const Model& mo) { return mo.ranges.has_value(); })
      .def("forward",
           [](const Model& mo, const Array& x) {
             return array_of(mo.graph.forward(tensors_of(x, mo.graph.input_shape(), false, "forward").front()));
           },
           "float64 reference output of one input", py::arg("x"))
      .def("fit", &fit_model, "measure every node's range on calibration inputs (B, C, H, W)", py::arg("inputs"))
      .def("compile", &compile_model,
           "compile at 128-bit security: the smallest ring holding the model's depth, or, for a model deeper "
           "than N = 2^16 holds (or with bootstrap=True), the bootstrapping chain with bootstraps placed; "
           "precision_bits: the scale from a precision target, measured on the first fit() inputs (instead of "
           "scale_bits; not for a model that bootstraps); bootstrap_levels: for a model that bootstraps, this many "
           "levels between bootstraps (0: the count with the least estimated latency; fewer give smaller keys "
           "for more bootstraps)",
           py::arg("scale_bits") = nn::kDefaultScaleBits, py::arg("precision_bits") = 0.0, py::arg("budget_gb") = 0.5,
           py::arg("bootstrap") = false, py::arg("bootstrap_levels") = 0, py::arg("progress") = true)
      .def("save", [](const Model& mo, const std::string& path) { nn::save_graph_file(mo.graph, path); },
           py::arg("path"));
  m.def("from_onnx", [](const std::string& path) { return Model{nn::import_onnx_file(path), std::nullopt, {}}; },
        "import an ONNX model (torch.onnx.export)", py::arg("path"));
  m.def("load_model", [](const std::string& path) { return Model{nn::load_graph_file(path), std::nullopt, {}}; },
        "a graph model file (.pfhm)", py::arg("path"));

  py::class_<Spec>(m, "Spec", "What a client needs: parameters and the client spec (nothing secret)")
      .def_static("load", &Spec::load, py::arg("dir"))
      .def("save", &Spec::save, py::arg("dir"))
      .def_property_readonly("input_shape", [](const Spec& s) { return shape_tuple(s.client.image_shape()); })
      .def_property_readonly("parameters", [](const Spec& s) { return s.params.describe(); })
      .def_property_readonly("scale_bits", [](const Spec& s) { return std::log2(s.params.default_scale()); })
      .def_property_readonly("rotation_keys", [](const Spec& s) { return s.client.rotation_levels.size(); });

  py::class_<Ciphertext>(m, "Ciphertext", "Encrypted values: a checksummed ciphertext file's bytes")
      .def_static("load", &Ciphertext::load, py::arg("path"))
      .def_static("from_bytes", &Ciphertext::from_bytes, py::arg("data"))
      .def("save", [](const Ciphertext& c, const std::string& path) { ckks::write_raw_file(path, c.bytes); },
           py::arg("path"))
      .def("to_bytes", [](const Ciphertext& c) {
        return py::bytes(reinterpret_cast<const char*>(c.bytes.data()), c.bytes.size());
      });

  py::class_<EvaluationKeys>(m, "EvaluationKeys", "A client's public evaluation keys (for the server)")
      .def_static("load", &EvaluationKeys::load, py::arg("path"), py::arg("spec"))
      .def("save", &EvaluationKeys::save, py::arg("path"))
      .def_property_readonly("key_set", [](const EvaluationKeys& k) { return k.keys->key_set; })
      .def_property_readonly("bytes", &EvaluationKeys::bytes);

  py::class_<Client>(m, "Client", "The client: holds the secret key, encrypts inputs and decrypts results")
      .def(py::init<const Spec&>(), py::arg("spec"))
      .def_static("load", &Client::load, py::arg("dir"))
      .def("save", &Client::save, py::arg("dir"))
      .def("encrypt", &Client::encrypt, py::arg("x"))
      .def("decrypt", &Client::decrypt, py::arg("ciphertext"))
      .def("evaluation_keys", &Client::evaluation_keys, py::arg("progress") = true)
      .def_property_readonly("spec", &Client::spec)
      .def_property_readonly("key_set", &Client::key_set);

  py::class_<CompiledModel>(m, "CompiledModel", "A compiled model graph: the server side")
      .def_static("load", &CompiledModel::load, py::arg("dir"))
      .def("save", &CompiledModel::save, py::arg("dir"))
      .def_property_readonly("spec", &CompiledModel::spec)
      .def_property_readonly("depth", [](const CompiledModel& c) { return c.graph().depth(); })
      .def_property_readonly("bootstraps", [](const CompiledModel& c) { return c.graph().bootstraps(); })
      .def_property_readonly("rotation_keys", [](const CompiledModel& c) { return c.graph().rotation_levels().size(); })
      .def_property_readonly("branch_tasks", &CompiledModel::branch_tasks)
      .def("run", &CompiledModel::run, py::arg("ciphertext"), py::arg("keys"), py::arg("executor") = "seq",
           py::arg("workers") = 1, py::arg("retries") = 0, py::arg("progress") = true);
}
