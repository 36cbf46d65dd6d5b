#include "nn/compiled_graph.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <iterator>
#include <optional>
#include <stdexcept>
#include <string>

#include "ckks/ring_switch.h"
#include "ckks/serialization.h"
#include "nn/bootstrap_placement.h"
#include "nn/graph_passes.h"
#include "nn/lane_plan.h"
#include "nn/overloaded.h"

namespace pfhe::nn {

namespace {

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
  // What its level comes from: 0 the graph's input, k the k-th bootstrap (sorted; a sum
  // has both operands'). Lowering an origin's level lowers this value's by at most as much.
  std::vector<std::size_t> origins{0};
};

std::vector<std::size_t> both_origins(const Value& a, const Value& b) {
  std::vector<std::size_t> out;
  std::set_union(a.origins.begin(), a.origins.end(), b.origins.begin(), b.origins.end(), std::back_inserter(out));
  return out;
}

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

using LazyMap = std::function<SlotLinearMap(Lowered)>;

}  // namespace

class CompiledGraph::Builder {
 public:
  // `drops`: levels each bootstrap's output is dropped by (by origin, Value::origins; none
  // past the end).
  Builder(const ckks::Encoder& enc, LoweringOf lowering_of, double scale, const ckks::Bootstrapper* bootstrapper,
          bool have_ranges, const HalfRing* half, std::vector<std::size_t> drops, CompiledGraph& out)
      : enc_(enc), lowering_of_(std::move(lowering_of)), scale_(scale), boot_(bootstrapper), have_ranges_(have_ranges),
        half_(half), drops_(std::move(drops)), out_(out) {}

  // Per origin (Value::origins), the fewest levels any of its values had above what the
  // placement needed of it: by that many the origin's level can drop with every bootstrap
  // where it is (SIZE_MAX: no value of it was needed anywhere).
  const std::vector<std::size_t>& slack() const { return slack_; }
  // A value that must keep `level` - `margin` levels or more for the placement to stand.
  void note_margin(const Value& v, std::size_t margin) {
    for (const std::size_t o : v.origins) {
      if (slack_.size() <= o) slack_.resize(o + 1, SIZE_MAX);
      slack_[o] = std::min(slack_[o], margin);
    }
  }

  // Lowest level a value may keep before its next node (with a bootstrapper: one above
  // its input level, for the scaling into EvalMod's domain).
  std::size_t floor() const { return boot_ ? boot_->input_level() + 1 : 0; }
  double scale() const { return scale_; }

  // A linear node: folds v's multiplier into the map, lands on target_scale one level
  // down; the result holds `members` tensors (1 when the map sums the lanes).
  // `map` is lowered only when the step is (Lowering::kLayout skips it).
  Value linear(const std::string& name, const Value& v, const LazyMap& map, const Layout& out, const Shape& shape,
               double target_scale, std::size_t members) {
    return linear_here(name, ready(name, v, 1), map, out, shape, target_scale, members);
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
    const auto map = [&](Lowered what) {
      SlotLinearMap m = lower_elementwise(weights, x.layout, to, what);
      if (what == Lowered::kEntries && !is_zero(shift)) m.bias = pack_elements(shift, to);
      return m;
    };
    return linear(name, x, map, to, x.shape, target_scale, x.members);
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
    const bool full = lowering_of_(out_.steps_.size()) == Lowering::kFull;
    y.index = push(name, {v.index},
                   Shift{full ? enc_of(v).encode(pack_elements(shift, v.layout), v.level, v.scale) : ckks::Plaintext{}},
                   v.half);
    return y;
  }

