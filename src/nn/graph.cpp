#include "nn/graph.h"

#include <cmath>
#include <stdexcept>

#include "nn/overloaded.h"

namespace pfhe::nn {

namespace {

std::size_t expected_inputs(const GraphOp& op) {
  if (std::holds_alternative<GraphInput>(op)) return 0;
  if (std::holds_alternative<Add>(op)) return 2;
  return 1;
}

// Output shape of `op` on inputs of the given shapes; validates the layer.
Shape infer_shape(const GraphOp& op, const std::vector<Shape>& in) {
  return std::visit(
      Overloaded{
          [&](const GraphInput&) -> Shape { throw std::invalid_argument("only node 0 is the model input"); },
          [&](const Conv2d& c) { return c.validate(), c.output_shape(in[0]); },
          [&](const BatchNorm& bn) {
            bn.validate();  // per channel of (C, H, W), per feature of a flattened (F, 1, 1)
            if (in[0].channels != bn.channels())
              throw std::invalid_argument("BatchNorm over " + std::to_string(bn.channels()) + " channels, input " +
                                          in[0].str());
            return in[0];
          },
          [&](const AvgPool2d& p) { return p.output_shape(in[0]); },
          [&](const AdaptiveAvgPool2d& p) { return p.output_shape(in[0]); },
          [&](const Flatten&) { return Shape{in[0].size(), 1, 1}; },
          [&](const Linear& l) {
            l.validate();
            if (!(in[0] == Shape{l.in_features, 1, 1}))
              throw std::invalid_argument("Linear expects (" + std::to_string(l.in_features) + ", 1, 1), input " +
                                          in[0].str() + " (flatten first)");
            return Shape{l.out_features, 1, 1};
          },
          [&](const Add&) {
            if (!(in[0] == in[1])) throw std::invalid_argument("Add of shapes " + in[0].str() + " and " + in[1].str());
            return in[0];
          },
          [&](const Scale& s) {
            if (!std::isfinite(s.factor) || s.factor == 0.0)
              throw std::invalid_argument("Scale factor must be finite and non-zero");
            return in[0];
          },
          [&](const Quadratic& q) {
            q.validate();
            if (in[0].channels != q.channels())
              throw std::invalid_argument("Quadratic over " + std::to_string(q.channels()) + " channels, input " +
                                          in[0].str());
            return in[0];
          },
          [&](const PolynomialActivation& p) { return p.validate(), in[0]; },
          [&](const Crop& c) {
            if (c.height == 0 || c.width == 0 || c.top + c.height > in[0].height || c.left + c.width > in[0].width)
              throw std::invalid_argument("Crop of " + std::to_string(c.height) + "x" + std::to_string(c.width) +
                                          " at (" + std::to_string(c.top) + ", " + std::to_string(c.left) +
                                          ") is empty or outside the input " + in[0].str());
            return Shape{in[0].channels, c.height, c.width};
          },
          [&](const L2Normalize& l) { return l.validate(), in[0]; },
      },
      op);
}

}  // namespace

const char* op_name(const GraphOp& op) {
  static constexpr const char* kNames[] = {"Input",   "Conv2d", "BatchNorm", "AvgPool2d", "AdaptiveAvgPool2d", "Flatten",
                                           "Linear", "Add",    "Scale",     "Quadratic", "PolynomialActivation", "Crop",
                                           "L2Normalize"};
  static_assert(std::size(kNames) == std::variant_size_v<GraphOp>);
  return kNames[op.index()];
}

double PolynomialActivation::evaluate(double x) const {
  double y = 0;
  for (std::size_t k = coeffs.size(); k-- > 0;) y = y * x + coeffs[k];
  return y;
}

Tensor PolynomialActivation::forward(const Tensor& x) const {
  Tensor y = x;
  for (double& v : y.data) v = evaluate(v);
  return y;
}

void PolynomialActivation::validate() const {
  if (coeffs.empty()) throw std::invalid_argument("PolynomialActivation: no coefficients");
  for (const double c : coeffs)
    if (!std::isfinite(c)) throw std::invalid_argument("PolynomialActivation: coefficient is not finite");
  if (!(lower < upper)) throw std::invalid_argument("PolynomialActivation: empty domain");
}

Tensor Crop::forward(const Tensor& x) const {
  Tensor y({x.shape.channels, height, width});
  for (std::size_t c = 0; c < x.shape.channels; ++c)
    for (std::size_t i = 0; i < height; ++i)
      for (std::size_t j = 0; j < width; ++j) y.at(c, i, j) = x.at(c, top + i, left + j);
  return y;
}

Tensor L2Normalize::forward(const Tensor& x) const {
  double sum = 0;
  for (const double v : x.data) sum += v * v;
  double factor = 0;
  for (std::size_t k = coeffs.size(); k-- > 0;) factor = factor * sum + coeffs[k];
  Tensor y = x;
  for (double& v : y.data) v *= factor;
  return y;
}

void L2Normalize::validate() const {
  if (coeffs.size() < 2) throw std::invalid_argument("L2Normalize: the polynomial needs degree 1 or more");
  for (const double c : coeffs)
    if (!std::isfinite(c)) throw std::invalid_argument("L2Normalize: coefficient is not finite");
}

Graph::Graph(Shape input, std::string input_name) {
  if (input.size() == 0) throw std::invalid_argument("Graph: empty input shape");
  nodes_.push_back({std::move(input_name), GraphInput{}, {}, input});
}

std::size_t Graph::add(std::string name, GraphOp op, std::vector<std::size_t> inputs) {
  const std::string who = "Graph node '" + name + "' (" + op_name(op) + "): ";
  if (inputs.size() != expected_inputs(op))
    throw std::invalid_argument(who + "takes " + std::to_string(expected_inputs(op)) + " input(s), given " +
                                std::to_string(inputs.size()));
  std::vector<Shape> shapes;
  for (const std::size_t i : inputs) {
    if (i >= nodes_.size()) throw std::invalid_argument(who + "input " + std::to_string(i) + " is not an earlier node");
    shapes.push_back(nodes_[i].shape);
  }
  Shape shape;
  try {
    shape = infer_shape(op, shapes);
  } catch (const std::invalid_argument& e) {
    throw std::invalid_argument(who + e.what());
  }
  nodes_.push_back({std::move(name), std::move(op), std::move(inputs), shape});
  return nodes_.size() - 1;
}

std::vector<Tensor> Graph::forward_all(const Tensor& x) const {
  expect_shape(x, input_shape(), "Graph::forward");
  std::vector<Tensor> values;
  values.reserve(nodes_.size());
  values.push_back(x);
  for (std::size_t n = 1; n < nodes_.size(); ++n) {
    const GraphNode& node = nodes_[n];
    const Tensor& a = values[node.inputs[0]];
    values.push_back(std::visit(
        Overloaded{
            [&](const GraphInput&) { return a; },
            [&](const Flatten&) {
              Tensor y = a;
              y.shape = node.shape;
              return y;
            },
            [&](const Add&) { return nn::add(a, values[node.inputs[1]]); },
            [&](const Scale& s) {
              Tensor y = a;
              for (double& v : y.data) v *= s.factor;
              return y;
            },
            [&](const auto& layer) { return layer.forward(a); },
        },
        node.op));
  }
  return values;
}

std::vector<std::vector<std::size_t>> Graph::consumers() const {
  std::vector<std::vector<std::size_t>> out(nodes_.size());
  for (std::size_t n = 0; n < nodes_.size(); ++n)
    for (const std::size_t i : nodes_[n].inputs) out[i].push_back(n);
  return out;
}

Tensor Graph::forward(const Tensor& x) const { return forward_all(x).back(); }

}  // namespace pfhe::nn
