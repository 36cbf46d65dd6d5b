#include "nn/onnx_import.h"

#include <onnx/onnx_pb.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <map>
#include <optional>
#include <vector>

#include "nn/onnx_elementwise.h"

namespace pfhe::nn {

namespace {

using onnx_detail::ChannelPoly;
using onnx_detail::Coefficient;
using onnx_detail::Constant;

std::size_t element_count(const std::vector<std::int64_t>& dims) {
  std::size_t n = 1;
  for (const auto d : dims) {
    if (d < 0 || d > (std::int64_t{1} << 31)) throw OnnxImportError("tensor dimension out of range");
    n *= static_cast<std::size_t>(d);
    if (n > (std::size_t{1} << 31)) throw OnnxImportError("tensor too large");
  }
  return n;
}

// The bytes of a tensor kept in an external data file (ONNX's external data: "location"
// relative to the model's directory, optional "offset" and "length"). The location may not
// leave that directory; the length must be what the tensor's dimensions need.
std::string external_bytes(const onnx::TensorProto& t, const std::optional<std::filesystem::path>& dir,
                           std::size_t expected, const std::string& what) {
  if (!dir) throw OnnxImportError(what + ": weights in an external data file need the model's directory (import the file)");
  std::string location;
  std::uint64_t offset = 0, length = expected;
  for (const auto& entry : t.external_data()) {
    const auto number = [&](const std::string& v) {
      if (v.empty() || v.find_first_not_of("0123456789") != std::string::npos || v.size() > 18)
        throw OnnxImportError(what + ": external data " + entry.key() + " '" + v + "' is not a number");
      return std::stoull(v);
    };
    if (entry.key() == "location") location = entry.value();
    else if (entry.key() == "offset") offset = number(entry.value());
    else if (entry.key() == "length") length = number(entry.value());
  }
  const std::filesystem::path relative(location);
  if (location.empty() || relative.is_absolute() ||
      std::any_of(relative.begin(), relative.end(), [](const auto& part) { return part == ".."; }))
    throw OnnxImportError(what + ": external data location '" + location +
                          "' must be a file name inside the model's directory");
  if (length != expected)
    throw OnnxImportError(what + ": external data of " + std::to_string(length) + " bytes, its dimensions need " +
                          std::to_string(expected));
  const std::filesystem::path file = *dir / relative;
  std::ifstream in(file, std::ios::binary);
  std::error_code ec;
  const auto size = std::filesystem::file_size(file, ec);
  if (!in || ec || offset > size || size - offset < length)
    throw OnnxImportError(what + ": external data file " + file.string() + " is missing or shorter than " +
                          std::to_string(offset + length) + " bytes");
  std::string bytes(length, '\0');
  in.seekg(static_cast<std::streamoff>(offset));
  in.read(bytes.data(), static_cast<std::streamsize>(length));
  if (!in) throw OnnxImportError(what + ": cannot read " + file.string());
  return bytes;
}

Constant to_constant(const onnx::TensorProto& t, const std::string& what,
                     const std::optional<std::filesystem::path>& dir = std::nullopt) {
  if (t.data_location() == onnx::TensorProto_DataLocation_EXTERNAL) {
    const bool known = t.data_type() == onnx::TensorProto_DataType_FLOAT ||
                       t.data_type() == onnx::TensorProto_DataType_DOUBLE ||
                       t.data_type() == onnx::TensorProto_DataType_INT64;
    if (!known) throw OnnxImportError(what + ": only float, double and int64 tensors are read");
    const std::size_t width = t.data_type() == onnx::TensorProto_DataType_FLOAT ? 4 : 8;
    onnx::TensorProto inline_copy;
    *inline_copy.mutable_dims() = t.dims();
    inline_copy.set_data_type(t.data_type());
    inline_copy.set_raw_data(external_bytes(t, dir, element_count({t.dims().begin(), t.dims().end()}) * width, what));
    return to_constant(inline_copy, what);
  }
  Constant c{{t.dims().begin(), t.dims().end()}, {}};
  const std::size_t n = element_count(c.dims);
  const bool is_float = t.data_type() == onnx::TensorProto_DataType_FLOAT;
  const bool is_double = t.data_type() == onnx::TensorProto_DataType_DOUBLE;
  const bool is_int64 = t.data_type() == onnx::TensorProto_DataType_INT64;
  if (!is_float && !is_double && !is_int64) throw OnnxImportError(what + ": only float, double and int64 tensors are read");
  const std::size_t width = is_float ? 4 : 8;
  // The data present must match the dimensions before anything is allocated for them
  // (dimensions are only claims: a damaged file may name 2^31 elements).
  const std::size_t present = !t.raw_data().empty() ? t.raw_data().size() / width
                              : is_float              ? static_cast<std::size_t>(t.float_data_size())
                              : is_double             ? static_cast<std::size_t>(t.double_data_size())
                                                      : static_cast<std::size_t>(t.int64_data_size());
  if (present != n || (!t.raw_data().empty() && t.raw_data().size() != n * width))
    throw OnnxImportError(what + ": data does not match its dimensions");
  c.values.reserve(n);
  if (!t.raw_data().empty()) {
    for (std::size_t i = 0; i < n; ++i) {
      const char* p = t.raw_data().data() + i * width;
      if (is_float) {
        float v;
        std::memcpy(&v, p, 4);
        c.values.push_back(v);
      } else if (is_double) {
        double v;
        std::memcpy(&v, p, 8);
        c.values.push_back(v);
      } else {
        std::int64_t v;
        std::memcpy(&v, p, 8);
        c.values.push_back(static_cast<double>(v));
      }
    }
  } else if (is_float) {
    c.values.assign(t.float_data().begin(), t.float_data().end());
  } else if (is_double) {
    c.values.assign(t.double_data().begin(), t.double_data().end());
  } else {
    for (const auto v : t.int64_data()) c.values.push_back(static_cast<double>(v));
  }
  if (c.values.size() != n) throw OnnxImportError(what + ": data does not match its dimensions");
  return c;
}

const onnx::AttributeProto* attribute(const onnx::NodeProto& node, const std::string& name) {
  for (const auto& a : node.attribute())
    if (a.name() == name) return &a;
  return nullptr;
}

std::int64_t int_attribute(const onnx::NodeProto& node, const std::string& name, std::int64_t fallback) {
  const auto* a = attribute(node, name);
  return a ? a->i() : fallback;
}

double float_attribute(const onnx::NodeProto& node, const std::string& name, double fallback) {
  const auto* a = attribute(node, name);
  return a ? a->f() : fallback;
}

std::vector<std::int64_t> ints_attribute(const onnx::NodeProto& node, const std::string& name) {
  const auto* a = attribute(node, name);
  return a ? std::vector<std::int64_t>(a->ints().begin(), a->ints().end()) : std::vector<std::int64_t>{};
}

// All entries equal (a square kernel, equal strides or pads): that value; `fallback` when
// the attribute is absent.
std::size_t uniform(const std::vector<std::int64_t>& v, std::size_t fallback, const std::string& what) {
  if (v.empty()) return fallback;
  for (const auto x : v)
    if (x != v.front() || x < 0) throw OnnxImportError(what + " must be the same along every axis");
  return static_cast<std::size_t>(v.front());
}

// What to use instead of an operator pfhe does not evaluate.
std::string instead(const std::string& op) {
  if (op == "Relu" || op == "Sigmoid" || op == "Tanh" || op == "Gelu" || op == "Silu" || op == "LeakyRelu" ||
      op == "Elu" || op == "Softplus" || op == "HardSigmoid" || op == "HardSwish")
    return "use a polynomial activation (x*x, or a*x*x + b*x + c) in the model";
  if (op == "MaxPool" || op == "GlobalMaxPool") return "use average pooling";
  if (op == "Softmax" || op == "LogSoftmax") return "leave it out: take the logits and apply it after decryption";
  if (op == "Shape" || op == "Gather" || op == "Unsqueeze")
    return "flatten with torch.flatten(x, 1) or x.reshape(1, -1) (a fixed shape)";
  if (op == "Concat" || op == "Split" || op == "Slice")
    return "pfhe reads windows (patches, channels) and concatenations read by a convolution or linear layer";
  if (op == "Div") return "divide by a constant (a scalar or one per channel) only";
  return "pfhe imports Conv, BatchNormalization, Gemm, MatMul, Add, Sub, Mul, Pow, AveragePool, GlobalAveragePool, Flatten, Reshape to (1, -1)";
}

class Importer {
 public:
  Importer(const onnx::ModelProto& model, std::string what, std::optional<std::filesystem::path> dir)
      : model_(model), what_(std::move(what)), dir_(std::move(dir)) {}