  Value quadratic(const std::string& name, const Value& input, const std::vector<const Quadratic*>& quadratics) {
    const Value v = ready(name, in_ring(name, input), 1);
    const std::vector<double> m = multiplier_of(v);
    const std::size_t size = v.shape.size();
    std::vector<Tensor> a1(quadratics.size(), Tensor(v.layout.shape)), a0 = a1;
    std::vector<double> w2(m.size());
    for (std::size_t l = 0; l < quadratics.size(); ++l) {
      const Quadratic& q = *quadratics[l];
      for (std::size_t i = 0; i < size; ++i) {
        const std::size_t e = l * size + i, c = channel_of(v.shape, i);
        if (!(std::fabs(q.w2[c]) > 1e-12))
          throw std::invalid_argument("compile: node '" + name + "': channel " + std::to_string(c) +
                                      " has a zero quadratic coefficient (a HerPN's gamma = 0); its factored form is "
                                      "undefined");
        w2[e] = q.w2[c] * m[e] * m[e];
        a1[l].data[i] = q.w1[c] / (q.w2[c] * m[e]);
        a0[l].data[i] = q.w0[c] / (q.w2[c] * m[e] * m[e]);
      }
    }
    require_level(v.level);
    CompiledQuadratic quadratic = make_quadratic(enc_of(v), mode_of_next_step(), a1, a0, v.layout, v.level, v.scale);
    const double output_scale = quadratic.output_scale;
    return {push(name, {v.index}, std::move(quadratic), v.half), v.layout, v.shape, v.level - 1, output_scale, w2, 0,
            v.members, v.half, v.origins};
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
      throw ModelTooDeep("compile: node '" + name + "': the polynomial needs " + std::to_string(p.depth()) +
                                  " levels, " + std::to_string(x.level) + " are left (the model is too deep)");
    const std::size_t depth = p.depth();
    return {push(name, {x.index}, Poly{x.level, x.scale, scale_, std::move(p)}, x.half), x.layout, x.shape,
            x.level - depth, scale_, {}, 0, x.members, x.half, x.origins};
  }

  Value normalize(const std::string& name, const Value& v, const L2Normalize& l2) {
    if (v.layout.lanes != 1 || v.layout.rotated || !v.layout.cyclic())
      throw std::invalid_argument("compile: node '" + name + "': L2Normalize needs a fully replicated value in one lane");
    Normalize n{0, v.layout.span(), 0, scale_, {ckks::PolynomialBasis::kPower, l2.coeffs}};
    if (n.polynomial.degree() == 0) throw std::invalid_argument("compile: node '" + name + "': constant polynomial");
    const Value x = ready(name, in_ring(name, materialize(name + ".multiplier", v)), n.depth());
    if (n.depth() > x.level)
      throw ModelTooDeep("compile: node '" + name + "': L2Normalize needs " + std::to_string(n.depth()) +
                                  " levels, " + std::to_string(x.level) + " are left (the model is too deep)");
    n.input_level = x.level;
    n.input_scale = x.scale;
    const std::size_t depth = n.depth();
    return {push(name, {x.index}, std::move(n), x.half), x.layout, x.shape, x.level - depth, scale_, {}, 0, 1, x.half,
            x.origins};
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
    like.origins = both_origins(a, b);
    like.index = push(name, {a.index, b.index}, Sum{like.level}, a.half);
    return like;
  }

  // v, or v bootstrapped when a node needing `needed` levels would leave it below floor().
  Value ready(const std::string& name, const Value& v, std::size_t needed) {
    if (!boot_) return v;
    if (v.level >= needed + floor()) {
      note_margin(v, v.level - needed - floor());
      return v;
    }
    if (const auto it = bootstrapped_.find(v.index); it != bootstrapped_.end()) return it->second;
    if (v.level < floor()) throw std::logic_error("compile: a value fell below the bootstrapping floor");
    note_margin(v, v.level - floor());
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
      const auto map = [&](Lowered what) {
        return lower_elementwise(std::vector<double>(m.size(), 1.0 / r), v.layout, v.layout, what);
      };
      x = linear_here(name + ".to_bootstrap", v, map, v.layout, v.shape, scale_, v.members);
      x.multiplier.assign(m.size(), r);
    }
    const std::size_t origin = out_.bootstraps() + 1, drop = origin < drops_.size() ? drops_[origin] : 0;
    const std::size_t level = boot_->output_level() - drop;
    const Value out{push(name + ".bootstrap", {x.index}, Bootstrap{x.level, x.scale, level}, false), x.layout, x.shape,
                    level, boot_->config().output_scale, x.multiplier, x.max_abs, x.members, false, {origin}};
    bootstrapped_.emplace(v.index, out);
    return out;
  }

 private:
  Value linear_here(const std::string& name, const Value& v, const LazyMap& lower, const Layout& out,
                    const Shape& shape, double target_scale, std::size_t members) {
    require_level(v.level);
    const Lowering lowering = lowering_of_(out_.steps_.size());
    CompiledLinear l =
        lowering == Lowering::kLayout
            ? CompiledLinear{v.level, target_scale, placeholder(enc_of(v), v.layout.slots, v.level), std::nullopt,
                             v.layout, out, {}}
            : lowered_linear(v, lower(lowering == Lowering::kFull ? Lowered::kEntries : Lowered::kDiagonalIndices), out,
                             target_scale);
    return {push(name, {v.index}, std::move(l), v.half), out, shape, v.level - 1, target_scale, {}, v.max_abs, members,
            v.half, v.origins};
  }

  std::size_t push(const std::string& name, std::vector<std::size_t> inputs, StepOp op, bool half) {
    out_.steps_.push_back({name, std::move(inputs), std::move(op), half});
    return out_.inputs_ + out_.steps_.size() - 1;
  }

  const ckks::Encoder& enc_of(const Value& v) const { return v.half ? half_->encoder : enc_; }

  Compilation mode_of_next_step() const {
    return lowering_of_(out_.steps_.size()) == Lowering::kFull ? Compilation::kFull : Compilation::kPlanOnly;
  }

  // v's multiplier folded into the map, lowered at v's level and scale.
  CompiledLinear lowered_linear(const Value& v, SlotLinearMap map, const Layout& out, double target_scale) const {
    if (!v.multiplier.empty()) {
      const std::vector<double> packed = pack_elements(v.multiplier, v.layout);
      for (auto& e : map.entries) e.weight *= packed[e.in];
    }
    return make_linear(enc_of(v), mode_of_next_step(), map, v.layout, out, v.level, v.scale, target_scale,
                       giant_steps());
  }

  // A bootstrapped graph's transforms rotate their giant steps as its bootstrapper's do:
  // where keys bound memory (nn::graph_bootstrap_config chains them), they do for all.
  ckks::GiantSteps giant_steps() const { return boot_ ? boot_->config().giant_steps : ckks::GiantSteps::kSummed; }

  // A kLayout step's transform: never run, saved or asked for keys (one planned diagonal).
  static ckks::LinearTransform placeholder(const ckks::Encoder& enc, std::size_t slots, std::size_t level) {
    return ckks::LinearTransform::plan(enc, {0}, slots, level, 0);
  }

  const ckks::Encoder& enc_;
  LoweringOf lowering_of_;
  double scale_;
  const ckks::Bootstrapper* boot_;
  bool have_ranges_;
  const HalfRing* half_;
  std::map<std::size_t, Value> bootstrapped_;  // by the index of the value bootstrapped
  std::map<std::size_t, Value> switched_;      // by the index of the value switched
  std::vector<std::size_t> drops_, slack_;
  CompiledGraph& out_;
};


