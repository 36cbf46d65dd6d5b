#include "nn/compiled_graph.h"

#include <algorithm>
#include <bit>
#include <chrono>
#include <cmath>
#include <optional>
#include <queue>
#include <set>
#include <stdexcept>
#include <string>

#include "ckks/ring_switch.h"
#include "ckks/serialization.h"
#include "nn/graph_passes.h"
#include "nn/overloaded.h"

namespace pfhe::nn {

namespace {

constexpr char kGraphMagic[4] = {'P', 'F', 'H', 'G'};
// 2: layouts record their grid (nn/layout.h); 3: patch inputs in lanes, L2Normalize.
constexpr std::uint32_t kGraphVersion = 3;

// Compile-time state of one graph node's output: value = multiplier (.) stored, where
// stored is program value `index` (multiplier empty: all ones). A lane group's value holds
// `members` tensors, one per lane, and a multiplier for each in turn.
struct Value {
  std::size_t index = 0;
  Layout layout;
  Shape shape;  // the graph's (logical) shape; layout.shape differs after a Flatten
  std::size_t level = 0;
  double scale = 0;
  std::vector<double> multiplier;
  double max_abs = 0;  // the node's fitted range (0: not known)
  std::size_t members = 1;
  bool half = false;  // in the half ring (after a ring switch)
};

std::vector<double> multiplier_of(const Value& v) {
  return v.multiplier.empty() ? std::vector<double>(v.members * v.shape.size(), 1.0) : v.multiplier;
}

// Channel of element e (channel-major, members in turn) of tensors of shape s; a
// flattened (F, 1, 1) tensor has one element per channel.
std::size_t channel_of(const Shape& s, std::size_t e) { return (e % s.size()) / (s.height * s.width); }

// A slot vector holding per-element values (each member's in turn) in every replica.
std::vector<double> pack_elements(const std::vector<double>& per_element, const Layout& layout) {
  const std::size_t size = layout.shape.size();
  std::vector<Tensor> lanes;
  for (std::size_t first = 0; first < per_element.size(); first += size) {
    Tensor t(layout.shape);
    std::copy_n(per_element.begin() + static_cast<std::ptrdiff_t>(first), size, t.data.begin());
    lanes.push_back(std::move(t));
  }
  return pack_lanes(lanes, layout);
}

bool is_zero(const std::vector<double>& v) {
  return std::all_of(v.begin(), v.end(), [](double x) { return x == 0.0; });
}

}  // namespace

class CompiledGraph::Builder {
 public:
  Builder(const ckks::Encoder& enc, Compilation mode, double scale, const ckks::Bootstrapper* bootstrapper,
          bool have_ranges, const HalfRing* half, CompiledGraph& out)
      : enc_(enc), mode_(mode), scale_(scale), boot_(bootstrapper), have_ranges_(have_ranges), half_(half), out_(out) {}

  // Lowest level a value may keep before its next node (with a bootstrapper: one above
  // its input level, for the scaling into EvalMod's domain).
  std::size_t floor() const { return boot_ ? boot_->input_level() + 1 : 0; }
  double scale() const { return scale_; }

  // A linear node: folds v's multiplier into the map, lands on target_scale one level
  // down; the result holds `members` tensors (1 when the map sums the lanes).
  Value linear(const std::string& name, const Value& v, SlotLinearMap map, const Layout& out, const Shape& shape,
               double target_scale, std::size_t members) {
    return linear_here(name, ready(name, v, 1), std::move(map), out, shape, target_scale, members);
  }

  // v in the half ring when a step costing levels would run at or below its top level.
  Value in_ring(const std::string& name, const Value& v) {
    if (!half_ || v.half || v.level > half_->choice.level) return v;
    if (v.level < half_->choice.level)
      throw std::invalid_argument("compile: node '" + name + "': its input went past the ring switch at level " +
                                  std::to_string(half_->choice.level) + " in the big ring (level " +
                                  std::to_string(v.level) + ")");
    return to_half(name, v);
  }

  // v switched to the half ring's top level (memoized: every reader shares one switch).
  Value to_half(const std::string& name, const Value& v) {
    if (const auto it = switched_.find(v.index); it != switched_.end()) return it->second;
    if (v.layout.rotated || !v.layout.cyclic() || v.layout.replicas < 2 || v.level < half_->choice.level)
      throw std::invalid_argument("compile: node '" + name + "': a ring switch needs a fully replicated layout with two "
                                  "copies or more at level " + std::to_string(half_->choice.level) + " or above");
    Value y = v;
    y.layout.slots /= 2;
    y.layout.replicas /= 2;
    y.layout.validate();
    y.level = half_->choice.level;
    y.half = true;
    y.index = push(name + ".ring_switch", {v.index}, RingSwitch{}, true);
    switched_.emplace(v.index, y);
    return y;
  }

  // y = weights (.) value + shift (of the value itself, multiplier included: linear()
  // folds it in) in layout `out` at target_scale; one level.
  Value affine(const std::string& name, const Value& v, const std::vector<double>& weights,
               const std::vector<double>& shift, const Layout& out, double target_scale) {
    const Value x = in_ring(name, v);
    Layout to = out;  // in x's ring
    if (x.half && !v.half) to.slots /= 2, to.replicas /= 2;
    SlotLinearMap map = lower_elementwise(weights, x.layout, to);
    if (!is_zero(shift)) map.bias = pack_elements(shift, to);
    return linear(name, x, std::move(map), to, x.shape, target_scale, x.members);
  }

  // The value with multiplier one (one level when it is not one already).
  Value materialize(const std::string& name, const Value& v) {
    if (v.multiplier.empty()) return v;
    return affine(name, v, std::vector<double>(v.members * v.shape.size(), 1.0), {}, v.layout, scale_);
  }

  Value batch_norm(const std::string& name, const Value& v, const std::vector<const BatchNorm*>& bns) {
    std::vector<std::vector<double>> s(bns.size()), t(bns.size());
    for (std::size_t l = 0; l < bns.size(); ++l) bns[l]->affine_form(s[l], t[l]);
    const std::size_t size = v.shape.size();
    std::vector<double> m = multiplier_of(v), shift(m.size()), weights(m.size());
    bool foldable = true;
    for (std::size_t e = 0; e < m.size(); ++e) {
      const std::size_t l = e / size, c = channel_of(v.shape, e);
      m[e] *= s[l][c];
      weights[e] = s[l][c];
      foldable = foldable && std::isfinite(m[e]) && std::fabs(m[e]) > 1e-12;
      shift[e] = t[l][c];
    }
    if (!foldable) return affine(name, v, weights, shift, v.layout, scale_);  // a zero scale: the shift alone, exactly
    Value y = v;
    y.multiplier = m;
    if (is_zero(shift)) return y;
    for (std::size_t e = 0; e < m.size(); ++e) shift[e] /= m[e];
    y.index = push(name, {v.index}, Shift{enc_of(v).encode(pack_elements(shift, v.layout), v.level, v.scale)}, v.half);
    return y;
  }

  Value herpn(const std::string& name, const Value& input, const std::vector<const HerPN*>& herpns) {
    const Value v = ready(name, in_ring(name, input), 1);
    const std::vector<double> m = multiplier_of(v);
    const std::size_t size = v.shape.size();
    std::vector<Tensor> a1(herpns.size(), Tensor(v.layout.shape)), a0 = a1;
    std::vector<double> w2(m.size());
    for (std::size_t l = 0; l < herpns.size(); ++l) {
      const Quadratic q = herpns[l]->fuse();
      for (std::size_t i = 0; i < size; ++i) {
        const std::size_t e = l * size + i, c = channel_of(v.shape, i);
        if (!(std::fabs(q.w2[c]) > 1e-12))
          throw std::invalid_argument("compile: node '" + name + "': HerPN channel " + std::to_string(c) +
                                      " has a zero quadratic coefficient (gamma = 0); its factored form is undefined");
        w2[e] = q.w2[c] * m[e] * m[e];
        a1[l].data[i] = q.w1[c] / (q.w2[c] * m[e]);
        a0[l].data[i] = q.w0[c] / (q.w2[c] * m[e] * m[e]);
      }
    }
    require_level(v.level);
    CompiledQuadratic quadratic = make_quadratic(enc_of(v), mode_, a1, a0, v.layout, v.level, v.scale);
    const double output_scale = quadratic.output_scale;
    return {push(name, {v.index}, std::move(quadratic), v.half), v.layout, v.shape, v.level - 1, output_scale, w2, 0,
            v.members, v.half};
  }