  Graph run() {
    const auto& g = model_.graph();
    for (const auto& t : g.initializer())
      constants_[t.name()] = to_constant(t, what_ + ": initializer '" + t.name() + "'", dir_);
    const auto [shape, input] = input_shape(g);
    Graph graph(shape, input);
    values_[input] = 0;
    graph_ = &graph;
    for (int i = 0; i < g.node_size(); ++i) add_node(g.node(i), i);
    if (g.output_size() != 1) throw OnnxImportError(what_ + ": the model must have one output");
    if (const auto c = concats_.find(g.output(0).name()); c != concats_.end())
      throw OnnxImportError(what_ + ": node '" + c->second.name + "' (Concat): the output is a concatenation; only a "
                            "convolution or a linear layer may read one");
    if (crops_.count(g.output(0).name()) && !values_.count(g.output(0).name())) materialize_crop(g.output(0).name());
    if (polys_.count(g.output(0).name())) materialize(g.output(0).name());
    if (linears_.count(g.output(0).name())) materialize_linear(g.output(0).name());
    const auto out = values_.find(g.output(0).name());
    if (out == values_.end() || out->second != graph.output())
      throw OnnxImportError(what_ + ": the output '" + g.output(0).name() + "' is not the last value computed");
    return graph;
  }

 private:
  // The one input that is not an initializer (older exports list those as inputs too).
  std::pair<Shape, std::string> input_shape(const onnx::GraphProto& g) const {
    std::vector<const onnx::ValueInfoProto*> inputs;
    for (const auto& in : g.input())
      if (!constants_.count(in.name())) inputs.push_back(&in);
    if (inputs.size() != 1) throw OnnxImportError(what_ + ": the model must have exactly one input");
    const auto& shape = inputs.front()->type().tensor_type().shape();
    if (shape.dim_size() != 4)
      throw OnnxImportError(what_ + ": input '" + inputs.front()->name() + "' must be (batch, channels, height, width)");
    std::size_t d[4] = {1, 0, 0, 0};
    for (int k = 0; k < 4; ++k) {
      const auto& dim = shape.dim(k);
      if (dim.has_dim_value()) {
        if (dim.dim_value() <= 0 || dim.dim_value() > 65536) throw OnnxImportError(what_ + ": input dimension out of range");
        d[k] = static_cast<std::size_t>(dim.dim_value());
      } else if (k != 0) {
        throw OnnxImportError(what_ + ": input '" + inputs.front()->name() +
                              "' has a dynamic channel or spatial size; export with a fixed example input");
      }
    }
    if (d[0] != 1) throw OnnxImportError(what_ + ": the input's batch size must be 1 (or dynamic)");
    return {Shape{d[1], d[2], d[3]}, inputs.front()->name()};
  }

  std::string node_name(const onnx::NodeProto& node, int index) const {
    return node.name().empty() ? node.op_type() + "_" + std::to_string(index) : node.name();
  }

  // A computed value (graph node index), not a constant.
  std::optional<std::size_t> value(const std::string& name) const {
    const auto it = values_.find(name);
    return it == values_.end() ? std::nullopt : std::optional<std::size_t>(it->second);
  }