CompiledGraph CompiledGraph::compile(const Graph& input_graph, const ckks::Encoder& encoder, std::size_t input_level,
                                     double scale, std::size_t plaintext_budget, Compilation mode,
                                     std::shared_ptr<const ckks::Bootstrapper> bootstrapper,
                                     const FitReport* ranges, std::size_t lanes,
                                     std::shared_ptr<const HalfRing> half_ring) {
  if (input_level > encoder.context().max_level()) throw std::invalid_argument("compile: input level above the top");
  const Graph graph = fold_into_linear_layers(input_graph);
  Recipe recipe{&encoder, input_level, scale, bootstrapper, ranges, lanes, std::move(half_ring), {}};
  if (bootstrapper && mode != Compilation::kPerTask) recipe = at_lowest_levels(graph, std::move(recipe));
  if (mode != Compilation::kPerTask) {
    const Lowering lowering = mode == Compilation::kFull       ? Lowering::kFull
                              : mode == Compilation::kPlanOnly ? Lowering::kPlan
                                                               : Lowering::kLayout;
    CompiledGraph g = build(graph, recipe, [lowering](std::size_t) { return lowering; });
    g.plan_ = mode != Compilation::kFull;
    g.keys_unknown_ = mode == Compilation::kLayoutOnly;
    if (mode == Compilation::kFull) g.pre_encode(plaintext_budget);
    return g;
  }
  if (bootstrapper) throw std::invalid_argument("compile: per-task compilation with bootstrapping is not supported");
  // The branches' steps, from a first pass that lowers nothing.
  const CompiledGraph layout = build(graph, recipe, [](std::size_t) { return Lowering::kLayout; });
  std::vector<bool> in_branch(layout.steps_.size(), false);
  for (const ParallelRegion& r : layout.regions_)
    for (const Branch& b : r.branches)
      for (const std::size_t s : b.steps) in_branch[s] = true;
  CompiledGraph g = build(graph, recipe, [&](std::size_t s) { return in_branch.at(s) ? Lowering::kPlan : Lowering::kFull; });
  g.check_same_steps(layout);
  g.deferred_ = std::move(in_branch);
  g.pre_encode(plaintext_budget);
  return g;
}

