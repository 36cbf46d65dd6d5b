#include "nn/graph_passes.h"

#include <functional>
#include <optional>
#include <stdexcept>

namespace pfhe::nn {

namespace {

// layer(x) followed by y = scale * x + shift per output channel, as one layer.
Conv2d with_affine(Conv2d conv, const std::vector<double>& scale, const std::vector<double>& shift) {
  if (scale.size() != conv.out_channels) throw std::invalid_argument("BatchNorm after a conv: channel count mismatch");
  const std::size_t per_out = conv.in_channels * conv.kernel * conv.kernel;
  std::vector<double> bias(conv.out_channels);
  for (std::size_t o = 0; o < conv.out_channels; ++o) {
    for (std::size_t k = 0; k < per_out; ++k) conv.weight[o * per_out + k] *= scale[o];
    bias[o] = shift[o] + (conv.bias.empty() ? 0.0 : conv.bias[o] * scale[o]);
  }
  conv.bias = std::move(bias);
  return conv;
}

Linear with_affine(Linear linear, const std::vector<double>& scale, const std::vector<double>& shift) {
  if (scale.size() != linear.out_features) throw std::invalid_argument("BatchNorm after a Linear: size mismatch");
  std::vector<double> bias(linear.out_features);
  for (std::size_t o = 0; o < linear.out_features; ++o) {
    for (std::size_t i = 0; i < linear.in_features; ++i) linear.weight[o * linear.in_features + i] *= scale[o];
    bias[o] = shift[o] + (linear.bias.empty() ? 0.0 : linear.bias[o] * scale[o]);
  }
  linear.bias = std::move(bias);
  return linear;
}

}  // namespace

namespace {

// What replaces one node in the rewritten graph (nothing: the node is dropped, its only
// reader computes its part).
struct Emit {
  std::string name;
  GraphOp op;
  std::vector<std::size_t> inputs;  // old node indices
};

// The output side o of a pooling into o x o equal blocks that tile its input: an adaptive
// pooling, or an AvgPool2d whose kernel is its stride and divides its square input (what
// torch exports adaptive_avg_pool2d as when the shape is known).
std::optional<std::size_t> pooled_blocks(const Graph& g, std::size_t n) {
  const GraphNode& node = g.nodes()[n];
  if (const auto* a = std::get_if<AdaptiveAvgPool2d>(&node.op)) return a->output_size;
  const auto* p = std::get_if<AvgPool2d>(&node.op);
  const Shape& in = g.nodes()[node.inputs[0]].shape;
  if (!p || p->kernel != p->stride || in.height != in.width || in.height % p->kernel != 0) return std::nullopt;
  return in.height / p->kernel;
}

// linear(chain(pool(x))) over the flattened x, where the chain is Flatten, BatchNorm and
// Scale nodes: every pooled feature f carries the affine a_f * pooled + t_f.
Linear fuse_pooling(const Graph& g, std::size_t pool, std::size_t o, const std::vector<std::size_t>& chain,
                    const Linear& linear) {
  const Shape& in = g.nodes()[g.nodes()[pool].inputs[0]].shape;
  const std::size_t features = in.channels * o * o, bh = in.height / o, bw = in.width / o;
  std::vector<double> a(features, 1.0), t(features, 0.0);
  for (const std::size_t n : chain) {
    const GraphNode& node = g.nodes()[n];
    if (const auto* bn = std::get_if<BatchNorm>(&node.op)) {
      std::vector<double> s, sh;
      bn->affine_form(s, sh);
      const std::size_t per_channel = features / s.size();  // o * o before a Flatten, 1 after
      for (std::size_t f = 0; f < features; ++f) {
        a[f] *= s[f / per_channel];
        t[f] = t[f] * s[f / per_channel] + sh[f / per_channel];
      }
    } else if (const auto* sc = std::get_if<Scale>(&node.op)) {
      for (std::size_t f = 0; f < features; ++f) a[f] *= sc->factor, t[f] *= sc->factor;
    }
  }
  Linear fused{in.size(), linear.out_features, std::vector<double>(linear.out_features * in.size(), 0.0),
               std::vector<double>(linear.out_features, 0.0)};
  const double inv_block = 1.0 / static_cast<double>(bh * bw);
  for (std::size_t r = 0; r < linear.out_features; ++r) {
    double b = linear.bias.empty() ? 0.0 : linear.bias[r];
    for (std::size_t f = 0; f < features; ++f) {
      const double w = linear.weight[r * features + f];
      if (w == 0.0) continue;
      b += w * t[f];
      const std::size_t c = f / (o * o), py = (f / o) % o, px = f % o;
      for (std::size_t y = py * bh; y < (py + 1) * bh; ++y)
        for (std::size_t x = px * bw; x < (px + 1) * bw; ++x)
          fused.weight[r * in.size() + (c * in.height + y) * in.width + x] += w * a[f] * inv_block;
    }
    fused.bias[r] = b;
  }
  return fused;
}

// The degree of p (its highest non-zero coefficient).
std::size_t degree_of(const PolynomialActivation& p) {
  std::size_t d = p.coeffs.size();
  while (d > 0 && p.coeffs[d - 1] == 0.0) --d;
  return d == 0 ? 0 : d - 1;
}

}  // namespace

Graph fold_into_linear_layers(const Graph& g) {
  const auto& nodes = g.nodes();
  const auto consumers = g.consumers();
  const auto only_reader = [&](std::size_t n) -> std::optional<std::size_t> {
    if (consumers[n].size() != 1 || n == g.output()) return std::nullopt;
    return consumers[n][0];
  };
  std::vector<std::optional<Emit>> emit(nodes.size());
  for (std::size_t n = 1; n < nodes.size(); ++n) emit[n] = Emit{nodes[n].name, nodes[n].op, nodes[n].inputs};
  // The Conv2d and Linear layers summed into node n (n itself, or the terms of Adds), each
  // node read only by the next up to `reader`; nullopt when another kind of node is in it.
  const std::function<std::optional<std::vector<std::size_t>>(std::size_t, std::size_t)> sum_terms =
      [&](std::size_t n, std::size_t reader) -> std::optional<std::vector<std::size_t>> {
    if (only_reader(n) != reader || !emit[n]) return std::nullopt;
    if (std::holds_alternative<Conv2d>(emit[n]->op) || std::holds_alternative<Linear>(emit[n]->op))
      return std::vector<std::size_t>{n};
    if (!std::holds_alternative<Add>(emit[n]->op)) return std::nullopt;
    std::vector<std::size_t> terms;
    for (const std::size_t i : emit[n]->inputs) {
      const auto part = sum_terms(i, n);
      if (!part) return std::nullopt;
      terms.insert(terms.end(), part->begin(), part->end());
    }
    return terms;
  };
  for (std::size_t n = 1; n < nodes.size(); ++n) {
    const GraphNode& node = nodes[n];
    if (!emit[n]) continue;  // folded into a later layer
    if (const auto* bn = std::get_if<BatchNorm>(&node.op)) {
      const std::size_t root = node.inputs[0];
      const auto terms = sum_terms(root, n);
      if (!terms) continue;
      std::vector<double> scale, shift;
      bn->affine_form(scale, shift);
      for (double& t : shift) t /= static_cast<double>(terms->size());
      for (const std::size_t t : *terms)
        emit[t]->op = std::visit(
            [&](const auto& layer) -> GraphOp {
              if constexpr (requires { with_affine(layer, scale, shift); }) return with_affine(layer, scale, shift);
              else throw std::logic_error("sum_terms returned a node that is not a Conv2d or Linear");
            },
            emit[t]->op);
      // The sum's last node (or the one layer) now computes the BatchNorm's output, under its name.
      emit[n] = Emit{node.name, std::move(emit[root]->op), emit[root]->inputs};
      emit[root].reset();
    } else if (const auto* poly = std::get_if<PolynomialActivation>(&node.op); poly && degree_of(*poly) == 2) {
      const std::size_t channels = nodes[node.inputs[0]].shape.channels;
      const auto all = [&](std::size_t k) { return std::vector<double>(channels, poly->coeffs[k]); };
      emit[n]->op = Quadratic{all(2), all(1), all(0)};
    } else if (const auto blocks = pooled_blocks(g, n)) {
      std::vector<std::size_t> chain;
      std::optional<std::size_t> at = only_reader(n);
      while (at && (std::holds_alternative<Flatten>(nodes[*at].op) || std::holds_alternative<BatchNorm>(nodes[*at].op) ||
                    std::holds_alternative<Scale>(nodes[*at].op))) {
        chain.push_back(*at);
        at = only_reader(*at);
      }
      if (!at || !std::holds_alternative<Linear>(nodes[*at].op)) continue;
      // The pooling node becomes the Flatten of its input; the chain goes.
      emit[n] = Emit{node.name, Flatten{}, node.inputs};
      for (const std::size_t c : chain) emit[c].reset();
      emit[*at] = Emit{nodes[*at].name, fuse_pooling(g, n, *blocks, chain, std::get<Linear>(nodes[*at].op)), {n}};
    }
  }
  Graph out(g.input_shape(), nodes[0].name);
  std::vector<std::size_t> index(nodes.size(), 0);
  for (std::size_t n = 1; n < nodes.size(); ++n) {
    if (!emit[n]) continue;
    std::vector<std::size_t> inputs;
    for (const std::size_t i : emit[n]->inputs) inputs.push_back(index[i]);
    index[n] = out.add(emit[n]->name, std::move(emit[n]->op), std::move(inputs));
  }
  return out;
}

}  // namespace pfhe::nn