  const Constant& constant(const onnx::NodeProto& node, int input, const std::string& name) const {
    if (node.input_size() <= input) throw OnnxImportError(what_ + ": node '" + name + "' lacks input " + std::to_string(input));
    const auto it = constants_.find(node.input(input));
    if (it == constants_.end())
      throw OnnxImportError(what_ + ": node '" + name + "' (" + node.op_type() + "): input '" + node.input(input) +
                            "' must be a constant (an initializer)");
    return it->second;
  }

  std::size_t computed(const onnx::NodeProto& node, int input, const std::string& name) {
    if (node.input_size() > input && polys_.count(node.input(input))) return materialize(node.input(input));
    if (node.input_size() > input && linears_.count(node.input(input))) return materialize_linear(node.input(input));
    const auto v = node.input_size() > input ? value(node.input(input)) : std::nullopt;
    if (!v)
      throw OnnxImportError(what_ + ": node '" + name + "' (" + node.op_type() + "): input " + std::to_string(input) +
                            " must be a computed value");
    return *v;
  }

  void define(const onnx::NodeProto& node, std::size_t index) { values_[node.output(0)] = index; }

  void add(const onnx::NodeProto& node, const std::string& name, GraphOp op, std::vector<std::size_t> inputs) {
    try {
      define(node, graph_->add(name, std::move(op), std::move(inputs)));
    } catch (const std::invalid_argument& e) {
      throw OnnxImportError(what_ + ": node '" + name + "' (" + node.op_type() + "): " + e.what());
    }
  }

  // Element-wise arithmetic on one value (x*x, a*x*x + b*x + c, x - c, (x*x)*x, a BatchNorm,
  // per-channel scales and shifts, ...) is followed symbolically as a polynomial of that
  // value and becomes one graph node only when something else reads it: a whole chain
  // costs the levels of one polynomial, and torch's HerPN (BatchNorms of 1, x and
  // (x*x - 1)/sqrt 2, summed, scaled and shifted per channel) one per-channel quadratic.
  struct Poly {
    std::size_t base = 0;                 // the graph value it is a polynomial of
    ChannelPoly p;
    std::string name;                     // the ONNX node that produced it last
    std::optional<BatchNorm> batch_norm;  // when it is exactly one BatchNorm of base
  };
  static constexpr std::size_t kMaxDegree = 31;

  // Input i as a polynomial: a pending one, or a computed value x (a pending linear layer
  // made a node).
  std::optional<Poly> poly_of(const onnx::NodeProto& node, int input) {
    if (const auto p = polys_.find(node.input(input)); p != polys_.end()) return p->second;
    if (linears_.count(node.input(input))) materialize_linear(node.input(input));
    if (const auto v = value(node.input(input))) return Poly{*v, ChannelPoly::identity(), "", std::nullopt};
    return std::nullopt;
  }

  // A constant input (nullptr for a value).
  const Constant* constant_input(const onnx::NodeProto& node, int input) const {
    const auto c = constants_.find(node.input(input));
    if (c == constants_.end() || value(node.input(input)) || polys_.count(node.input(input))) return nullptr;
    return &c->second;
  }

  // The value's shape as ONNX sees it: (1, F) after a Flatten or a linear layer (and
  // element-wise steps of those), else (1, C, H, W).
  std::vector<std::size_t> onnx_dims(std::size_t index) const {
    const auto& nodes = graph_->nodes();
    std::size_t n = index;
    while (std::holds_alternative<BatchNorm>(nodes[n].op) || std::holds_alternative<Scale>(nodes[n].op) ||
           std::holds_alternative<Quadratic>(nodes[n].op) || std::holds_alternative<PolynomialActivation>(nodes[n].op) ||
           std::holds_alternative<Add>(nodes[n].op))
      n = nodes[n].inputs.front();
    const Shape& s = nodes[index].shape;
    if (std::holds_alternative<Flatten>(nodes[n].op) || std::holds_alternative<Linear>(nodes[n].op))
      return {1, s.channels};
    return {1, s.channels, s.height, s.width};
  }

  // Constant k as per-channel coefficients of a polynomial of `base`.
  Coefficient per_channel(const Constant& k, std::size_t base, const std::string& where) const {
    try {
      return onnx_detail::per_channel(k, onnx_dims(base));
    } catch (const std::invalid_argument& e) {
      throw OnnxImportError(where + ": " + e.what());
    }
  }

  void define_poly(const onnx::NodeProto& node, const std::string& name, Poly p) {
    if (p.p.degree() > kMaxDegree)
      throw OnnxImportError(what_ + ": node '" + name + "' (" + node.op_type() + "): a polynomial of degree " +
                            std::to_string(p.p.degree()) + " (at most " + std::to_string(kMaxDegree) + ")");
    p.name = name;
    polys_[node.output(0)] = std::move(p);
  }

  // The graph node of a pending polynomial: the value itself, a Scale, a polynomial
  // activation, or with per-channel coefficients a BatchNorm (degree 1) or a Quadratic.
  std::size_t materialize(const std::string& value_name) {
    const Poly p = polys_.at(value_name);
    polys_.erase(value_name);
    const auto& c = p.p.coeffs;
    const std::size_t channels = graph_->nodes()[p.base].shape.channels;
    std::size_t index = p.base;
    try {
      if (p.p.degree() == 0) throw std::invalid_argument("the value is a constant");
      if (p.batch_norm) {
        index = graph_->add(p.name, *p.batch_norm, {p.base});
      } else if (p.p.uniform() && p.p.degree() == 1 && c[0][0] == 0.0) {
        index = c[1][0] == 1.0 ? p.base : graph_->add(p.name, Scale{c[1][0]}, {p.base});
      } else if (p.p.uniform()) {
        std::vector<double> power;
        for (const Coefficient& k : c) power.push_back(k[0]);
        index = graph_->add(p.name, PolynomialActivation{power}, {p.base});
      } else if (p.p.degree() == 1) {
        const double eps = 1e-5;  // var = 1 - eps: the BatchNorm is w1 x + w0
        index = graph_->add(p.name,
                            BatchNorm{std::vector<double>(channels, 0.0), std::vector<double>(channels, 1.0 - eps),
                                      p.p.expanded(1, channels), p.p.expanded(0, channels), eps},
                            {p.base});
      } else if (p.p.degree() == 2) {
        index = graph_->add(p.name, Quadratic{p.p.expanded(2, channels), p.p.expanded(1, channels), p.p.expanded(0, channels)},
                            {p.base});
      } else {
        throw std::invalid_argument("a polynomial of degree " + std::to_string(p.p.degree()) +
                                    " with per-channel coefficients (at most 2: a per-channel quadratic such as a "
                                    "HerPN; a polynomial activation of any degree must be the same for every channel)");
      }
    } catch (const std::invalid_argument& e) {
      throw OnnxImportError(what_ + ": node '" + p.name + "': " + e.what());
    }
    values_[value_name] = index;
    return index;
  }