// A first pass measures each origin's slack. The drops it allows keep every bootstrap in
// place by construction, except where the compiler compares two operands' levels (an Add's
// alignment, a late level), so a second pass must give the same steps; else the drops are
// halved until it does.
CompiledGraph::Recipe CompiledGraph::at_lowest_levels(const Graph& graph, Recipe recipe) {
  const auto layout = [](std::size_t) { return Lowering::kLayout; };
  std::vector<std::size_t> slack;
  const CompiledGraph first = build(graph, recipe, layout, &slack);
  const ckks::Bootstrapper& boot = *recipe.bootstrapper;
  const std::size_t floor = boot.input_level() + 1;
  slack.resize(first.bootstraps() + 1, SIZE_MAX);
  std::vector<std::size_t> drops(slack.size());
  drops[0] = std::min(slack[0], recipe.input_level - floor);
  for (std::size_t k = 1; k < drops.size(); ++k) drops[k] = std::min(slack[k], boot.output_level() - floor);
  for (;;) {
    Recipe lowered = recipe;
    lowered.input_level -= drops[0];
    lowered.bootstrap_drops = drops;
    if (std::all_of(drops.begin(), drops.end(), [](std::size_t d) { return d == 0; })) return lowered;
    try {
      if (build(graph, lowered, layout).same_step_structure(first)) return lowered;
    } catch (const std::invalid_argument&) {  // a level comparison went the other way: fewer drops
    }
    for (std::size_t& d : drops) d /= 2;
  }
}

CompiledGraph CompiledGraph::build(const Graph& graph, const Recipe& recipe, const LoweringOf& lowering_of,
                                   std::vector<std::size_t>* slack) {
  const ckks::Encoder& encoder = *recipe.encoder;
  const std::size_t input_level = recipe.input_level, lanes = recipe.lanes;
  const double scale = recipe.scale;
  const ckks::Bootstrapper* bootstrapper = recipe.bootstrapper.get();
  const FitReport* ranges = recipe.ranges;
  std::shared_ptr<const HalfRing> half_ring = recipe.half_ring;
  const auto& nodes = graph.nodes();
  const auto consumers = graph.consumers();
  const std::size_t slots = encoder.context().n() / 2;
  const PatchPlan patches = find_patches(graph, consumers);
  const LanePlan plan = plan_lanes(graph, consumers, patches, slots, lanes);
  const bool grouped = !plan.exit.empty();  // the patches' branches are summed pairwise, by lane group
  CompiledGraph g;
  g.encoder_ = &encoder;
  g.input_level_ = input_level;
  g.input_scale_ = scale;
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
  Builder b(encoder, lowering_of, scale, bootstrapper, ranges != nullptr, half_ring.get(), recipe.bootstrap_drops, g);
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
  const std::vector<std::size_t> join_levels =
      bootstrapper ? levels_to_join(graph) : std::vector<std::size_t>(nodes.size(), 0);
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
  // Rotated copies for a convolution read only by convolutions through one quadratic, unless
  // it reads rotated copies itself (its readers then could not split their offsets over
  // the copies, and a rotated-to-rotated map has diagonals at every offset).
  const auto rotates_output = [&](std::size_t n, const Layout& in) {
    if (in.rotated || consumers[n].size() != 1 || !std::holds_alternative<Quadratic>(nodes[consumers[n][0]].op))
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
      // A fork whose readers would run out of levels before their paths join is bootstrapped
      // before its first reader, and every reader gets the refreshed value.
      for (const std::size_t i : node.inputs)
        if (join_levels[i] > 0 && values[i])
          values[i] = b.ready(nodes[i].name, *values[i],
                              std::min(join_levels[i], bootstrapper->output_level() - b.floor()));
      const bool costs_levels = !std::holds_alternative<BatchNorm>(node.op) && !std::holds_alternative<Flatten>(node.op) &&
                                !std::holds_alternative<Scale>(node.op) && !std::holds_alternative<Add>(node.op);
      const Value x = costs_levels ? b.in_ring(node.name, *values[node.inputs[0]]) : *values[node.inputs[0]];
      const auto ops = [&](auto tag) {
        using T = typename decltype(tag)::type;
        std::vector<const T*> out;
        for (const std::size_t m : group) out.push_back(&std::get<T>(nodes[m].op));
        return out;
      };
      const auto copies = [&](auto tag) {  // the lowering functions take the layers themselves
        using T = typename decltype(tag)::type;
        std::vector<T> out;
        for (const std::size_t m : group) out.push_back(std::get<T>(nodes[m].op));
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
        return b.linear(node.name, in, [&](Lowered what) { return lower(in.layout, out, what); }, out, node.shape, scale,
                        exit ? 1 : x.members);
      };
      const auto pool = [&](const AvgPool2d& p) {
        spatial("pooling");
        return linear(pool_output_layout(p, x.layout),
                      [&](const Layout& in, const Layout& o, Lowered what) { return lower_avg_pool(p, in, o, what); });
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
                const auto convs = copies(std::type_identity<Conv2d>{});
                return linear(out, [&](const Layout& in, const Layout& o, Lowered what) { return lower_conv(convs, in, o, what); });
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
                const auto layers = copies(std::type_identity<Linear>{});
                return linear(out, [&](const Layout& in, const Layout& o, Lowered what) { return lower_linear(layers, in, o, what); });
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
              [&](const Quadratic&) { return b.quadratic(node.name, x, ops(std::type_identity<Quadratic>{})); },
              [&](const PolynomialActivation& p) { return b.polynomial(node.name, x, p); },
              [&](const L2Normalize& l2) { return b.normalize(node.name, x, l2); },
          },
          node.op);
      values[n]->max_abs = range(group);
    } catch (const std::invalid_argument& e) {
      const std::string what = e.what();
      if (what.find("compile: node") == 0) throw;
      const std::string named = "compile: node '" + node.name + "' (" + op_name(node.op) + "): " + what;
      if (dynamic_cast<const ModelTooDeep*>(&e)) throw ModelTooDeep(named);  // its kind kept
      throw std::invalid_argument(named);
    }
  }
  if (!values.back()) throw std::logic_error("compile: the output node was not computed");
  const Value out = b.materialize(nodes.back().name + ".multiplier", *values.back());
  if (bootstrapper) b.note_margin(out, out.level > b.floor() ? out.level - b.floor() : 0);
  if (slack) *slack = b.slack();
  if (out.members != 1 || out.layout.lanes != 1)
    throw std::invalid_argument("compile: the output is still spread over lanes");
  if (g.bootstraps() > 0) g.bootstrapper_ = recipe.bootstrapper;
  if (out.half) g.half_ring_ = std::move(half_ring);
  else if (half_ring) throw std::invalid_argument("compile: no value reached the ring switch's level " +
                                                  std::to_string(half_ring->choice.level) + " with a layout to switch");
  g.output_value_ = out.index;
  g.output_layout_ = out.layout;
  g.output_shape_ = out.shape;
  g.output_level_ = out.level;
  g.output_scale_ = out.scale;
  g.find_parallel_regions();
  return g;
}