  Value polynomial(const std::string& name, const Value& v, const PolynomialActivation& activation) {
    const std::vector<double> m = multiplier_of(v);
    const bool uniform = std::all_of(m.begin(), m.end(), [&](double x) { return x == m.front(); });
    ckks::Polynomial p{ckks::PolynomialBasis::kPower, activation.coeffs};
    // (a bootstrap's scaling keeps a multiplier uniform)
    const Value x = ready(name, in_ring(name, uniform ? v : materialize(name + ".multiplier", v)), p.depth());
    const double c = multiplier_of(x).front();  // p(c u) as a polynomial in u
    double power = 1;
    for (double& coeff : p.coeffs) coeff *= power, power *= c;
    if (p.degree() == 0) throw std::invalid_argument("compile: node '" + name + "': constant polynomial activation");
    if (p.depth() > x.level)
      throw std::invalid_argument("compile: node '" + name + "': the polynomial needs " + std::to_string(p.depth()) +
                                  " levels, " + std::to_string(x.level) + " are left (the model is too deep)");
    const std::size_t depth = p.depth();
    return {push(name, {x.index}, Poly{x.level, x.scale, scale_, std::move(p)}, x.half), x.layout, x.shape,
            x.level - depth, scale_, {}, 0, x.members, x.half};
  }

  Value normalize(const std::string& name, const Value& v, const L2Normalize& l2) {
    if (v.layout.lanes != 1 || v.layout.rotated || !v.layout.cyclic())
      throw std::invalid_argument("compile: node '" + name + "': L2Normalize needs a fully replicated value in one lane");
    Normalize n{0, v.layout.span(), 0, scale_, {ckks::PolynomialBasis::kPower, l2.coeffs}};
    if (n.polynomial.degree() == 0) throw std::invalid_argument("compile: node '" + name + "': constant polynomial");
    const Value x = ready(name, in_ring(name, materialize(name + ".multiplier", v)), n.depth());
    if (n.depth() > x.level)
      throw std::invalid_argument("compile: node '" + name + "': L2Normalize needs " + std::to_string(n.depth()) +
                                  " levels, " + std::to_string(x.level) + " are left (the model is too deep)");
    n.input_level = x.level;
    n.input_scale = x.scale;
    const std::size_t depth = n.depth();
    return {push(name, {x.index}, std::move(n), x.half), x.layout, x.shape, x.level - depth, scale_, {}, 0, 1, x.half};
  }

  Value add(const std::string& name, const Value& a_in, const Value& b_in) {
    // Both operands in one ring: the big one switched when the other is in the half ring.
    const Value a = b_in.half && !a_in.half ? to_half(name, a_in) : a_in;
    const Value b = a_in.half && !b_in.half ? to_half(name, b_in) : b_in;
    const bool agree = a.layout == b.layout && multiplier_of(a) == multiplier_of(b) &&
                       std::fabs(a.scale - b.scale) <= 1e-9 * b.scale;
    if (agree) return sum(name, a, b, b);
    // Bring the operand with more levels left to the other's layout, multiplier and scale
    // (stored = value / the other's multiplier), as low as that lands on the other's level.
    const bool a_first = a.level >= b.level;
    Value ahead = a_first ? a : b;
    const Value& other = a_first ? b : a;
    if (ahead.level > other.level + 1 && other.level >= floor()) ahead.level = other.level + 1;
    std::vector<double> inverse = multiplier_of(other);
    for (double& m : inverse) m = 1.0 / m;
    const Value moved = affine(name + ".align", ahead, inverse, {}, other.layout, other.scale);
    return a_first ? sum(name, moved, other, other) : sum(name, other, moved, other);
  }

  Value sum(const std::string& name, const Value& a, const Value& b, Value like) {
    like.level = std::min(a.level, b.level);
    like.index = push(name, {a.index, b.index}, Sum{like.level}, a.half);
    return like;
  }

 private:
  Value linear_here(const std::string& name, const Value& v, SlotLinearMap map, const Layout& out, const Shape& shape,
                    double target_scale, std::size_t members) {
    if (!v.multiplier.empty()) {
      const std::vector<double> packed = pack_elements(v.multiplier, v.layout);
      for (auto& e : map.entries) e.weight *= packed[e.in];
    }
    require_level(v.level);
    CompiledLinear l = make_linear(enc_of(v), mode_, map, v.layout, out, v.level, v.scale, target_scale);
    return {push(name, {v.index}, std::move(l), v.half), out, shape, v.level - 1, target_scale, {}, v.max_abs, members,
            v.half};
  }

  // v, or v bootstrapped when a node needing `needed` levels would leave it below floor().
  Value ready(const std::string& name, const Value& v, std::size_t needed) {
    if (!boot_ || v.level >= needed + floor()) return v;
    if (const auto it = bootstrapped_.find(v.index); it != bootstrapped_.end()) return it->second;
    if (v.level < floor()) throw std::logic_error("compile: a value fell below the bootstrapping floor");
    if (!have_ranges_ || !(v.max_abs > 0))
      throw std::invalid_argument("compile: node '" + name + "' needs a bootstrap: pass the ranges fit() measured");
    if (needed + floor() > boot_->output_level())
      throw std::invalid_argument("compile: node '" + name + "' needs " + std::to_string(needed) +
                                  " levels, more than a bootstrap gives (" + std::to_string(boot_->output_level()) +
                                  " above level " + std::to_string(floor()) + ")");
    // The stored part, value / multiplier, into EvalMod's domain (see the header).
    const std::vector<double> m = multiplier_of(v);
    double smallest = INFINITY;
    for (const double x : m) smallest = std::min(smallest, std::fabs(x));
    const double bound = v.max_abs / smallest;
    Value x = v;
    if (!(bound >= 1.0 / 16 && bound <= 1.0 / 4)) {
      // value / r (the step folds the multiplier in, as any linear step): r comes from the
      // value's own range, and becomes the multiplier.
      const double r = 4 * v.max_abs;
      SlotLinearMap map = lower_elementwise(std::vector<double>(m.size(), 1.0 / r), v.layout, v.layout);
      x = linear_here(name + ".to_bootstrap", v, std::move(map), v.layout, v.shape, scale_, v.members);
      x.multiplier.assign(m.size(), r);
    }
    const Value out{push(name + ".bootstrap", {x.index}, Bootstrap{x.level, x.scale}, false), x.layout, x.shape,
                    boot_->output_level(), boot_->config().output_scale, x.multiplier, x.max_abs, x.members};
    bootstrapped_.emplace(v.index, out);
    return out;
  }

  std::size_t push(const std::string& name, std::vector<std::size_t> inputs, StepOp op, bool half) {
    out_.steps_.push_back({name, std::move(inputs), std::move(op), half});
    return out_.inputs_ + out_.steps_.size() - 1;
  }

  const ckks::Encoder& enc_of(const Value& v) const { return v.half ? half_->encoder : enc_; }