  // MatMul by a constant matrix is a linear layer waiting for the bias an Add may give it
  // (torch writes x @ W + b as MatMul then Add): one Linear node, made when read.
  struct PendingLinear {
    std::size_t input = 0;
    Linear linear;
    std::string name;
  };

  std::size_t materialize_linear(const std::string& value_name) {
    const PendingLinear p = linears_.at(value_name);
    linears_.erase(value_name);
    std::size_t index = 0;
    try {
      index = graph_->add(p.name, p.linear, {p.input});
    } catch (const std::invalid_argument& e) {
      throw OnnxImportError(what_ + ": node '" + p.name + "' (MatMul): " + e.what());
    }
    values_[value_name] = index;
    return index;
  }

  void matmul(const onnx::NodeProto& node, const std::string& name, const std::string& where) {
    const Constant& w = constant(node, 1, name);
    if (w.dims.size() != 2) throw OnnxImportError(where + ": only a product by a constant 2-D matrix is supported");
    const auto in = static_cast<std::size_t>(w.dims[0]), out = static_cast<std::size_t>(w.dims[1]);
    Linear linear{in, out, std::vector<double>(in * out), {}};
    for (std::size_t i = 0; i < in; ++i)
      for (std::size_t o = 0; o < out; ++o) linear.weight[o * in + i] = w.values[i * out + o];
    linears_[node.output(0)] = {computed(node, 0, name), std::move(linear), name};
  }

  // x @ W + b (or - b): the bias joins the pending linear layer. False when the Add is not that.
  bool bias_of_pending_linear(const onnx::NodeProto& node, const std::string& name, double sign) {
    for (const int side : {0, 1}) {
      const auto pending = linears_.find(node.input(side));
      const auto bias = constants_.find(node.input(1 - side));
      if (pending == linears_.end() || bias == constants_.end() || value(node.input(1 - side)) ||
          (sign < 0 && side == 1) || !pending->second.linear.bias.empty() ||
          bias->second.size() != pending->second.linear.out_features)
        continue;
      PendingLinear p = pending->second;
      p.linear.bias = bias->second.values;
      for (double& b : p.linear.bias) b *= sign;
      p.name = name;
      linears_[node.output(0)] = std::move(p);
      return true;
    }
    return false;
  }

  // Add, Sub, Mul, Div: of two constants (a constant); of a polynomial of a value and a
  // scalar or per-channel constant, or of two polynomials of one value (one polynomial;
  // not Div); Add and Sub of two different values (a residual join).
  void elementwise(const onnx::NodeProto& node, const std::string& name, const std::string& where,
                   const std::string& op) {
    const double sign = op == "Sub" ? -1.0 : 1.0;
    if ((op == "Add" || op == "Sub") && bias_of_pending_linear(node, name, sign)) return;
    const Constant *k0 = constant_input(node, 0), *k1 = constant_input(node, 1);
    const auto p0 = poly_of(node, 0), p1 = poly_of(node, 1);
    if ((!k0 && !p0) || (!k1 && !p1)) throw OnnxImportError(where + ": an input is neither a value nor a constant");
    const auto apply = [&](double a, double b) {
      return op == "Add" ? a + b : op == "Sub" ? a - b : op == "Mul" ? a * b : a / b;
    };
    try {
      if (k0 && k1) {
        constants_[node.output(0)] = onnx_detail::broadcast(*k0, *k1, apply);
      } else if (op == "Div") {
        if (!k1) throw OnnxImportError(where + ": division by a value is not supported; " + instead(op));
        Coefficient k = per_channel(*k1, p0->base, where);
        for (double& v : k) {
          if (v == 0.0) throw OnnxImportError(where + ": division by zero");
          v = 1.0 / v;
        }
        define_poly(node, name, Poly{p0->base, p0->p.times(k), "", std::nullopt});
      } else if (k0 || k1) {
        const Poly& x = k0 ? *p1 : *p0;
        Coefficient k = per_channel(k0 ? *k0 : *k1, x.base, where);
        if (op == "Mul") return define_poly(node, name, Poly{x.base, x.p.times(k), "", std::nullopt});
        if (k1) for (double& v : k) v *= sign;  // x + k, x - k; k - x is -x + k
        const ChannelPoly y = k0 && sign < 0 ? x.p.times(Coefficient{-1.0}) : x.p;
        define_poly(node, name, Poly{x.base, y.plus(k), "", std::nullopt});
      } else if (p0->base == p1->base) {
        define_poly(node, name,
                    Poly{p0->base, op == "Mul" ? p0->p.times(p1->p) : p0->p.plus(p1->p, sign), "", std::nullopt});
      } else if (op == "Mul") {
        throw OnnxImportError(where + ": a product of two different values is not supported (only a value times "
                                      "itself or a constant)");
      } else if (sign > 0) {
        add(node, name, Add{}, {computed(node, 0, name), computed(node, 1, name)});
      } else {
        // a - b of two values: a + (-1) b, the negation folded into b's multiplier.
        const std::size_t b = computed(node, 1, name);
        add(node, name, Add{}, {computed(node, 0, name), graph_->add(name + ".negate", Scale{-1.0}, {b})});
      }
    } catch (const std::invalid_argument& e) {
      throw OnnxImportError(where + ": " + e.what());
    }
  }