// Each branch task gets an equal share of the budget (a worker holds at most its share; a
// global budget pre-encoded 0.4 GB more for CryptoFaceNet4 with no time gain shown,
// docs/BENCHMARKS.md), the other steps what the branches leave; without branches, the whole.
// Compiled per task, the branches have no diagonals here: the other steps get the whole.
void CompiledGraph::pre_encode(std::size_t budget) {
  std::size_t tasks = 0;
  for (const ParallelRegion& r : regions_) tasks += r.branches.size();
  std::vector<bool> in_branch(steps_.size(), false);
  const auto linear_steps = [&](const auto& steps) {
    std::vector<CompiledLinear*> layers;
    for (const std::size_t s : steps)
      if (auto* l = std::get_if<CompiledLinear>(&steps_[s].op)) layers.push_back(l);
    return layers;
  };
  std::size_t used = 0;
  for (const ParallelRegion& r : regions_)
    for (const Branch& b : r.branches) {
      if (deferred_.empty()) used += pre_encode_within_budget(linear_steps(b.steps), budget / tasks);
      for (const std::size_t s : b.steps) in_branch[s] = true;
    }
  std::vector<std::size_t> rest;
  for (std::size_t s = 0; s < steps_.size(); ++s)
    if (!in_branch[s]) rest.push_back(s);
  pre_encode_within_budget(linear_steps(rest), budget - used);
}

std::vector<std::vector<double>> CompiledGraph::pack_inputs(const Tensor& x) const {
  expect_shape(x, input_shape_, "compiled graph input");
  const Shape& patch = input_layout_.shape;  // the whole input when grid_ is 1
  std::vector<Tensor> patches;
  for (std::size_t p = 0; p < grid_ * grid_; ++p)
    patches.push_back(Crop{p / grid_ * patch.height, p % grid_ * patch.width, patch.height, patch.width}.forward(x));
  return pack_patch_groups(patches, input_layout_);
}

ckks::Ciphertext CompiledGraph::match(const ckks::Evaluator& eval, const ckks::Ciphertext& probe,
                                      const ckks::Ciphertext& enrolled, double threshold) const {
  if (!embeds()) throw std::invalid_argument("match: the model's output is not a normalised embedding");
  return match_embeddings(eval, probe, enrolled, threshold, output_layout_.span());
}

