// A model as a DAG of layers with shapes (the model IR every encrypted network is compiled
// from; CryptoFace's PatchCNN is one: PatchCNN::to_graph). Nodes are added
// in topological order: every input of a node is an earlier node, node 0 is the model
// input and the last node is the output. Shapes are inferred and checked when a node is
// added, so a Graph that exists is well formed. forward() is the float64 reference.
#pragma once
#include <limits>
#include <string>
#include <variant>
#include <vector>

#include "nn/layers.h"

namespace pfhe::nn {

struct GraphInput {};
// (C, H, W) -> (C H W, 1, 1) in channel-major order (what Linear reads).
struct Flatten {};
// Element-wise sum of two nodes of the same shape (residual connections).
struct Add {};
// Multiplication by a constant.
struct Scale {
  double factor = 1;
};

// A polynomial activation p(x) = sum_k coeffs[k] x^k, the same for every element. [lower,
// upper] is the domain it was designed for: fit() checks that calibration inputs stay in
// it (an approximation of ReLU, say, is worthless outside its interval).
struct PolynomialActivation {
  std::vector<double> coeffs;
  double lower = -std::numeric_limits<double>::infinity();
  double upper = std::numeric_limits<double>::infinity();

  double evaluate(double x) const;  // Horner
  Tensor forward(const Tensor& x) const;
  void validate() const;
};

// The window (channels kept) of a (C, H, W) tensor at rows top .. top + height - 1 and
// columns left .. left + width - 1. Encrypted, crops of the model input are done by the
// client: a grid of equal crops becomes the patches it encrypts (nn/compiled_graph.h).
struct Crop {
  std::size_t top = 0, left = 0, height = 0, width = 0;
  Tensor forward(const Tensor& x) const;
};

// x * p(sum of the squares of x): an L2 normalisation with p approximating 1 / sqrt over
// the range the sums of squares take (CryptoFace's embedding normalisation).
struct L2Normalize {
  std::vector<double> coeffs;  // p in the power basis
  Tensor forward(const Tensor& x) const;
  void validate() const;
};

// HerPN enters a graph in inference form, as its Quadratic (HerPN::fuse).
using GraphOp = std::variant<GraphInput, Conv2d, BatchNorm, AvgPool2d, AdaptiveAvgPool2d, Flatten, Linear, Add, Scale,
                             Quadratic, PolynomialActivation, Crop, L2Normalize>;

// The op's name as it appears in error messages and reports ("Conv2d", "Add", ...).
const char* op_name(const GraphOp& op);

struct GraphNode {
  std::string name;
  GraphOp op;
  std::vector<std::size_t> inputs;
  Shape shape;  // of the node's output
};

class Graph {
 public:
  explicit Graph(Shape input, std::string input_name = "input");

  // Appends a node and returns its index. Throws std::invalid_argument with the node's
  // name when an input index is not an earlier node, the input count is wrong for the op,
  // the layer's parameters are malformed or the shapes do not fit.
  std::size_t add(std::string name, GraphOp op, std::vector<std::size_t> inputs);
  std::size_t add(std::string name, GraphOp op, std::size_t input) {
    return add(std::move(name), std::move(op), std::vector<std::size_t>{input});
  }

  const std::vector<GraphNode>& nodes() const { return nodes_; }
  const Shape& input_shape() const { return nodes_.front().shape; }
  const Shape& output_shape() const { return nodes_.back().shape; }
  std::size_t output() const { return nodes_.size() - 1; }

  // The nodes reading each node (index = node), in node order.
  std::vector<std::vector<std::size_t>> consumers() const;

  Tensor forward(const Tensor& x) const;
  // Every node's output (index = node), for calibration and per-layer error reports.
  std::vector<Tensor> forward_all(const Tensor& x) const;

 private:
  std::vector<GraphNode> nodes_;
};

}  // namespace pfhe::nn