  // BatchNormalization: of a constant, a constant; of a value, a per-channel affine
  // polynomial of it (one BatchNorm node when nothing else joins it).
  void batch_normalization(const onnx::NodeProto& node, const std::string& name, const std::string& where) {
    BatchNorm bn{constant(node, 3, name).values, constant(node, 4, name).values, constant(node, 1, name).values,
                 constant(node, 2, name).values, float_attribute(node, "epsilon", 1e-5)};
    try {
      if (const Constant* k = constant_input(node, 0)) {
        constants_[node.output(0)] = onnx_detail::batch_norm_of(*k, bn);
        return;
      }
      const auto x = poly_of(node, 0);
      if (!x) throw OnnxImportError(where + ": input 0 is neither a value nor a constant");
      const std::size_t channels = graph_->nodes()[x->base].shape.channels;
      if (bn.channels() != channels)
        throw OnnxImportError(where + ": a BatchNorm over " + std::to_string(bn.channels()) + " channels of a value with " +
                              std::to_string(channels));
      std::vector<double> scale, shift;
      bn.affine_form(scale, shift);
      Poly y{x->base, x->p.times(scale).plus(shift), "", std::nullopt};
      if (!polys_.count(node.input(0))) y.batch_norm = std::move(bn);
      define_poly(node, name, std::move(y));
    } catch (const std::invalid_argument& e) {
      throw OnnxImportError(where + ": " + e.what());
    }
  }

  void add_node(const onnx::NodeProto& node, int index) {
    const std::string name = node_name(node, index), op = node.op_type();
    const std::string where = what_ + ": node '" + name + "' (" + op + ")";
    for (const std::string& input : node.input()) {
      // A window read by anything but another Slice becomes a Crop node; a concatenation
      // is read only by the linear layer its weight is split for.
      if (crops_.count(input) && !values_.count(input) && op != "Slice" && op != "Split" && op != "Conv")
        materialize_crop(input);
      if (const auto c = concats_.find(input); c != concats_.end() && op != (c->second.spatial ? "Conv" : "Gemm"))
        throw OnnxImportError(what_ + ": node '" + c->second.name + "' (Concat): only " +
                              (c->second.spatial ? "a convolution" : "a linear layer (Gemm)") +
                              " may read a concatenation (its weight is split over the parts), not '" + name + "' (" +
                              op + ")");
    }
    // Every operator read here has at least one output; binary ones need both inputs.
    if (node.output_size() < 1) throw OnnxImportError(where + ": the node has no output");
    const bool binary = op == "Add" || op == "Sub" || op == "Mul" || op == "Div" || op == "MatMul" || op == "Pow" ||
                        op == "Pad" || op == "Reshape";
    if (node.input_size() < (op == "Constant" ? 0 : binary ? 2 : 1))
      throw OnnxImportError(where + ": the node lacks inputs");
    if (op == "Constant") {
      const auto* a = attribute(node, "value");
      if (!a || !a->has_t()) throw OnnxImportError(where + ": only tensor constants are read");
      constants_[node.output(0)] = to_constant(a->t(), where, dir_);
    } else if (op == "Identity" || op == "Dropout") {
      // An export under torch.no_grad() copies weights through Identity nodes: an alias
      // of the constant then.
      if (const auto c = constants_.find(node.input(0)); c != constants_.end() && !value(node.input(0)))
        constants_[node.output(0)] = c->second;
      else
        define(node, computed(node, 0, name));
    } else if (op == "Pad") {
      // torch writes a Pad of zeros before every average pooling: the identity.
      const Constant& pads = constant(node, 1, name);
      for (const double p : pads.values)
        if (p != 0) throw OnnxImportError(where + ": padding is only supported inside Conv (its pads)");
      define(node, computed(node, 0, name));
    } else if (op == "Conv") {
      const Constant& w = constant(node, 1, name);
      if (w.dims.size() != 4 || w.dims[2] != w.dims[3]) throw OnnxImportError(where + ": the kernel must be square 2-D");
      if (int_attribute(node, "group", 1) != 1) throw OnnxImportError(where + ": grouped convolutions are not supported");
      if (uniform(ints_attribute(node, "dilations"), 1, where + ": dilations") != 1)
        throw OnnxImportError(where + ": dilated convolutions are not supported");
      Conv2d conv{static_cast<std::size_t>(w.dims[1]), static_cast<std::size_t>(w.dims[0]),
                  static_cast<std::size_t>(w.dims[2]), uniform(ints_attribute(node, "strides"), 1, where + ": strides"),
                  uniform(ints_attribute(node, "pads"), 0, where + ": pads"), w.values, {}};
      if (node.input_size() > 2 && !node.input(2).empty()) conv.bias = constant(node, 2, name).values;
      const std::string& x = node.input(0);
      if (concats_.count(x)) return conv_over_parts(node, name, std::move(conv));
      if (crops_.count(x) && !values_.count(x) && !crops_.at(x).all_channels(*graph_)) {
        auto [wide, input] = conv_over_channel_window(std::move(conv), x, where);
        return add(node, name, std::move(wide), {input});
      }
      if (crops_.count(x) && !values_.count(x)) materialize_crop(x);
      add(node, name, std::move(conv), {computed(node, 0, name)});
    } else if (op == "BatchNormalization") {
      batch_normalization(node, name, where);
    } else if (op == "Slice") {
      slice(node, name, where);
    } else if (op == "Split") {
      split(node, name, where);
    } else if (op == "Concat") {
      concat(node, name, where);
    } else if (op == "Gemm") {
      if (int_attribute(node, "transA", 0) != 0 || int_attribute(node, "transB", 0) != 1 ||
          float_attribute(node, "alpha", 1) != 1 || float_attribute(node, "beta", 1) != 1)
        throw OnnxImportError(where + ": only a torch Linear (transB = 1, alpha = beta = 1) is supported");
      const Constant& w = constant(node, 1, name);
      if (w.dims.size() != 2) throw OnnxImportError(where + ": the weight must be 2-D");
      Linear linear{static_cast<std::size_t>(w.dims[1]), static_cast<std::size_t>(w.dims[0]), w.values, {}};
      if (node.input_size() > 2 && !node.input(2).empty()) linear.bias = constant(node, 2, name).values;
      if (concats_.count(node.input(0))) return linear_over_parts(node, name, std::move(linear));
      add(node, name, std::move(linear), {computed(node, 0, name)});
    } else if (op == "Add" || op == "Sub" || op == "Mul" || op == "Div") {
      elementwise(node, name, where, op);
    } else if (op == "MatMul") {
      matmul(node, name, where);
    } else if (op == "Pow") {
      const Constant& e = constant(node, 1, name);
      const auto base = poly_of(node, 0);
      if (!base) throw OnnxImportError(where + ": the base must be a computed value");
      if (e.size() != 1 || e.values[0] != std::floor(e.values[0]) || e.values[0] < 1 || e.values[0] > 8)
        throw OnnxImportError(where + ": only integer exponents 1 to 8 are supported");
      Poly p{base->base, base->p, "", std::nullopt};
      for (int k = 1; k < static_cast<int>(e.values[0]); ++k) p.p = p.p.times(base->p);
      define_poly(node, name, std::move(p));
    } else if (op == "AveragePool") {
      if (uniform(ints_attribute(node, "pads"), 0, where + ": pads") != 0)
        throw OnnxImportError(where + ": padded average pooling is not supported");
      const std::size_t kernel = uniform(ints_attribute(node, "kernel_shape"), 0, where + ": kernel_shape");
      add(node, name, AvgPool2d{kernel, uniform(ints_attribute(node, "strides"), 1, where + ": strides")},
          {computed(node, 0, name)});
    } else if (op == "GlobalAveragePool") {
      add(node, name, AdaptiveAvgPool2d{1}, {computed(node, 0, name)});
    } else if (op == "Reshape") {
      // To (1, -1), (1, n), (-1) or (n): a flattening, as torch writes x.reshape(1, -1).
      const Constant& to = constant(node, 1, name);
      const std::size_t x = computed(node, 0, name), n = graph_->nodes()[x].shape.size();
      const bool flat = (to.size() == 2 && to.values[0] == 1 && (to.values[1] == -1 || to.values[1] == double(n))) ||
                        (to.size() == 1 && (to.values[0] == -1 || to.values[0] == double(n)));
      if (!flat) throw OnnxImportError(where + ": only a reshape to a flat vector (1, -1) is supported");
      add(node, name, Flatten{}, {x});
    } else if (op == "Flatten") {
      if (int_attribute(node, "axis", 1) != 1) throw OnnxImportError(where + ": only Flatten with axis 1 is supported");
      add(node, name, Flatten{}, {computed(node, 0, name)});
    } else {
      throw OnnxImportError(where + ": not supported; " + instead(op));
    }
  }