ckks::Ciphertext CompiledGraph::similarity(const ckks::Evaluator& eval, const ckks::Ciphertext& a,
                                           const ckks::Ciphertext& b) const {
  if (!embeds()) throw std::invalid_argument("similarity: the model's output is not a normalised embedding");
  ckks::Ciphertext product = eval.multiply_relin_rescale(a, b);
  return sum_over_span(eval, std::move(product), output_layout_.span());
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

std::map<long, std::size_t> CompiledGraph::half_ring_rotation_levels() const {
  if (keys_unknown_) throw std::logic_error("compiled graph: laid out only, its rotation keys are not known");
  return ring_rotation_levels(steps_, true);
}

std::map<long, std::size_t> CompiledGraph::rotation_levels() const {
  if (keys_unknown_) throw std::logic_error("compiled graph: laid out only, its rotation keys are not known");
  std::map<long, std::size_t> levels = ring_rotation_levels(steps_, false);
  if (bootstrapper_)
    for (const auto& [step, level] : bootstrapper_->rotation_levels()) levels[step] = std::max(levels[step], level);
  return levels;
}

std::vector<CompiledGraph::PlacedBootstrap> CompiledGraph::placed_bootstraps() const {
  std::vector<PlacedBootstrap> out;
  for (const Step& s : steps_)
    if (const auto* b = std::get_if<Bootstrap>(&s.op)) out.push_back({s.name, b->input_level, b->output_level});
  return out;
}

std::size_t CompiledGraph::bootstraps() const {
  return static_cast<std::size_t>(
      std::count_if(steps_.begin(), steps_.end(), [](const Step& s) { return std::holds_alternative<Bootstrap>(s.op); }));
}

std::vector<std::pair<std::string, ckks::OperationCounts>> CompiledGraph::step_operations(
    const CompiledGraph* geometry) const {
  if (keys_unknown_ && (!geometry || geometry->keys_unknown_))
    throw std::logic_error("compiled graph: steps only laid out need a plan's geometry to count their operations");
  if (half_ring_) throw std::logic_error("compiled graph: the operations of a graph that switches rings are not counted");
  std::map<std::string, const CompiledLinear*> planned;
  if (keys_unknown_)
    for (const Step& s : geometry->steps_)
      if (const auto* l = std::get_if<CompiledLinear>(&s.op)) planned.emplace(s.name, l);
  std::vector<std::pair<std::string, ckks::OperationCounts>> out;
  for (const Step& step : steps_) {
    ckks::OperationCounts c;
    std::visit(Overloaded{
                   [&](const CompiledLinear& here) {
                     const auto found = planned.find(step.name);
                     const CompiledLinear& l = found != planned.end() ? *found->second : here;
                     l.transform.count_operations(c, here.input_level);
                     c[here.input_level].key_switches += static_cast<double>(l.post_sum_steps.size());
                   },
                   [&](const CompiledQuadratic& q) { ckks::count_product(c, q.input_level); },
                   [&](const Poly& p) { ckks::count_polynomial(c, p.polynomial, p.input_level); },
                   [&](const Bootstrap&) { bootstrapper_->count_operations(c); },
                   [&](const Normalize& n) {
                     ckks::count_product(c, n.input_level);
                     for (std::size_t s = 1; s < n.span; s <<= 1) c[n.input_level - 1].key_switches += 1;
                     ckks::count_polynomial(c, n.polynomial, n.input_level - 1);
                     ckks::count_product(c, n.input_level - 1 - n.polynomial.depth());
                   },
                   [&](const auto&) {},  // additions: no limb-sized work worth counting
               },
               step.op);
    out.emplace_back(step.name, std::move(c));
  }
  return out;
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
  ckks::Ciphertext sum = eval.multiply_relin_rescale(x, x);
  sum = sum_over_span(eval, std::move(sum), n.span);
  // p lands where the product with x rescales onto output_scale.
  const std::size_t factor_level = n.input_level - 1 - n.polynomial.depth();
  const double target = n.output_scale * prime_at(eval.context(), factor_level) / x.scale;
  const ckks::Ciphertext factor = ckks::evaluate_polynomial(eval, sum, n.polynomial, target);
  ckks::Ciphertext y = x;
  eval.drop_to_level_inplace(y, factor.level());
  ckks::Ciphertext out = eval.multiply_relin_rescale(y, factor);
  return out;
}

// The keys a run was given besides the big ring's evaluator.
struct RunKeys {
  const ckks::Bootstrapper* bootstrapper;
  const ckks::EncapsulationKeys* encapsulation;
  const HalfRingEvaluation* half;

  // The evaluator a step runs on: the half ring's after a switch (a switch itself starts
  // from the big ring, but needs the half ring's keys too).
  const ckks::Evaluator& of(const CompiledGraph::Step& step, const ckks::Evaluator& big) const {
    if (!step.half) return big;
    if (!half)
      throw std::invalid_argument("compiled graph: it switches rings (" + step.name + "); run it with the half ring's keys");
    return std::holds_alternative<CompiledGraph::RingSwitch>(step.op) ? big : half->evaluator;
  }
};

ckks::Ciphertext apply_step(const ckks::Evaluator& big, const CompiledGraph::Step& step,
                            const std::vector<const ckks::Ciphertext*>& in, const RunKeys& keys) {
  const ckks::Evaluator& eval = keys.of(step, big);
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
            ckks::Ciphertext out = bootstrapper->bootstrap(eval, *in[0], encapsulation);
            eval.drop_to_level_inplace(out, b.output_level);
            return out;
          },
          [&](const CompiledGraph::Normalize& n) { return normalize(eval, step.name, n, *in[0]); },
          [&](const CompiledGraph::RingSwitch&) {
            return ckks::switch_to_half_ring(keys.half->switch_context, keys.half->evaluator.context(),
                                             keys.half->switch_key, *in[0]);
          },
      },
      step.op);
}