  const ckks::Encoder& enc_;
  Compilation mode_;
  double scale_;
  const ckks::Bootstrapper* boot_;
  bool have_ranges_;
  const HalfRing* half_;
  std::map<std::size_t, Value> bootstrapped_;  // by the index of the value bootstrapped
  std::map<std::size_t, Value> switched_;      // by the index of the value switched
  CompiledGraph& out_;
};

namespace {

std::vector<std::vector<std::size_t>> consumers_of(const Graph& g) {
  std::vector<std::vector<std::size_t>> consumers(g.nodes().size());
  for (std::size_t n = 0; n < g.nodes().size(); ++n)
    for (const std::size_t i : g.nodes()[n].inputs) consumers[i].push_back(n);
  return consumers;
}

// How the model input reaches the program: whole (no crops), or cut into grid x grid
// patches, crop_of[p] being the Crop node of patch p (row-major).
struct PatchPlan {
  std::size_t grid = 1;
  Shape patch;
  std::vector<std::size_t> crop_of;
};

PatchPlan find_patches(const Graph& g, const std::vector<std::vector<std::size_t>>& consumers) {
  const Shape& in = g.input_shape();
  PatchPlan plan{1, in, {}};
  const std::vector<std::size_t>& readers = consumers[0];
  const auto is_crop = [&](std::size_t n) { return std::holds_alternative<Crop>(g.nodes()[n].op); };
  if (std::none_of(readers.begin(), readers.end(), is_crop)) return plan;
  const auto refuse = [&](const std::string& why) {
    const std::size_t n = *std::find_if(readers.begin(), readers.end(), is_crop);
    return std::invalid_argument("compile: node '" + g.nodes()[n].name + "' (Crop): " + why);
  };
  if (!std::all_of(readers.begin(), readers.end(), is_crop))
    throw refuse("the model input is read both whole and cropped; encrypted, it is either one ciphertext or patches");
  const std::size_t grid = static_cast<std::size_t>(std::lround(std::sqrt(static_cast<double>(readers.size()))));
  const Crop& first = std::get<Crop>(g.nodes()[readers[0]].op);
  if (grid * grid != readers.size() || first.height * grid != in.height || first.width * grid != in.width)
    throw refuse("the crops of the model input must tile it as a grid of equal patches, each read once");
  plan = {grid, {in.channels, first.height, first.width}, std::vector<std::size_t>(readers.size(), 0)};
  std::vector<bool> seen(readers.size(), false);
  for (const std::size_t n : readers) {
    const Crop& c = std::get<Crop>(g.nodes()[n].op);
    const std::size_t p = c.top / first.height * grid + c.left / first.width;
    if (c.height != first.height || c.width != first.width || c.top % first.height || c.left % first.width || seen[p])
      throw refuse("the crops of the model input must tile it as a grid of equal patches, each read once");
    seen[p] = true;
    plan.crop_of[p] = n;
  }
  return plan;
}

// The layout a linear node writes from input layout `x` (`lanes` lanes; a Linear that ends
// a lane group writes one lane, the sum of its lanes).
Layout linear_output_layout(const GraphNode& node, const Layout& x, std::size_t lanes) {
  return std::visit(Overloaded{
                        [&](const Conv2d& c) { return conv_output_layout(c, x); },
                        [&](const AvgPool2d& p) { return pool_output_layout(p, x); },
                        [&](const AdaptiveAvgPool2d&) {
                          const std::size_t block = x.shape.height / node.shape.height;
                          return pool_output_layout(AvgPool2d{block, block}, x);
                        },
                        [&](const Linear&) {
                          return with_full_replication(Layout{node.shape, 1, x.slots, 1, lanes});
                        },
                        [&](const auto&) { return x; },
                    },
                    node.op);
}

bool same_structure(const GraphOp& a, const GraphOp& b) {
  if (a.index() != b.index()) return false;
  return std::visit(
      Overloaded{
          [&](const Conv2d& x) {
            const auto& y = std::get<Conv2d>(b);
            return x.in_channels == y.in_channels && x.out_channels == y.out_channels && x.kernel == y.kernel &&
                   x.stride == y.stride && x.padding == y.padding;
          },
          [&](const AvgPool2d& x) {
            const auto& y = std::get<AvgPool2d>(b);
            return x.kernel == y.kernel && x.stride == y.stride;
          },
          [&](const PolynomialActivation& x) { return x.coeffs == std::get<PolynomialActivation>(b).coeffs; },
          [&](const L2Normalize&) { return false; },  // needs one lane
          [&](const GraphInput&) { return false; },
          [&](const auto&) { return true; },  // shapes (compared by the caller) say the rest
      },
      a);
}

// Which patches share ciphertexts (see the header): the branch of each patch, and the sum
// of their exits.
struct LanePlan {
  std::size_t lanes = 1;
  std::vector<int> owner;                         // the patch whose branch a node is in, or -1
  std::vector<std::vector<std::size_t>> branch;   // nodes of each patch's branch, ascending
  std::vector<std::size_t> exit;                  // the Linear ending each branch
  std::size_t sum_root = 0;                       // the Add of the exits (lanes > 1)
  std::vector<bool> inner_sum;                    // Adds below sum_root (not compiled alone)
  std::vector<std::size_t> sum_leaves;            // what sum_root adds up, in order
};

// Why the patches' branches cannot share ciphertexts ("" when they can); fills `plan`.
std::string analyse_branches(const Graph& g, const std::vector<std::vector<std::size_t>>& consumers,
                             const PatchPlan& patches, LanePlan& plan) {
  const auto& nodes = g.nodes();
  const std::size_t count = patches.crop_of.size();
  plan.owner.assign(nodes.size(), -1);
  plan.branch.assign(count, {});
  for (std::size_t p = 0; p < count; ++p) plan.owner[patches.crop_of[p]] = static_cast<int>(p);
  for (std::size_t n = 1; n < nodes.size(); ++n) {
    if (plan.owner[n] >= 0) continue;
    const int first = plan.owner[nodes[n].inputs[0]];
    const bool one = std::all_of(nodes[n].inputs.begin(), nodes[n].inputs.end(),
                                 [&](std::size_t i) { return plan.owner[i] == first; });
    plan.owner[n] = one ? first : -1;
  }
  for (std::size_t n = 1; n < nodes.size(); ++n)
    if (plan.owner[n] >= 0) plan.branch[static_cast<std::size_t>(plan.owner[n])].push_back(n);
  if (count < 2) return "a single patch";
  std::optional<std::size_t> root;
  for (std::size_t p = 0; p < count; ++p) {
    std::vector<std::size_t> exits;
    for (const std::size_t n : plan.branch[p]) {
      const bool leaves = n == g.output() || std::any_of(consumers[n].begin(), consumers[n].end(), [&](std::size_t c) {
                            return plan.owner[c] != static_cast<int>(p);
                          });
      if (leaves) exits.push_back(n);
    }
    const std::string who = "patch " + std::to_string(p) + "'s branch";
    if (exits.size() != 1 || !std::holds_alternative<Linear>(nodes[exits[0]].op) || consumers[exits[0]].size() != 1 ||
        !std::holds_alternative<Add>(nodes[consumers[exits[0]][0]].op))
      return who + " does not end in one Linear read by an Add";
    plan.exit.push_back(exits[0]);
    std::size_t top = consumers[exits[0]][0];
    while (consumers[top].size() == 1 && std::holds_alternative<Add>(nodes[consumers[top][0]].op))
      top = consumers[top][0];
    if (root && *root != top) return who + " is not summed with the others";
    root = top;
    if (plan.branch[p].size() != plan.branch[0].size()) return who + " differs from patch 0's";
    for (std::size_t k = 0; k < plan.branch[p].size(); ++k) {
      const GraphNode& a = nodes[plan.branch[0][k]];
      const GraphNode& b = nodes[plan.branch[p][k]];
      bool same = same_structure(a.op, b.op) && a.shape == b.shape && a.inputs.size() == b.inputs.size();
      for (std::size_t i = 0; same && i < a.inputs.size() && k > 0; ++i) {
        const auto pos = [&](std::size_t q, std::size_t v) {
          return std::lower_bound(plan.branch[q].begin(), plan.branch[q].end(), v) - plan.branch[q].begin();
        };
        same = pos(0, a.inputs[i]) == pos(p, b.inputs[i]);
      }
      if (!same) return who + " differs from patch 0's at node '" + b.name + "'";
    }
  }
  plan.sum_root = *root;
  plan.inner_sum.assign(nodes.size(), false);
  std::vector<std::size_t> stack{plan.sum_root};
  while (!stack.empty()) {  // depth first, first operand first
    const std::size_t a = stack.back();
    stack.pop_back();
    for (auto it = nodes[a].inputs.rbegin(); it != nodes[a].inputs.rend(); ++it) {
      if (std::holds_alternative<Add>(nodes[*it].op) && consumers[*it].size() == 1 && plan.owner[*it] < 0) {
        plan.inner_sum[*it] = true;
        stack.push_back(*it);
      } else {
        plan.sum_leaves.push_back(*it);
      }
    }
  }
  std::reverse(plan.sum_leaves.begin(), plan.sum_leaves.end());
  return "";
}

// The most lanes every layer of patch 0's branch leaves room for.
std::size_t lanes_that_fit(const Graph& g, const LanePlan& plan, const Layout& input) {
  std::map<std::size_t, Layout> layout;
  std::size_t span = input.span();
  for (const std::size_t n : plan.branch[0]) {
    const GraphNode& node = g.nodes()[n];
    layout[n] = std::holds_alternative<Crop>(node.op) ? input
                                                      : linear_output_layout(node, layout.at(node.inputs[0]), 1);
    span = std::max(span, layout[n].span());
  }
  return std::bit_floor(input.slots / span);
}

LanePlan plan_lanes(const Graph& g, const std::vector<std::vector<std::size_t>>& consumers, const PatchPlan& patches,
                    std::size_t slots, std::size_t requested) {
  LanePlan plan;
  if (requested != 0 && (requested & (requested - 1)) != 0)
    throw std::invalid_argument("compile: lanes must be a power of two");
  if (patches.crop_of.empty()) {
    if (requested > 1) throw std::invalid_argument("compile: lanes need a model input cut into patches (Crop nodes)");
    return plan;
  }
  const std::string why_not = analyse_branches(g, consumers, patches, plan);
  if (!why_not.empty()) {
    plan.exit.clear();
    if (requested > 1) throw std::invalid_argument("compile: " + std::to_string(requested) + " lanes: " + why_not);
    return plan;
  }
  const std::size_t fit = lanes_that_fit(g, plan, graph_input_layout(patches.patch, slots));
  const std::size_t lanes = requested ? requested : std::min(fit, std::bit_ceil(patches.crop_of.size()));
  if (lanes > fit)
    throw std::invalid_argument("compile: " + std::to_string(lanes) + " lanes: the patches' layers leave room for " +
                                std::to_string(fit));
  plan.lanes = std::max<std::size_t>(lanes, 1);
  return plan;
}

}  // namespace

CompiledGraph CompiledGraph::compile(const Graph& input_graph, const ckks::Encoder& encoder, std::size_t input_level,
                                     double scale, std::size_t plaintext_budget, Compilation mode,
                                     const ckks::Bootstrapper* bootstrapper, const FitReport* ranges,
                                     std::size_t lanes, std::shared_ptr<const HalfRing> half_ring) {
  if (input_level > encoder.context().max_level()) throw std::invalid_argument("compile: input level above the top");
  const Graph graph = fold_into_linear_layers(input_graph);
  const auto& nodes = graph.nodes();
  const auto consumers = consumers_of(graph);
  const std::size_t slots = encoder.context().n() / 2;
  const PatchPlan patches = find_patches(graph, consumers);
  const LanePlan plan = plan_lanes(graph, consumers, patches, slots, lanes);
  const bool grouped = !plan.exit.empty();  // the patches' branches are summed pairwise, by lane group
  CompiledGraph g;
  g.encoder_ = &encoder;
  g.input_level_ = input_level;
  g.input_scale_ = scale;
  g.plan_ = mode == Compilation::kPlanOnly;
  g.input_shape_ = graph.input_shape();
  g.grid_ = patches.grid;
  g.input_layout_ = graph_input_layout(patches.patch, slots, plan.lanes);
  g.inputs_ = patches.crop_of.empty() ? 1 : (patches.crop_of.size() + plan.lanes - 1) / plan.lanes;
  std::map<std::string, double> range_of;
  if (ranges)
    for (const LayerRange& r : ranges->ranges) range_of[r.name] = r.max_abs;
  if (bootstrapper) {
    if (&bootstrapper->encoder().context() != &encoder.context() || bootstrapper->slots() != slots)
      throw std::invalid_argument("compile: the bootstrapper must work on this context's N/2 slots");
    if (input_level < bootstrapper->input_level() + 1)
      throw std::invalid_argument("compile: with bootstrapping the input needs level >= " +
                                  std::to_string(bootstrapper->input_level() + 1));
  }
  if (half_ring) {
    if (bootstrapper) throw std::invalid_argument("compile: a ring switch and bootstrapping together are not supported");
    if (half_ring->big_fingerprint != encoder.context().params().fingerprint())
      throw std::invalid_argument("compile: the half ring was derived from other parameters than the encoder's");
  }
  Builder b(encoder, mode, scale, bootstrapper, ranges != nullptr, half_ring.get(), g);
  // The nodes computed together with node n: its counterparts in the other patches of its
  // lane group (n alone outside lane groups).
  const auto members = [&](std::size_t n) {
    const int owner = plan.owner.empty() ? -1 : plan.owner[n];
    if (owner < 0) return std::vector<std::size_t>{n};
    const auto p = static_cast<std::size_t>(owner);
    const auto pos = std::find(plan.branch[p].begin(), plan.branch[p].end(), n) - plan.branch[p].begin();
    std::vector<std::size_t> out;
    for (std::size_t q = p; q < std::min(plan.branch.size(), p + plan.lanes); ++q)
      out.push_back(plan.branch[q][static_cast<std::size_t>(pos)]);
    return out;
  };
  const auto range = [&](const std::vector<std::size_t>& ns) {
    double r = 0;
    for (const std::size_t n : ns)
      if (const auto it = range_of.find(nodes[n].name); it != range_of.end()) r = std::max(r, it->second);
    return r;
  };
  std::vector<std::optional<Value>> values(nodes.size());
  if (patches.crop_of.empty())
    values[0] = Value{0, g.input_layout_, graph.input_shape(), input_level, scale, {}, range({0}), 1};
  // A linear node whose only reader is an Add runs one level above the Add's other operand
  // when that one is computed already and agrees with its output.
  const auto lowered = [&](std::size_t n, Value x, const Layout& out) {
    if (consumers[n].size() != 1 || !std::holds_alternative<Add>(nodes[consumers[n][0]].op)) return x;
    const auto& in = nodes[consumers[n][0]].inputs;
    const std::size_t other = in[0] == n ? in[1] : in[0];
    const std::optional<Value>& o = values[other];
    if (other == n || !o || o->half != x.half || !o->multiplier.empty() || !(o->layout == out) || o->level + 1 >= x.level ||
        o->level < b.floor() || !(std::fabs(o->scale - b.scale()) <= 1e-9 * o->scale))
      return x;
    x.level = o->level + 1;
    return x;
  };
  // Rotated copies for a convolution read only by convolutions through one HerPN, unless
  // it reads rotated copies itself (its readers then could not split their offsets over
  // the copies, and a rotated-to-rotated map has diagonals at every offset).
  const auto rotates_output = [&](std::size_t n, const Layout& in) {
    if (in.rotated || consumers[n].size() != 1 || !std::holds_alternative<HerPN>(nodes[consumers[n][0]].op))
      return false;
    const auto& next = consumers[consumers[n][0]];
    return !next.empty() &&
           std::all_of(next.begin(), next.end(), [&](std::size_t c) { return std::holds_alternative<Conv2d>(nodes[c].op); }) &&
           (std::get<Conv2d>(nodes[n].op).stride == 1 || in.replicas > 1);
  };
  for (std::size_t n = 1; n < nodes.size(); ++n) {
    const GraphNode& node = nodes[n];
    const int owner = plan.owner.empty() ? -1 : plan.owner[n];
    if (owner >= 0 && static_cast<std::size_t>(owner) % plan.lanes != 0) continue;  // in its group's lead
    if (grouped && plan.inner_sum[n]) continue;
    const std::vector<std::size_t> group = members(n);
    try {
      if (std::holds_alternative<Crop>(node.op) && owner >= 0) {
        values[n] = Value{static_cast<std::size_t>(owner) / plan.lanes, g.input_layout_, node.shape, input_level, scale,
                          {}, range(group), group.size()};
        continue;
      }
      if (grouped && n == plan.sum_root) {  // the lane groups' sums and the other leaves, pairwise
        std::vector<Value> terms;
        for (const std::size_t leaf : plan.sum_leaves) {
          const int p = plan.owner[leaf];
          if (p < 0) terms.push_back(*values[leaf]);
          else if (static_cast<std::size_t>(p) % plan.lanes == 0) terms.push_back(*values[leaf]);
        }
        for (std::size_t round = 0; terms.size() > 1; ++round) {
          std::vector<Value> next;
          for (std::size_t i = 0; i + 1 < terms.size(); i += 2)
            next.push_back(b.add(terms.size() == 2 ? node.name : node.name + "." + std::to_string(round) + "." +
                                                                     std::to_string(i / 2),
                                 terms[i], terms[i + 1]));
          if (terms.size() % 2) next.push_back(terms.back());
          terms = std::move(next);
        }
        values[n] = terms.front();
        values[n]->max_abs = range({n});
        continue;
      }
      const bool costs_levels = !std::holds_alternative<BatchNorm>(node.op) && !std::holds_alternative<Flatten>(node.op) &&
                                !std::holds_alternative<Scale>(node.op) && !std::holds_alternative<Add>(node.op);
      const Value x = costs_levels ? b.in_ring(node.name, *values[node.inputs[0]]) : *values[node.inputs[0]];
      const auto ops = [&](auto tag) {
        using T = typename decltype(tag)::type;
        std::vector<const T*> out;
        for (const std::size_t m : group) out.push_back(&std::get<T>(nodes[m].op));
        return out;
      };
      const auto spatial = [&](const char* what) {
        if (!(x.layout.shape == x.shape))
          throw std::invalid_argument(std::string("compile: node '") + node.name + "': " + what +
                                      " of a flattened tensor");
      };
      const bool exit = grouped && owner >= 0 && n == plan.exit[static_cast<std::size_t>(owner)];
      // The linear node over `map`'s output layout `out`.
      const auto linear = [&](const Layout& out, auto&& lower) {
        const Value in = lowered(n, x, out);
        return b.linear(node.name, in, lower(in.layout, out), out, node.shape, scale, exit ? 1 : x.members);
      };
      const auto pool = [&](const AvgPool2d& p) {
        spatial("pooling");
        return linear(pool_output_layout(p, x.layout),
                      [&](const Layout& in, const Layout& o) { return lower_avg_pool(p, in, o); });
      };
      values[n] = std::visit(
          Overloaded{
              [&](const GraphInput&) -> Value { throw std::logic_error("second graph input"); },
              [&](const Crop&) -> Value {
                throw std::invalid_argument("a Crop of a computed value is not supported encrypted (crops of the "
                                            "model input are its patches)");
              },
              [&](const Conv2d&) {
                spatial("Conv2d");
                Layout out = linear_output_layout(node, x.layout, x.layout.lanes);
                if (rotates_output(n, x.layout)) out = with_rotated_replicas(out);
                std::vector<Conv2d> convs;
                for (const Conv2d* c : ops(std::type_identity<Conv2d>{})) convs.push_back(*c);
                return linear(out, [&](const Layout& in, const Layout& o) { return lower_conv(convs, in, o); });
              },
              [&](const BatchNorm&) { return b.batch_norm(node.name, x, ops(std::type_identity<BatchNorm>{})); },
              [&](const AvgPool2d& p) { return pool(p); },
              [&](const AdaptiveAvgPool2d& p) {
                const std::size_t bh = x.shape.height / p.output_size, bw = x.shape.width / p.output_size;
                if (bh != bw) throw std::invalid_argument("adaptive pooling with non-square blocks is not supported encrypted");
                return pool(AvgPool2d{bh, bh});
              },
              [&](const Flatten&) {
                Value y = x;
                y.shape = node.shape;
                return y;
              },
              [&](const Linear&) {
                const Layout out = linear_output_layout(node, x.layout, exit ? 1 : x.layout.lanes);
                std::vector<Linear> layers;
                for (const Linear* l : ops(std::type_identity<Linear>{})) layers.push_back(*l);
                return linear(out, [&](const Layout& in, const Layout& o) { return lower_linear(layers, in, o); });
              },
              [&](const Add&) { return b.add(node.name, x, *values[node.inputs[1]]); },
              [&](const Scale&) {
                Value y = x;
                y.multiplier = multiplier_of(x);
                const std::size_t size = x.shape.size();
                const auto scales = ops(std::type_identity<Scale>{});
                for (std::size_t e = 0; e < y.multiplier.size(); ++e) y.multiplier[e] *= scales[e / size]->factor;
                return y;
              },
              [&](const HerPN&) { return b.herpn(node.name, x, ops(std::type_identity<HerPN>{})); },
              [&](const PolynomialActivation& p) { return b.polynomial(node.name, x, p); },
              [&](const L2Normalize& l2) { return b.normalize(node.name, x, l2); },
          },
          node.op);
      values[n]->max_abs = range(group);
    } catch (const std::invalid_argument& e) {
      const std::string what = e.what();
      if (what.find("compile: node") == 0) throw;
      throw std::invalid_argument("compile: node '" + node.name + "' (" + op_name(node.op) + "): " + what);
    }
  }
  if (!values.back()) throw std::logic_error("compile: the output node was not computed");
  const Value out = b.materialize(nodes.back().name + ".multiplier", *values.back());
  if (out.members != 1 || out.layout.lanes != 1)
    throw std::invalid_argument("compile: the output is still spread over lanes");
  if (g.bootstraps() > 0) g.bootstrapper_ = bootstrapper;
  if (out.half) g.half_ring_ = std::move(half_ring);
  else if (half_ring) throw std::invalid_argument("compile: no value reached the ring switch's level " +
                                                  std::to_string(half_ring->choice.level) + " with a layout to switch");
  g.output_value_ = out.index;
  g.output_layout_ = out.layout;
  g.output_shape_ = out.shape;
  g.output_level_ = out.level;
  g.output_scale_ = out.scale;
  if (mode == Compilation::kFull) {
    std::vector<CompiledLinear*> layers;
    for (Step& s : g.steps_)
      if (auto* l = std::get_if<CompiledLinear>(&s.op)) layers.push_back(l);
    pre_encode_within_budget(layers, plaintext_budget);
  }
  g.find_parallel_regions();
  return g;
}

std::vector<std::vector<double>> CompiledGraph::pack_inputs(const Tensor& x) const {
  expect_shape(x, input_shape_, "compiled graph input");
  if (grid_ == 1 && input_layout_.shape == input_shape_ && inputs_ == 1 && input_layout_.lanes == 1)
    return {pack(x, input_layout_)};
  const Shape& patch = input_layout_.shape;
  std::vector<std::vector<double>> out;
  const std::size_t count = grid_ * grid_, lanes = input_layout_.lanes;
  for (std::size_t first = 0; first < count; first += lanes) {
    std::vector<Tensor> group;
    for (std::size_t p = first; p < std::min(count, first + lanes); ++p)
      group.push_back(Crop{p / grid_ * patch.height, p % grid_ * patch.width, patch.height, patch.width}.forward(x));
    out.push_back(pack_lanes(group, input_layout_));
  }
  return out;
}

ckks::Ciphertext CompiledGraph::match(const ckks::Evaluator& eval, const ckks::Ciphertext& probe,
                                      const ckks::Ciphertext& enrolled, double threshold) const {
  if (!embeds()) throw std::invalid_argument("match: the model's output is not a normalised embedding");
  return match_embeddings(eval, probe, enrolled, threshold, output_layout_.span());
}

Tensor CompiledGraph::unpack_output(const std::vector<double>& slots) const {
  Tensor t = unpack(slots, output_layout_);
  t.shape = output_shape_;
  return t;
}

namespace {

// Rotation keys of the steps in one ring.
std::map<long, std::size_t> ring_rotation_levels(const std::vector<CompiledGraph::Step>& steps, bool half) {
  std::vector<const CompiledLinear*> layers;
  for (const auto& s : steps)
    if (const auto* l = std::get_if<CompiledLinear>(&s.op); l && s.half == half) layers.push_back(l);
  std::map<long, std::size_t> levels = rotation_levels(layers);
  for (const auto& s : steps)
    if (const auto* n = std::get_if<CompiledGraph::Normalize>(&s.op); n && s.half == half)
      for (std::size_t step = 1; step < n->span; step <<= 1)
        levels[static_cast<long>(step)] = std::max(levels[static_cast<long>(step)], n->input_level - 1);
  return levels;
}

}  // namespace

std::map<long, std::size_t> CompiledGraph::half_ring_rotation_levels() const { return ring_rotation_levels(steps_, true); }

std::map<long, std::size_t> CompiledGraph::rotation_levels() const {
  std::map<long, std::size_t> levels = ring_rotation_levels(steps_, false);
  if (bootstrapper_)
    for (const auto& [step, level] : bootstrapper_->rotation_levels()) levels[step] = std::max(levels[step], level);
  return levels;
}

std::size_t CompiledGraph::bootstraps() const {
  return static_cast<std::size_t>(
      std::count_if(steps_.begin(), steps_.end(), [](const Step& s) { return std::holds_alternative<Bootstrap>(s.op); }));
}

std::size_t CompiledGraph::plaintext_bytes() const {
  std::size_t bytes = 0;
  for (const Step& s : steps_)
    if (const auto* l = std::get_if<CompiledLinear>(&s.op)) bytes += l->transform.plaintext_bytes();
  return bytes;
}

namespace {

void check_scale(double got, double want, const std::string& where) {
  if (!(std::fabs(got - want) <= 1e-9 * want))
    throw std::invalid_argument(where + ": ciphertext scale differs from the compiled scale");
}

ckks::Ciphertext normalize(const ckks::Evaluator& eval, const std::string& name, const CompiledGraph::Normalize& n,
                           const ckks::Ciphertext& x) {
  if (x.level() != n.input_level) throw std::invalid_argument(name + ": input level mismatch");
  check_scale(x.scale, n.input_scale, name);
  ckks::Ciphertext sum = eval.square_relin(x);
  eval.rescale_inplace(sum);
  sum = sum_over_span(eval, std::move(sum), n.span);
  // p lands where the product with x rescales onto output_scale.
  const std::size_t factor_level = n.input_level - 1 - n.polynomial.depth();
  const double target = n.output_scale * prime_at(eval.context(), factor_level) / x.scale;
  const ckks::Ciphertext factor = ckks::evaluate_polynomial(eval, sum, n.polynomial, target);
  ckks::Ciphertext y = x;
  eval.drop_to_level_inplace(y, factor.level());
  ckks::Ciphertext out = eval.multiply_relin(y, factor);
  eval.rescale_inplace(out);
  return out;
}

// The keys a run was given besides the big ring's evaluator.
struct RunKeys {
  const ckks::Bootstrapper* bootstrapper;
  const ckks::EncapsulationKeys* encapsulation;
  const HalfRingEvaluation* half;
};

ckks::Ciphertext apply_step(const ckks::Evaluator& big, const CompiledGraph::Step& step,
                            const std::vector<const ckks::Ciphertext*>& in, const RunKeys& keys) {
  if (step.half && !keys.half)
    throw std::invalid_argument("compiled graph: it switches rings; run it with the half ring's keys");
  const ckks::Evaluator& eval =
      step.half && !std::holds_alternative<CompiledGraph::RingSwitch>(step.op) ? keys.half->evaluator : big;
  const ckks::Bootstrapper* bootstrapper = keys.bootstrapper;
  const ckks::EncapsulationKeys* encapsulation = keys.encapsulation;
  return std::visit(
      Overloaded{
          [&](const CompiledLinear& l) { return l.apply(eval, *in[0]); },
          [&](const CompiledQuadratic& q) { return q.apply(eval, *in[0]); },
          [&](const CompiledGraph::Shift& s) {
            ckks::Ciphertext y = *in[0];
            eval.add_plain_inplace(y, s.shift);
            return y;
          },
          [&](const CompiledGraph::Poly& p) {
            if (in[0]->level() != p.input_level) throw std::invalid_argument(step.name + ": input level mismatch");
            check_scale(in[0]->scale, p.input_scale, step.name);
            return ckks::evaluate_polynomial(eval, *in[0], p.polynomial, p.output_scale);
          },
          [&](const CompiledGraph::Sum& s) {
            ckks::Ciphertext a = *in[0], b = *in[1];
            eval.drop_to_level_inplace(a, s.level);
            eval.drop_to_level_inplace(b, s.level);
            check_scale(a.scale, b.scale, step.name);
            b.scale = a.scale;  // equal within 1e-9 (checked)
            eval.add_inplace(a, b);
            return a;
          },
          [&](const CompiledGraph::Bootstrap& b) {
            if (in[0]->level() != b.input_level) throw std::invalid_argument(step.name + ": input level mismatch");
            check_scale(in[0]->scale, b.input_scale, step.name);
            return bootstrapper->bootstrap(eval, *in[0], encapsulation);
          },
          [&](const CompiledGraph::Normalize& n) { return normalize(eval, step.name, n, *in[0]); },
          [&](const CompiledGraph::RingSwitch&) {
            return ckks::switch_to_half_ring(keys.half->switch_context, keys.half->evaluator.context(),
                                             keys.half->switch_key, *in[0]);
          },
      },
      step.op);
}

// One step on the values `value_of` gives for its inputs, timed when `timings` is given.
template <typename ValueOf>
ckks::Ciphertext timed_step(const ckks::Evaluator& eval, const CompiledGraph::Step& step, ValueOf&& value_of,
                            const RunKeys& keys, std::vector<CompiledGraph::StepTiming>* timings) {
  std::vector<const ckks::Ciphertext*> in;
  for (const std::size_t v : step.inputs) in.push_back(&value_of(v));
  const auto start = std::chrono::steady_clock::now();
  ckks::Ciphertext out = apply_step(eval, step, in, keys);
  if (timings)
    timings->push_back({step.name, in[0]->level(),
                        std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count()});
  return out;
}

}  // namespace

ckks::Ciphertext CompiledGraph::run(const ckks::Evaluator& eval, const std::vector<ckks::Ciphertext>& inputs,
                                    std::vector<StepTiming>* timings, const ckks::EncapsulationKeys* encapsulation,
                                    const RegionRunner& runner, const HalfRingEvaluation* half) const {
  if (plan_) throw std::logic_error("compiled graph: a plan (rotation keys and layouts only) cannot run");
  if (inputs.size() != inputs_)
    throw std::invalid_argument("compiled graph: " + std::to_string(inputs.size()) + " input ciphertexts, needs " +
                                std::to_string(inputs_));
  for (const ckks::Ciphertext& input : inputs) {
    if (input.level() < input_level_)
      throw std::invalid_argument("compiled graph: input at level " + std::to_string(input.level()) + ", needs " +
                                  std::to_string(input_level_));
    if (input.slots() != input_layout_.slots) throw std::invalid_argument("compiled graph: input slot count mismatch");
    check_scale(input.scale, input_scale_, "compiled graph input");
  }
  // Values are freed after their last use.
  std::vector<std::size_t> uses(inputs_ + steps_.size(), 0);
  for (const Unit& u : order_) {
    if (u.region)
      for (const Branch& b : regions_[u.index].branches) ++uses[b.entry];
    else
      for (const std::size_t v : steps_[u.index].inputs) ++uses[v];
  }
  ++uses[output_value_];
  std::vector<ckks::Ciphertext> values(inputs_ + steps_.size());
  for (std::size_t k = 0; k < inputs_; ++k) {
    values[k] = inputs[k];
    eval.drop_to_level_inplace(values[k], input_level_);
  }
  const auto release = [&](std::size_t v) {
    if (--uses[v] == 0) values[v] = {};
  };
  for (const Unit& u : order_) {
    if (u.region) {
      const std::vector<Branch>& branches = regions_[u.index].branches;
      std::vector<ckks::Ciphertext> exits;
      if (runner) {
        std::vector<ckks::Ciphertext> entries;
        for (const Branch& b : branches) entries.push_back(values[b.entry]);
        exits = runner(u.index, entries);
        if (exits.size() != branches.size()) throw std::logic_error("compiled graph: a region runner lost a branch");
      } else {
        for (std::size_t b = 0; b < branches.size(); ++b)
          exits.push_back(run_branch(eval, u.index, b, values[branches[b].entry], timings, encapsulation, half));
      }
      for (std::size_t b = 0; b < branches.size(); ++b) values[branches[b].exit] = std::move(exits[b]);
      for (const Branch& b : branches) release(b.entry);
      continue;
    }
    const Step& step = steps_[u.index];
    values[inputs_ + u.index] = timed_step(
        eval, step, [&](std::size_t v) -> const ckks::Ciphertext& { return values[v]; },
        {bootstrapper_, encapsulation, half}, timings);
    for (const std::size_t v : step.inputs) release(v);
  }
  return values[output_value_];
}

ckks::Ciphertext CompiledGraph::run_branch(const ckks::Evaluator& eval, std::size_t region, std::size_t branch,
                                           const ckks::Ciphertext& entry, std::vector<StepTiming>* timings,
                                           const ckks::EncapsulationKeys* encapsulation,
                                           const HalfRingEvaluation* half) const {
  if (plan_) throw std::logic_error("compiled graph: a plan (rotation keys and layouts only) cannot run");
  if (region >= regions_.size() || branch >= regions_[region].branches.size())
    throw std::out_of_range("compiled graph: no branch " + std::to_string(branch) + " in region " +
                            std::to_string(region));
  const Branch& br = regions_[region].branches[branch];
  if (br.entry < inputs_ && entry.slots() != input_layout_.slots)
    throw std::invalid_argument("compiled graph: branch input slot count mismatch");
  std::map<std::size_t, ckks::Ciphertext> values;  // by value index
  std::map<std::size_t, std::size_t> uses;
  for (const std::size_t s : br.steps)
    for (const std::size_t v : steps_[s].inputs) ++uses[v];
  values[br.entry] = entry;
  for (const std::size_t s : br.steps) {
    const Step& step = steps_[s];
    ckks::Ciphertext out = timed_step(
        eval, step, [&](std::size_t v) -> const ckks::Ciphertext& { return values.at(v); },
        RunKeys{bootstrapper_, encapsulation, half}, timings);
    for (const std::size_t v : step.inputs)
      if (--uses[v] == 0) values.erase(v);
    values[inputs_ + s] = std::move(out);
  }
  return std::move(values.at(br.exit));
}

namespace {

// Steps costing a level that make a branch worth a task of its own: a lone alignment or
// 1x1 shortcut beside a residual block is not (moving it would cost more than it runs).
constexpr std::size_t kBranchWork = 2;

bool costs_a_level(const CompiledGraph::StepOp& op) {
  return !std::holds_alternative<CompiledGraph::Shift>(op) && !std::holds_alternative<CompiledGraph::Sum>(op) &&
         !std::holds_alternative<CompiledGraph::RingSwitch>(op);
}

}  // namespace

// Sum trees are visited from the last step back, so a region inside a branch of a later
// one is claimed by the outer region first and left alone.
void CompiledGraph::find_parallel_regions() {
  regions_.clear();
  const std::size_t count = steps_.size();
  std::vector<std::vector<std::size_t>> consumers(inputs_ + count);
  for (std::size_t s = 0; s < count; ++s)
    for (const std::size_t v : steps_[s].inputs) consumers[v].push_back(s);
  const auto is_sum = [&](std::size_t s) { return std::holds_alternative<Sum>(steps_[s].op); };
  // A sum feeding only another sum is inside that sum's tree.
  const auto inner_sum = [&](std::size_t v) {
    return step_of(v) && is_sum(*step_of(v)) && consumers[v].size() == 1 && is_sum(consumers[v][0]);
  };
  std::vector<int> claimed(count, -1);
  for (std::size_t root = count; root-- > 0;) {
    if (!is_sum(root) || claimed[root] >= 0 || inner_sum(inputs_ + root)) continue;
    std::vector<bool> in_tree(count, false);
    std::vector<std::size_t> leaves, stack{root};
    while (!stack.empty()) {
      const std::size_t t = stack.back();
      stack.pop_back();
      in_tree[t] = true;
      for (const std::size_t v : steps_[t].inputs) {
        if (inner_sum(v) && claimed[*step_of(v)] < 0) stack.push_back(*step_of(v));
        else leaves.push_back(v);
      }
    }
    // Steps each leaf depends on, and how many leaves depend on each step.
    std::vector<std::vector<bool>> ancestors(leaves.size(), std::vector<bool>(count, false));
    std::vector<std::size_t> shared(count, 0);
    for (std::size_t k = 0; k < leaves.size(); ++k) {
      std::vector<std::size_t> todo;
      if (const auto s = step_of(leaves[k])) todo.push_back(*s);
      while (!todo.empty()) {
        const std::size_t s = todo.back();
        todo.pop_back();
        if (ancestors[k][s]) continue;
        ancestors[k][s] = true;
        ++shared[s];
        for (const std::size_t v : steps_[s].inputs)
          if (const auto t = step_of(v)) todo.push_back(*t);
      }
    }
    ParallelRegion region;
    for (std::size_t k = 0; k < leaves.size(); ++k) {
      Branch b;
      b.exit = leaves[k];
      for (std::size_t s = 0; s < count; ++s)
        if (ancestors[k][s] && shared[s] == 1) b.steps.push_back(s);
      std::vector<bool> mine(count, false);
      for (const std::size_t s : b.steps) mine[s] = true;
      bool valid = !b.steps.empty() && consumers[b.exit].size() == 1 && in_tree[consumers[b.exit][0]];
      std::size_t work = 0;
      std::set<std::size_t> entries;
      for (const std::size_t s : b.steps) {
        valid = valid && claimed[s] < 0;
        work += costs_a_level(steps_[s].op) ? 1 : 0;
        for (const std::size_t v : steps_[s].inputs)
          if (!step_of(v) || !mine[*step_of(v)]) entries.insert(v);
        if (inputs_ + s != b.exit)
          for (const std::size_t c : consumers[inputs_ + s]) valid = valid && mine[c];
      }
      if (!valid || work < kBranchWork || entries.size() != 1) continue;
      b.entry = *entries.begin();
      region.branches.push_back(std::move(b));
    }
    if (region.branches.size() < 2) continue;
    for (const Branch& b : region.branches)
      for (const std::size_t s : b.steps) claimed[s] = static_cast<int>(regions_.size());
    regions_.push_back(std::move(region));
  }
  std::reverse(regions_.begin(), regions_.end());  // in step order
  order_units();
}

// A topological order of the units (Kahn's algorithm, earliest step first): a region runs
// once every entry of its branches exists.
void CompiledGraph::order_units() {
  const std::size_t count = steps_.size();
  std::vector<int> region_of(count, -1);
  for (std::size_t r = 0; r < regions_.size(); ++r)
    for (const Branch& b : regions_[r].branches)
      for (const std::size_t s : b.steps) region_of[s] = static_cast<int>(r);
  // Units: step s is unit s (when outside every branch), region r is unit count + r.
  const auto unit_of_value = [&](std::size_t v) -> std::optional<std::size_t> {
    const auto s = step_of(v);
    if (!s) return std::nullopt;
    return region_of[*s] >= 0 ? count + static_cast<std::size_t>(region_of[*s]) : *s;
  };
  std::vector<std::vector<std::size_t>> dependents(count + regions_.size());
  std::vector<std::size_t> pending(count + regions_.size(), 0), key(count + regions_.size(), 0);
  std::vector<bool> exists(count + regions_.size(), false);
  const auto depend = [&](std::size_t unit, std::size_t v) {
    const auto from = unit_of_value(v);
    if (!from || *from == unit) return;
    dependents[*from].push_back(unit);
    ++pending[unit];
  };
  for (std::size_t s = 0; s < count; ++s) {
    if (region_of[s] >= 0) continue;
    exists[s] = true;
    key[s] = s;
    for (const std::size_t v : steps_[s].inputs) depend(s, v);
  }
  for (std::size_t r = 0; r < regions_.size(); ++r) {
    exists[count + r] = true;
    key[count + r] = regions_[r].branches.front().steps.front();
    for (const Branch& b : regions_[r].branches) depend(count + r, b.entry);
  }
  using Entry = std::pair<std::size_t, std::size_t>;  // (key, unit)
  std::priority_queue<Entry, std::vector<Entry>, std::greater<>> ready;
  for (std::size_t u = 0; u < exists.size(); ++u)
    if (exists[u] && pending[u] == 0) ready.push({key[u], u});
  order_.clear();
  while (!ready.empty()) {
    const std::size_t u = ready.top().second;
    ready.pop();
    order_.push_back(u < count ? Unit{false, u} : Unit{true, u - count});
    for (const std::size_t d : dependents[u])
      if (--pending[d] == 0) ready.push({key[d], d});
  }
  const auto units = static_cast<std::size_t>(std::count(exists.begin(), exists.end(), true));
  if (order_.size() != units) throw std::logic_error("compiled graph: parallel regions form a cycle");
}

namespace {

enum class StepKind : std::uint8_t {
  kLinear = 0,
  kQuadratic = 1,
  kShift = 2,
  kPoly = 3,
  kSum = 4,
  kBootstrap = 5,
  kNormalize = 6,
  kRingSwitch = 7
};

void put_coeffs(ckks::ByteWriter& w, const std::vector<double>& coeffs) {
  w.put<std::uint64_t>(coeffs.size());
  for (const double c : coeffs) w.put<double>(c);
}

std::vector<double> get_coeffs(ckks::ByteReader& r, const char* what) {
  std::vector<double> coeffs(r.get_count(what, 1 << 12));
  for (double& c : coeffs) c = r.get<double>(what);
  return coeffs;
}

bool finite(const std::vector<double>& v) {
  return std::all_of(v.begin(), v.end(), [](double c) { return std::isfinite(c); });
}

}  // namespace

ckks::Bytes CompiledGraph::save() const {
  ckks::Bytes out;
  save([&](std::span<const std::uint8_t> piece) { out.insert(out.end(), piece.begin(), piece.end()); });
  return out;
}

void CompiledGraph::save_file(const std::string& path) const {
  ckks::FileWriter f(path);
  save([&](std::span<const std::uint8_t> piece) { f.write(piece); });
  f.commit();
}

void CompiledGraph::save(const ckks::ByteWriter::Sink& sink) const {
  if (plan_) throw std::logic_error("compiled graph: a plan (rotation keys and layouts only) cannot be saved");
  const ckks::Context& ctx = encoder_->context();
  ckks::ByteWriter w(sink);
  w.put_bytes(reinterpret_cast<const std::uint8_t*>(kGraphMagic), 4);
  w.put<std::uint32_t>(kGraphVersion);
  w.put<std::uint64_t>(ctx.params().fingerprint());
  save_ring_switch(w, half_ring_.get());
  w.put<std::uint64_t>(input_level_);
  w.put<double>(input_scale_);
  save_layout(w, input_layout_);
  for (std::size_t v : {input_shape_.channels, input_shape_.height, input_shape_.width, grid_}) w.put<std::uint64_t>(v);
  w.put<std::uint64_t>(steps_.size());
  for (const Step& s : steps_) {
    w.put<std::uint64_t>(s.name.size());
    w.put_bytes(reinterpret_cast<const std::uint8_t*>(s.name.data()), s.name.size());
    w.put<std::uint64_t>(s.inputs.size());
    for (const std::size_t i : s.inputs) w.put<std::uint64_t>(i);
    w.put<std::uint8_t>(static_cast<std::uint8_t>(s.op.index()));
    w.put<std::uint8_t>(s.half ? 1 : 0);
    const ckks::Context& ring = s.half ? half_ring_->context : ctx;
    std::visit(Overloaded{
                   [&](const CompiledLinear& l) { save_linear(w, ring, l); },
                   [&](const CompiledQuadratic& q) { save_quadratic(w, ring, q); },
                   [&](const Shift& sh) { w.put_blob(ckks::save(ring, sh.shift)); },
                   [&](const Poly& p) {
                     w.put<std::uint64_t>(p.input_level);
                     w.put<double>(p.input_scale);
                     w.put<double>(p.output_scale);
                     put_coeffs(w, p.polynomial.coeffs);
                   },
                   [&](const Sum& sum) { w.put<std::uint64_t>(sum.level); },
                   [&](const Bootstrap& b) {
                     w.put<std::uint64_t>(b.input_level);
                     w.put<double>(b.input_scale);
                     w.put<std::uint64_t>(bootstrapper_->output_level());
                     w.put<std::uint64_t>(bootstrapper_->slots());
                   },
                   [&](const Normalize& n) {
                     w.put<std::uint64_t>(n.input_level);
                     w.put<std::uint64_t>(n.span);
                     w.put<double>(n.input_scale);
                     w.put<double>(n.output_scale);
                     put_coeffs(w, n.polynomial.coeffs);
                   },
                   [&](const RingSwitch&) {},
               },
               s.op);
    w.align(8);  // keeps just-in-time coefficients 8-aligned for in-place use
  }
  w.put<std::uint64_t>(output_value_);
  for (std::size_t v : {output_shape_.channels, output_shape_.height, output_shape_.width}) w.put<std::uint64_t>(v);
  w.flush();
}

bool CompiledGraph::has_magic(std::span<const std::uint8_t> bytes) {
  return bytes.size() >= 4 && std::equal(bytes.begin(), bytes.begin() + 4, kGraphMagic);
}

CompiledGraph CompiledGraph::load(const ckks::Encoder& encoder, std::span<const std::uint8_t> bytes,
                                  const std::shared_ptr<const ckks::Backing>& backing,
                                  const ckks::Bootstrapper* bootstrapper) {
  const char* what = "compiled graph";
  const ckks::Context& ctx = encoder.context();
  const std::size_t slots = ctx.n() / 2;
  ckks::ByteReader r(bytes);
  r.expect_magic_and_version(kGraphMagic, kGraphVersion, what);
  if (r.get<std::uint64_t>(what) != ctx.params().fingerprint())
    throw ckks::SerializationError("compiled graph was made for other parameters (fingerprint mismatch)");
  CompiledGraph g;
  g.encoder_ = &encoder;
  g.half_ring_ = load_ring_switch(ctx.params(), r, what);
  g.input_level_ = r.get_count(what, ctx.max_level());
  g.input_scale_ = r.get<double>(what);
  if (!(g.input_scale_ > 0) || !std::isfinite(g.input_scale_)) throw ckks::SerializationError("compiled graph: bad scale");
  g.input_layout_ = load_layout(r, slots);
  g.input_shape_.channels = r.get_count(what, slots);
  g.input_shape_.height = r.get_count(what, slots);
  g.input_shape_.width = r.get_count(what, slots);
  g.grid_ = r.get_count(what, 64);
  const Shape& patch = g.input_layout_.shape;
  if (g.grid_ == 0 || !(g.input_shape_ == Shape{patch.channels, g.grid_ * patch.height, g.grid_ * patch.width}))
    throw ckks::SerializationError("compiled graph: the input shape is not its grid of patches");
  g.inputs_ = (g.grid_ * g.grid_ + g.input_layout_.lanes - 1) / g.input_layout_.lanes;
  // Levels and layouts of every value, to check each step against its inputs.
  std::vector<std::size_t> level(g.inputs_, g.input_level_);
  std::vector<Layout> layout(g.inputs_, g.input_layout_);
  std::vector<double> scale(g.inputs_, g.input_scale_);
  std::vector<bool> half(g.inputs_, false);
  const std::size_t count = r.get_count(what, 1 << 20);
  for (std::size_t i = 0; i < count; ++i) {
    Step s{{}, {}, Sum{}};  // the op is read below
    const auto name = r.get_view(r.get_count(what, 4096), what);
    s.name.assign(name.begin(), name.end());
    s.inputs.resize(r.get_count(what, 2));
    for (std::size_t& v : s.inputs) v = r.get_count(what, g.inputs_ + i - 1);  // an earlier value
    const auto kind = static_cast<StepKind>(r.get<std::uint8_t>(what));
    const std::size_t arity = kind == StepKind::kSum ? 2 : 1;
    if (s.inputs.size() != arity) throw ckks::SerializationError("compiled graph: wrong input count for a step");
    const auto ring = r.get<std::uint8_t>(what);
    s.half = ring == 1;
    const bool switches = kind == StepKind::kRingSwitch;
    if (ring > 1 || (s.half && !g.half_ring_) || (switches && !s.half))
      throw ckks::SerializationError("compiled graph: a step in a ring it does not have");
    for (const std::size_t v : s.inputs)
      if (half[v] != (s.half && !switches)) throw ckks::SerializationError("compiled graph: a step reads another ring");
    const ckks::Encoder& enc = s.half ? g.half_ring_->encoder : encoder;
    const ckks::Context& ring_ctx = enc.context();
    const std::size_t in_level = level[s.inputs[0]];
    std::size_t out_level = 0;
    Layout out_layout = layout[s.inputs[0]];
    double out_scale = scale[s.inputs[0]];
    switch (kind) {
      case StepKind::kLinear: {
        CompiledLinear l = load_linear(enc, r, backing);
        if (l.input_level > in_level || !(l.in == layout[s.inputs[0]]))
          throw ckks::SerializationError("compiled graph: linear step does not fit its input");
        out_level = l.input_level - 1;
        out_layout = l.out;
        out_scale = l.output_scale;
        s.op = std::move(l);
        break;
      }
      case StepKind::kQuadratic: {
        CompiledQuadratic q = load_quadratic(ring_ctx, r);
        if (q.input_level != in_level) throw ckks::SerializationError("compiled graph: quadratic level mismatch");
        out_level = in_level - 1;
        out_scale = q.output_scale;
        s.op = std::move(q);
        break;
      }
      case StepKind::kShift: {
        Shift sh{ckks::load_plaintext(ring_ctx, r.get_blob(what))};
        if (sh.shift.level() != in_level) throw ckks::SerializationError("compiled graph: shift level mismatch");
        out_level = in_level;
        s.op = std::move(sh);
        break;
      }
      case StepKind::kPoly: {
        Poly p;
        p.input_level = r.get_count(what, ctx.max_level());
        p.input_scale = r.get<double>(what);
        p.output_scale = r.get<double>(what);
        p.polynomial.coeffs = get_coeffs(r, what);
        if (p.input_level != in_level || !finite(p.polynomial.coeffs) || p.polynomial.degree() == 0 ||
            p.polynomial.depth() > p.input_level || !(p.input_scale > 0) || !(p.output_scale > 0))
          throw ckks::SerializationError("compiled graph: malformed polynomial step");
        out_level = in_level - p.polynomial.depth();
        out_scale = p.output_scale;
        s.op = std::move(p);
        break;
      }
      case StepKind::kSum: {
        const Sum sum{r.get_count(what, ctx.max_level())};
        if (sum.level > std::min(in_level, level[s.inputs[1]]) || !(layout[s.inputs[1]] == out_layout))
          throw ckks::SerializationError("compiled graph: sum of values that do not agree");
        out_level = sum.level;
        s.op = sum;
        break;
      }
      case StepKind::kBootstrap: {
        Bootstrap b;
        b.input_level = r.get_count(what, ctx.max_level());
        b.input_scale = r.get<double>(what);
        const std::size_t output_level = r.get_count(what, ctx.max_level());
        const std::size_t boot_slots = r.get_count(what, slots);
        if (!bootstrapper)
          throw ckks::SerializationError("compiled graph: it bootstraps; load it with its bootstrapper");
        if (s.half) throw ckks::SerializationError("compiled graph: a bootstrap in the half ring");
        if (&bootstrapper->encoder().context() != &ctx || output_level != bootstrapper->output_level() ||
            boot_slots != bootstrapper->slots())
          throw ckks::SerializationError("compiled graph: made with another bootstrapper");
        if (b.input_level != in_level || b.input_level < bootstrapper->input_level() || !(b.input_scale > 0) ||
            !std::isfinite(b.input_scale))
          throw ckks::SerializationError("compiled graph: malformed bootstrap step");
        out_level = output_level;
        out_scale = bootstrapper->config().output_scale;
        g.bootstrapper_ = bootstrapper;
        s.op = b;
        break;
      }
      case StepKind::kNormalize: {
        Normalize n;
        n.input_level = r.get_count(what, ctx.max_level());
        n.span = r.get_count(what, slots);
        n.input_scale = r.get<double>(what);
        n.output_scale = r.get<double>(what);
        n.polynomial.coeffs = get_coeffs(r, what);
        const Layout& in = layout[s.inputs[0]];
        if (n.input_level != in_level || !finite(n.polynomial.coeffs) || n.polynomial.degree() == 0 ||
            n.depth() > n.input_level || in.lanes != 1 || in.rotated || !in.cyclic() || n.span != in.span() ||
            !(n.input_scale > 0) || !(n.output_scale > 0) || !std::isfinite(n.input_scale) ||
            !std::isfinite(n.output_scale))
          throw ckks::SerializationError("compiled graph: malformed normalisation step");
        out_level = in_level - n.depth();
        out_scale = n.output_scale;
        s.op = std::move(n);
        break;
      }
      case StepKind::kRingSwitch: {
        const std::size_t top = g.half_ring_->choice.level;
        out_layout.slots /= 2;
        out_layout.replicas /= 2;
        const Layout& in = layout[s.inputs[0]];
        if (in_level < top || in.rotated || !in.cyclic() || in.replicas < 2)
          throw ckks::SerializationError("compiled graph: a ring switch of a value that cannot switch");
        out_level = top;
        s.op = RingSwitch{};
        break;
      }
      default:
        throw ckks::SerializationError("compiled graph: unknown step kind");
    }
    r.align(8, what);
    level.push_back(out_level);
    layout.push_back(out_layout);
    scale.push_back(out_scale);
    half.push_back(s.half);
    g.steps_.push_back(std::move(s));
  }
  g.output_value_ = r.get_count(what, g.inputs_ + count - 1);
  g.output_level_ = level[g.output_value_];
  g.output_layout_ = layout[g.output_value_];
  g.output_scale_ = scale[g.output_value_];
  if (static_cast<bool>(g.half_ring_) != half[g.output_value_])
    throw ckks::SerializationError("compiled graph: its output is not in the ring it switches to");
  g.output_shape_.channels = r.get_count(what, slots);
  g.output_shape_.height = r.get_count(what, slots);
  g.output_shape_.width = r.get_count(what, slots);
  r.expect_end(what);
  if (g.output_shape_.size() != g.output_layout_.shape.size())
    throw ckks::SerializationError("compiled graph: output shape does not match its layout");
  g.find_parallel_regions();
  return g;
}

}  // namespace pfhe::nn