  // x[:, c0:c1, a:b, c:d] (torch writes one Slice per axis; torch.split writes Split): a
  // window of a value, followed symbolically (they compose) and made one Crop node when
  // something else reads it, so that the patches of a PatchCNN written in torch are crops
  // of the input. A window of some channels is read only by a convolution, which then
  // reads every channel with zero weights on the others.
  struct PendingCrop {
    std::size_t source = 0;
    Crop crop;
    std::size_t first_channel = 0, channels = 0;
    std::string name, op;  // the ONNX node that made it last
    bool all_channels(const Graph& g) const { return first_channel == 0 && channels == g.nodes()[source].shape.channels; }
  };

  PendingCrop crop_of(const onnx::NodeProto& node, const std::string& name) {
    if (const auto c = crops_.find(node.input(0)); c != crops_.end()) return c->second;
    PendingCrop p;
    p.source = computed(node, 0, name);
    const Shape& s = graph_->nodes()[p.source].shape;
    p.crop = Crop{0, 0, s.height, s.width};
    p.channels = s.channels;
    return p;
  }

  // p narrowed to [start, start + size) along ONNX axis 1 (channels), 2 or 3.
  void narrow(PendingCrop& p, std::int64_t axis, std::size_t start, std::size_t size, const std::string& where) const {
    if (size == 0) throw OnnxImportError(where + ": an empty slice");
    if (axis == 1) p.first_channel += start, p.channels = size;
    if (axis == 2) p.crop.top += start, p.crop.height = size;
    if (axis == 3) p.crop.left += start, p.crop.width = size;
  }

  std::size_t extent(const PendingCrop& p, std::int64_t axis) const {
    return axis == 0 ? 1 : axis == 1 ? p.channels : axis == 2 ? p.crop.height : p.crop.width;
  }

  void slice(const onnx::NodeProto& node, const std::string& name, const std::string& where) {
    PendingCrop p = crop_of(node, name);
    if (node.input_size() < 3) throw OnnxImportError(where + ": starts and ends must be inputs (opset 10 or later)");
    const Constant &starts = constant(node, 1, name), &ends = constant(node, 2, name);
    std::vector<double> axes(starts.size()), steps(starts.size(), 1.0);
    for (std::size_t k = 0; k < axes.size(); ++k) axes[k] = static_cast<double>(k);
    if (node.input_size() > 3 && !node.input(3).empty()) axes = constant(node, 3, name).values;
    if (node.input_size() > 4 && !node.input(4).empty()) steps = constant(node, 4, name).values;
    if (ends.size() != starts.size() || axes.size() != starts.size() || steps.size() != starts.size())
      throw OnnxImportError(where + ": starts, ends, axes and steps differ in length");
    for (std::size_t k = 0; k < axes.size(); ++k) {
      const double axis = axes[k] < 0 ? axes[k] + 4 : axes[k];
      if (steps[k] != 1 || axis < 0 || axis > 3)
        throw OnnxImportError(where + ": only slices with step 1 along the 4 axes are supported");
      const auto a = static_cast<std::int64_t>(axis);
      const double dim = static_cast<double>(extent(p, a));
      const auto clamp = [&](double v) { return std::clamp(v < 0 ? v + dim : v, 0.0, dim); };
      const double start = clamp(starts.values[k]), end = clamp(ends.values[k]);
      if (a == 0 && (start != 0 || end != dim)) throw OnnxImportError(where + ": a slice of the batch");
      if (end <= start) throw OnnxImportError(where + ": an empty slice");
      if (a > 0) narrow(p, a, static_cast<std::size_t>(start), static_cast<std::size_t>(end - start), where);
    }
    p.name = name;
    p.op = "Slice";
    crops_[node.output(0)] = std::move(p);
  }