// One step on a batch of inputs: `value_of(v)` gives value v of every batch item. A linear
// step takes the batch at once (its diagonals encoded once for all); the others run item by
// item. Timed when `timings` is given.
template <typename ValueOf>
std::vector<ckks::Ciphertext> timed_step(const ckks::Evaluator& eval, const CompiledGraph::Step& step,
                                         ValueOf&& value_of, const RunKeys& keys,
                                         std::vector<CompiledGraph::StepTiming>* timings) {
  const std::size_t batch = value_of(step.inputs.front()).size();
  std::vector<std::vector<const ckks::Ciphertext*>> in(batch);
  for (const std::size_t v : step.inputs) {
    const std::span<const ckks::Ciphertext> values = value_of(v);
    for (std::size_t i = 0; i < batch; ++i) in[i].push_back(&values[i]);
  }
  const auto start = std::chrono::steady_clock::now();
  std::vector<ckks::Ciphertext> out;
  const auto* linear = std::get_if<CompiledLinear>(&step.op);
  if (linear && batch > 1) {
    std::vector<const ckks::Ciphertext*> xs;
    for (const auto& item : in) xs.push_back(item.front());
    out = linear->apply(keys.of(step, eval), xs);
  } else {
    for (const auto& item : in) out.push_back(apply_step(eval, step, item, keys));
  }
  if (timings)
    timings->push_back({step.name, in[0][0]->level(),
                        std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count()});
  return out;
}

}  // namespace

ckks::Ciphertext CompiledGraph::run(const ckks::Evaluator& eval, const std::vector<ckks::Ciphertext>& inputs,
                                    std::vector<StepTiming>* timings, const ckks::EncapsulationKeys* encapsulation,
                                    const RegionRunner& runner, const HalfRingEvaluation* half) const {
  BatchRegionRunner batch_runner;
  if (runner)  // one item: the runner's branches are the batch's
    batch_runner = [&](std::size_t region, const std::vector<std::vector<ckks::Ciphertext>>& entries) {
      return std::vector<std::vector<ckks::Ciphertext>>{runner(region, entries.front())};  // run_batch checks the exits
    };
  return std::move(run_batch(eval, std::span(&inputs, 1), timings, encapsulation, batch_runner, half).front());
}

