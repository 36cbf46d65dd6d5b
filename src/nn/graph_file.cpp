#include "nn/graph_file.h"

#include <cmath>
#include <limits>
#include <set>

#include "nn/model_container.h"
#include "nn/overloaded.h"

namespace pfhe::nn {

namespace {

using container::json;

// JSON has no infinities: an unbounded side of a polynomial's domain is null.
json bound(double v) { return std::isfinite(v) ? json(v) : json(nullptr); }
double bound(const json& j, double unbounded) { return j.is_null() ? unbounded : j.get<double>(); }

json describe(const GraphNode& node, container::TensorWriter& w) {
  json j = {{"name", node.name}, {"op", op_name(node.op)}, {"inputs", node.inputs}};
  std::visit(Overloaded{
                 [&](const GraphInput&) { j["shape"] = {node.shape.channels, node.shape.height, node.shape.width}; },
                 [&](const Conv2d& c) {
                   j["in_channels"] = c.in_channels;
                   j["out_channels"] = c.out_channels;
                   j["kernel"] = c.kernel;
                   j["stride"] = c.stride;
                   j["padding"] = c.padding;
                   w.add_conv(node.name, c);
                 },
                 [&](const BatchNorm& bn) {
                   j["channels"] = bn.channels();
                   j["eps"] = bn.eps;
                   j["affine"] = !bn.gamma.empty();
                   w.add_bn(node.name, bn);
                 },
                 [&](const AvgPool2d& p) {
                   j["kernel"] = p.kernel;
                   j["stride"] = p.stride;
                 },
                 [&](const AdaptiveAvgPool2d& p) { j["output_size"] = p.output_size; },
                 [&](const Flatten&) {},
                 [&](const Linear& l) {
                   j["in_features"] = l.in_features;
                   j["out_features"] = l.out_features;
                   w.add(node.name + ".weight", {l.out_features, l.in_features}, l.weight);
                   if (!l.bias.empty()) w.add(node.name + ".bias", {l.out_features}, l.bias);
                 },
                 [&](const Add&) {},
                 [&](const Scale& s) { j["factor"] = s.factor; },
                 [&](const Quadratic& q) {  // JSON doubles: a fused HerPN keeps its float64 coefficients
                   j["w2"] = q.w2;
                   j["w1"] = q.w1;
                   j["w0"] = q.w0;
                 },
                 [&](const PolynomialActivation& p) {
                   j["coeffs"] = p.coeffs;
                   j["lower"] = bound(p.lower);
                   j["upper"] = bound(p.upper);
                 },
                 [&](const Crop& c) {
                   j["top"] = c.top;
                   j["left"] = c.left;
                   j["height"] = c.height;
                   j["width"] = c.width;
                 },
                 [&](const L2Normalize& l) { j["coeffs"] = l.coeffs; },
             },
             node.op);
  return j;
}

// Sizes read from the header: positive and small enough that products cannot overflow.
std::size_t size_field(const json& j, const char* field) {
  const auto v = j.at(field).get<std::size_t>();
  if (v == 0 || v > (1u << 24)) throw ModelFormatError(std::string("field '") + field + "' out of range");
  return v;
}

GraphOp read_op(const json& j, const std::string& name, const container::TensorReader& r) {
  const std::string op = j.at("op").get<std::string>();
  if (op == "Conv2d") {
    const std::size_t in = size_field(j, "in_channels"), out = size_field(j, "out_channels");
    const std::size_t kernel = size_field(j, "kernel"), stride = size_field(j, "stride");
    const auto padding = j.at("padding").get<std::size_t>();
    if (kernel > 64 || stride > 64 || padding >= kernel) throw ModelFormatError("Conv2d geometry out of range");
    return r.conv(name, in, out, kernel, stride, padding);
  }
  if (op == "BatchNorm") {
    const double eps = j.at("eps").get<double>();
    if (!(eps > 0) || !std::isfinite(eps)) throw ModelFormatError("BatchNorm eps must be positive");
    return r.bn(name, size_field(j, "channels"), j.at("affine").get<bool>(), eps);
  }
  if (op == "AvgPool2d") return AvgPool2d{size_field(j, "kernel"), size_field(j, "stride")};
  if (op == "AdaptiveAvgPool2d") return AdaptiveAvgPool2d{size_field(j, "output_size")};
  if (op == "Flatten") return Flatten{};
  if (op == "Linear") {
    const std::size_t in = size_field(j, "in_features"), out = size_field(j, "out_features");
    Linear l{in, out, r.get(name + ".weight", {out, in}), {}};
    if (r.has(name + ".bias")) l.bias = r.get(name + ".bias", {out});
    return l;
  }
  if (op == "Add") return Add{};
  if (op == "Scale") return Scale{j.at("factor").get<double>()};
  if (op == "Quadratic") {
    Quadratic q{j.at("w2").get<std::vector<double>>(), j.at("w1").get<std::vector<double>>(),
                j.at("w0").get<std::vector<double>>()};
    if (q.channels() > (1u << 24)) throw ModelFormatError("Quadratic channel count out of range");
    return q;
  }
  if (op == "HerPN") {  // training form (files written before pfhe held the fused form): fused here
    const double eps = j.at("eps").get<double>();
    if (!(eps > 0) || !std::isfinite(eps)) throw ModelFormatError("HerPN eps must be positive");
    return r.herpn(name, size_field(j, "channels"), eps).fuse();
  }
  if (op == "PolynomialActivation")
    return PolynomialActivation{j.at("coeffs").get<std::vector<double>>(),
                                bound(j.at("lower"), -std::numeric_limits<double>::infinity()),
                                bound(j.at("upper"), std::numeric_limits<double>::infinity())};
  if (op == "Crop") {
    const auto top = j.at("top").get<std::size_t>(), left = j.at("left").get<std::size_t>();
    if (top > (1u << 16) || left > (1u << 16)) throw ModelFormatError("Crop offset out of range");
    return Crop{top, left, size_field(j, "height"), size_field(j, "width")};
  }
  if (op == "L2Normalize") return L2Normalize{j.at("coeffs").get<std::vector<double>>()};
  throw ModelFormatError("unknown op '" + op + "'");
}

Shape read_shape(const json& j) {
  const auto dims = j.at("shape").get<std::vector<std::size_t>>();
  if (dims.size() != 3) throw ModelFormatError("the input shape must be (C, H, W)");
  for (const std::size_t d : dims)
    if (d == 0 || d > (1u << 16)) throw ModelFormatError("the input shape is out of range");
  return {dims[0], dims[1], dims[2]};
}

}  // namespace

std::vector<std::uint8_t> save_graph(const Graph& graph) {
  std::set<std::string> names;
  container::TensorWriter w;
  json nodes = json::array();
  for (const GraphNode& node : graph.nodes()) {
    if (!names.insert(node.name).second)
      throw ModelFormatError("save_graph: two nodes are named '" + node.name + "' (names identify the tensors)");
    nodes.push_back(describe(node, w));
  }
  json header = {{"architecture", "graph"}, {"nodes", nodes}, {"tensors", w.entries()}};
  return container::write(header, w.floats());
}

Graph load_graph(std::span<const std::uint8_t> bytes) {
  const container::Parsed parsed = container::read(bytes);
  const json& header = parsed.header;
  if (header.at("architecture").get<std::string>() != "graph")
    throw ModelFormatError("model: architecture " + header.at("architecture").dump() + " is not a graph");
  std::string node_name = "(header)";
  try {
    const container::TensorReader r(header.at("tensors"), parsed.floats);
    const json& nodes = header.at("nodes");
    if (!nodes.is_array() || nodes.empty()) throw ModelFormatError("'nodes' must be a non-empty array");
    node_name = nodes[0].at("name").get<std::string>();
    if (nodes[0].at("op").get<std::string>() != "Input" || !nodes[0].at("inputs").empty())
      throw ModelFormatError("node 0 must be the Input");
    Graph g(read_shape(nodes[0]), node_name);
    std::set<std::string> names = {node_name};
    for (std::size_t i = 1; i < nodes.size(); ++i) {
      node_name = nodes[i].at("name").get<std::string>();
      if (!names.insert(node_name).second) throw ModelFormatError("the name is used twice");
      g.add(node_name, read_op(nodes[i], node_name, r), nodes[i].at("inputs").get<std::vector<std::size_t>>());
    }
    return g;
  } catch (const ModelFormatError& e) {
    throw ModelFormatError("graph node '" + node_name + "': " + e.what());
  } catch (const json::exception& e) {
    throw ModelFormatError("graph node '" + node_name + "': malformed description: " + e.what());
  } catch (const std::invalid_argument& e) {
    throw ModelFormatError("graph: " + std::string(e.what()));  // Graph::add names the node
  }
}

void save_graph_file(const Graph& graph, const std::string& path) { container::write_file(path, save_graph(graph)); }

Graph load_graph_file(const std::string& path) { return load_graph(container::read_file(path)); }

bool is_graph_model_file(const std::string& path) {
  if (!is_model_file(path)) return false;
  try {
    const json header = container::read(container::read_file(path)).header;
    return header.contains("architecture") && header.at("architecture") == "graph";
  } catch (const ModelFormatError& e) {
    const std::string what = e.what();
    throw ModelFormatError(what.rfind(path, 0) == 0 ? what : path + ": " + what);
  }
}

}  // namespace pfhe::nn