  // torch.split / chunk: consecutive windows along one axis (channels, height or width).
  void split(const onnx::NodeProto& node, const std::string& name, const std::string& where) {
    const PendingCrop whole = crop_of(node, name);
    std::int64_t axis = int_attribute(node, "axis", 0);
    if (axis < 0) axis += 4;
    if (axis < 1 || axis > 3) throw OnnxImportError(where + ": only splits of the channels, height or width are supported");
    std::vector<double> sizes;
    if (node.input_size() > 1 && !node.input(1).empty()) sizes = constant(node, 1, name).values;  // opset 13
    for (const auto v : ints_attribute(node, "split")) sizes.push_back(static_cast<double>(v));   // before 13
    const std::size_t n = extent(whole, axis), parts = static_cast<std::size_t>(node.output_size());
    if (sizes.empty()) {
      if (parts == 0 || n % parts != 0) throw OnnxImportError(where + ": the axis does not split into equal parts");
      sizes.assign(parts, static_cast<double>(n / parts));
    }
    if (sizes.size() != parts) throw OnnxImportError(where + ": split sizes and outputs differ in number");
    std::size_t start = 0;
    for (std::size_t k = 0; k < parts; ++k) {
      if (sizes[k] < 1 || sizes[k] != std::floor(sizes[k]) || start + static_cast<std::size_t>(sizes[k]) > n)
        throw OnnxImportError(where + ": split sizes do not fit the axis");
      PendingCrop p = whole;
      narrow(p, axis, start, static_cast<std::size_t>(sizes[k]), where);
      start += static_cast<std::size_t>(sizes[k]);
      p.name = name + "." + std::to_string(k);
      p.op = "Split";
      crops_[node.output(static_cast<int>(k))] = std::move(p);
    }
    if (start != n) throw OnnxImportError(where + ": split sizes do not cover the axis");
  }

  std::size_t materialize_crop(const std::string& value_name) {
    const PendingCrop& p = crops_.at(value_name);
    if (!p.all_channels(*graph_))
      throw OnnxImportError(what_ + ": node '" + p.name + "' (" + p.op + "): a window of some channels is read only by "
                            "a convolution (which then reads all channels, zero weights on the others)");
    return materialize_window(value_name);
  }

  // The Crop node of a pending window's height and width (its channel range aside).
  std::size_t materialize_window(const std::string& value_name) {
    const PendingCrop& p = crops_.at(value_name);
    const Shape& s = graph_->nodes()[p.source].shape;
    std::size_t index = p.source;
    if (p.crop.top != 0 || p.crop.left != 0 || p.crop.height != s.height || p.crop.width != s.width) {
      try {
        index = graph_->add(p.name, p.crop, {p.source});
      } catch (const std::invalid_argument& e) {
        throw OnnxImportError(what_ + ": node '" + p.name + "' (" + p.op + "): " + e.what());
      }
    }
    if (p.all_channels(*graph_)) values_[value_name] = index;
    return index;
  }

  // A convolution reading a window of some channels: the same convolution over all the
  // source's channels, zero weights on the channels outside the window.
  std::pair<Conv2d, std::size_t> conv_over_channel_window(Conv2d conv, const std::string& value_name,
                                                         const std::string& where) {
    const PendingCrop p = crops_.at(value_name);
    const std::size_t input = materialize_window(value_name), all = graph_->nodes()[input].shape.channels;
    if (conv.in_channels != p.channels)
      throw OnnxImportError(where + ": the kernel reads " + std::to_string(conv.in_channels) + " channels, the window has " +
                            std::to_string(p.channels));
    const std::size_t k2 = conv.kernel * conv.kernel;
    std::vector<double> weight(conv.out_channels * all * k2, 0.0);
    for (std::size_t o = 0; o < conv.out_channels; ++o)
      for (std::size_t i = 0; i < p.channels; ++i)
        std::copy_n(conv.weight.begin() + static_cast<std::ptrdiff_t>((o * p.channels + i) * k2), k2,
                    weight.begin() + static_cast<std::ptrdiff_t>((o * all + p.first_channel + i) * k2));
    conv.in_channels = all;
    conv.weight = std::move(weight);
    return {std::move(conv), input};
  }

  // torch.cat(features, 1) of flat vectors read by a linear layer (a PatchCNN's head over
  // its patches' features): the layer becomes one Linear per part, with that part's
  // columns of the weight and an equal share of the bias (so the parts' branches keep the
  // same structure and share lanes), summed. torch.cat(maps, 1) of feature maps of one
  // height and width read by a convolution: one convolution per part over its channels'
  // weights (the bias with the first), summed.
  struct PendingConcat {
    std::vector<std::size_t> parts;
    std::string name;
    bool spatial = false;  // feature maps along the channels (else flat vectors)
  };

  void concat(const onnx::NodeProto& node, const std::string& name, const std::string& where) {
    const std::int64_t axis = int_attribute(node, "axis", 0);
    PendingConcat c{{}, name, false};
    for (int k = 0; k < node.input_size(); ++k) {
      c.parts.push_back(computed(node, k, name));
      const Shape& s = graph_->nodes()[c.parts.back()].shape;
      const Shape& first = graph_->nodes()[c.parts.front()].shape;
      c.spatial = c.spatial || s.height != 1 || s.width != 1;
      if ((axis != 1 && axis != -3 && axis != -1) || s.height != first.height || s.width != first.width ||
          (axis == -1 && c.spatial))
        throw OnnxImportError(where + ": only a concatenation along the channels (or of flat feature vectors) is "
                                      "supported, read by a convolution (or a linear layer)");
    }
    if (c.parts.empty()) throw OnnxImportError(where + ": nothing to concatenate");
    concats_[node.output(0)] = std::move(c);
  }