std::vector<ckks::Ciphertext> CompiledGraph::run_batch(const ckks::Evaluator& eval,
                                                       std::span<const std::vector<ckks::Ciphertext>> batch,
                                                       std::vector<StepTiming>* timings,
                                                 const ckks::EncapsulationKeys* encapsulation,
                                                 const BatchRegionRunner& runner, const HalfRingEvaluation* half) const {
  if (plan_) throw std::logic_error("compiled graph: a plan (rotation keys and layouts only) cannot run");
  if (batch.empty()) throw std::invalid_argument("compiled graph: an empty batch");
  for (const std::vector<ckks::Ciphertext>& inputs : batch) {
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
  }
  const std::size_t items = batch.size();
  // Values are freed after their last use; values[v][i] is value v of batch item i.
  std::vector<std::size_t> uses(inputs_ + steps_.size(), 0);
  for (const Unit& u : order_) {
    if (u.region)
      for (const Branch& b : regions_[u.index].branches) ++uses[b.entry];
    else
      for (const std::size_t v : steps_[u.index].inputs) ++uses[v];
  }
  ++uses[output_value_];
  std::vector<std::vector<ckks::Ciphertext>> values(inputs_ + steps_.size());
  for (std::size_t k = 0; k < inputs_; ++k)
    for (const std::vector<ckks::Ciphertext>& inputs : batch) {
      values[k].push_back(inputs[k]);
      eval.drop_to_level_inplace(values[k].back(), input_level_);
    }
  const auto release = [&](std::size_t v) {
    if (--uses[v] == 0) values[v] = {};
  };
  for (const Unit& u : order_) {
    if (u.region) {
      const std::vector<Branch>& branches = regions_[u.index].branches;
      std::vector<std::vector<ckks::Ciphertext>> exits(items);  // [item][branch]
      if (runner) {
        std::vector<std::vector<ckks::Ciphertext>> entries(items);
        for (std::size_t i = 0; i < items; ++i)
          for (const Branch& b : branches) entries[i].push_back(values[b.entry][i]);
        exits = runner(u.index, entries);
        if (exits.size() != items) throw std::logic_error("compiled graph: a region runner lost a batch item");
        for (const auto& item : exits)
          if (item.size() != branches.size()) throw std::logic_error("compiled graph: a region runner lost a branch");
      } else {
        for (std::size_t b = 0; b < branches.size(); ++b) {
          std::vector<ckks::Ciphertext> out =
              run_branch(eval, u.index, b, values[branches[b].entry], timings, encapsulation, half);
          for (std::size_t i = 0; i < items; ++i) exits[i].push_back(std::move(out[i]));
        }
      }
      for (std::size_t b = 0; b < branches.size(); ++b)
        for (std::size_t i = 0; i < items; ++i) values[branches[b].exit].push_back(std::move(exits[i][b]));
      for (const Branch& b : branches) release(b.entry);
      continue;
    }
    const Step& step = steps_[u.index];
    check_compiled(u.index);
    values[inputs_ + u.index] = timed_step(
        eval, step, [&](std::size_t v) { return std::span<const ckks::Ciphertext>(values[v]); },
        {bootstrapper_.get(), encapsulation, half}, timings);
    for (const std::size_t v : step.inputs) release(v);
  }
  return std::move(values[output_value_]);
}

ckks::Ciphertext CompiledGraph::run_branch(const ckks::Evaluator& eval, std::size_t region, std::size_t branch,
                                           const ckks::Ciphertext& entry, std::vector<StepTiming>* timings,
                                           const ckks::EncapsulationKeys* encapsulation,
                                           const HalfRingEvaluation* half) const {
  return std::move(run_branch(eval, region, branch, std::span(&entry, 1), timings, encapsulation, half).front());
}

std::vector<ckks::Ciphertext> CompiledGraph::run_branch(const ckks::Evaluator& eval, std::size_t region,
                                                        std::size_t branch, std::span<const ckks::Ciphertext> entries,
                                                        std::vector<StepTiming>* timings,
                                                        const ckks::EncapsulationKeys* encapsulation,
                                                        const HalfRingEvaluation* half) const {
  if (plan_) throw std::logic_error("compiled graph: a plan (rotation keys and layouts only) cannot run");
  if (region >= regions_.size() || branch >= regions_[region].branches.size())
    throw std::out_of_range("compiled graph: no branch " + std::to_string(branch) + " in region " +
                            std::to_string(region));
  if (entries.empty()) throw std::invalid_argument("compiled graph: a branch run without an entry");
  const Branch& br = regions_[region].branches[branch];
  for (const ckks::Ciphertext& entry : entries)
    if (br.entry < inputs_ && entry.slots() != input_layout_.slots)
      throw std::invalid_argument("compiled graph: branch input slot count mismatch");
  std::map<std::size_t, std::vector<ckks::Ciphertext>> values;  // by value index, one per batch item
  std::map<std::size_t, std::size_t> uses;
  for (const std::size_t s : br.steps)
    for (const std::size_t v : steps_[s].inputs) ++uses[v];
  values[br.entry].assign(entries.begin(), entries.end());
  for (const std::size_t s : br.steps) {
    const Step& step = steps_[s];
    check_compiled(s);
    std::vector<ckks::Ciphertext> out = timed_step(
        eval, step, [&](std::size_t v) { return std::span<const ckks::Ciphertext>(values.at(v)); },
        RunKeys{bootstrapper_.get(), encapsulation, half}, timings);
    for (const std::size_t v : step.inputs)
      if (--uses[v] == 0) values.erase(v);
    values[inputs_ + s] = std::move(out);
  }
  return std::move(values.at(br.exit));
}

}  // namespace pfhe::nn