  // Term k of a layer split over a concatenation's parts, `part` reading `input`, added
  // to the sum of the terms before it (`sum`, unused for k = 0); the new sum's node.
  std::size_t add_term(const std::string& name, const char* op, std::size_t k, GraphOp part, std::size_t input,
                       std::size_t sum) {
    try {
      const std::size_t term = graph_->add(name + "." + std::to_string(k), std::move(part), {input});
      return k == 0 ? term : graph_->add(name + ".sum." + std::to_string(k), Add{}, {sum, term});
    } catch (const std::invalid_argument& e) {
      throw OnnxImportError(what_ + ": node '" + name + "' (" + op + "): " + e.what());
    }
  }

  void conv_over_parts(const onnx::NodeProto& node, const std::string& name, const Conv2d& whole) {
    const PendingConcat c = concats_.at(node.input(0));
    if (!c.spatial) throw OnnxImportError(what_ + ": node '" + name + "' (Conv): it reads flat features '" + c.name + "'");
    const std::size_t k2 = whole.kernel * whole.kernel;
    std::size_t offset = 0, sum = 0;
    for (std::size_t k = 0; k < c.parts.size(); ++k) {
      const std::size_t in = graph_->nodes()[c.parts[k]].shape.channels;
      if (offset + in > whole.in_channels)
        throw OnnxImportError(what_ + ": node '" + name + "' (Conv): its kernel reads fewer channels than '" + c.name +
                              "' has");
      Conv2d part{in, whole.out_channels, whole.kernel, whole.stride, whole.padding,
                  std::vector<double>(whole.out_channels * in * k2), k == 0 ? whole.bias : std::vector<double>{}};
      for (std::size_t o = 0; o < whole.out_channels; ++o)
        std::copy_n(whole.weight.begin() + static_cast<std::ptrdiff_t>((o * whole.in_channels + offset) * k2), in * k2,
                    part.weight.begin() + static_cast<std::ptrdiff_t>(o * in * k2));
      offset += in;
      sum = add_term(name, "Conv", k, std::move(part), c.parts[k], sum);
    }
    if (offset != whole.in_channels)
      throw OnnxImportError(what_ + ": node '" + name + "' (Conv): its kernel reads " +
                            std::to_string(whole.in_channels) + " channels, '" + c.name + "' has " +
                            std::to_string(offset));
    define(node, sum);
  }

  void linear_over_parts(const onnx::NodeProto& node, const std::string& name, Linear whole) {
    const PendingConcat c = concats_.at(node.input(0));
    if (c.spatial)
      throw OnnxImportError(what_ + ": node '" + name + "' (Gemm): it reads feature maps '" + c.name + "' (flatten first)");
    std::size_t offset = 0, sum = 0;
    for (std::size_t k = 0; k < c.parts.size(); ++k) {
      const std::size_t in = graph_->nodes()[c.parts[k]].shape.size();
      if (offset + in > whole.in_features)
        throw OnnxImportError(what_ + ": node '" + name + "' (Gemm): its weight has fewer columns than the " +
                              "concatenation '" + c.name + "' has features");
      Linear part{in, whole.out_features, std::vector<double>(in * whole.out_features), {}};
      for (std::size_t o = 0; o < whole.out_features; ++o)
        std::copy_n(whole.weight.begin() + static_cast<std::ptrdiff_t>(o * whole.in_features + offset), in,
                    part.weight.begin() + static_cast<std::ptrdiff_t>(o * in));
      if (!whole.bias.empty()) {
        part.bias = whole.bias;
        for (double& b : part.bias) b /= static_cast<double>(c.parts.size());
      }
      offset += in;
      sum = add_term(name, "Gemm", k, std::move(part), c.parts[k], sum);
    }
    if (offset != whole.in_features)
      throw OnnxImportError(what_ + ": node '" + name + "' (Gemm): its weight has " +
                            std::to_string(whole.in_features) + " columns, the concatenation '" + c.name + "' " +
                            std::to_string(offset) + " features");
    define(node, sum);
  }

  const onnx::ModelProto& model_;
  std::string what_;
  std::optional<std::filesystem::path> dir_;  // of the model file: where external data lives
  std::map<std::string, Constant> constants_;
  std::map<std::string, std::size_t> values_;
  std::map<std::string, Poly> polys_;  // values that are pending polynomials
  std::map<std::string, PendingLinear> linears_;  // MatMul outputs that may still get a bias
  std::map<std::string, PendingCrop> crops_;      // Slice outputs (kept after a Crop node is made)
  std::map<std::string, PendingConcat> concats_;  // Concat outputs, for the Gemm reading them
  Graph* graph_ = nullptr;
};

}  // namespace

namespace {
Graph import_model(std::span<const std::uint8_t> bytes, const std::string& what,
                   std::optional<std::filesystem::path> dir) {
  onnx::ModelProto model;
  if (bytes.size() > static_cast<std::size_t>(INT32_MAX) ||
      !model.ParseFromArray(bytes.data(), static_cast<int>(bytes.size())))
    throw OnnxImportError(what + ": not an ONNX model (protobuf parse failed)");
  if (!model.has_graph() || model.graph().input_size() == 0) throw OnnxImportError(what + ": the model has no graph input");
  return Importer(model, what, std::move(dir)).run();
}
}  // namespace

Graph import_onnx(std::span<const std::uint8_t> bytes, const std::string& what) {
  return import_model(bytes, what, std::nullopt);
}

Graph import_onnx_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw OnnxImportError(path + ": cannot open");
  const std::vector<char> raw((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  return import_model({reinterpret_cast<const std::uint8_t*>(raw.data()), raw.size()}, path,
                      std::filesystem::absolute(path).parent_path());
}

}  // namespace pfhe::nn
