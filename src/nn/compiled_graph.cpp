#include "nn/compiled_graph.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <optional>
#include <queue>
#include <set>
#include <stdexcept>
#include <string>

#include "ckks/serialization.h"
#include "nn/overloaded.h"

namespace pfhe::nn {

namespace {

constexpr char kGraphMagic[4] = {'P', 'F', 'H', 'G'};
// 2: layouts record their grid (nn/layout.h).
constexpr std::uint32_t kGraphVersion = 2;

// Compile-time state of one graph node's output: value = multiplier (.) stored, where
// stored is program value `index` (multiplier empty: all ones).
struct Value {
  std::size_t index = 0;
  Layout layout;
  Shape shape;  // the graph's (logical) shape; layout.shape differs after a Flatten
  std::size_t level = 0;
  double scale = 0;
  std::vector<double> multiplier;
  double max_abs = 0;  // the node's fitted range (0: not known)
};

std::vector<double> multiplier_of(const Value& v) {
  return v.multiplier.empty() ? std::vector<double>(v.shape.size(), 1.0) : v.multiplier;
}

// Channel of element e (channel-major) of a tensor of shape s; a flattened (F, 1, 1)
// tensor has one element per channel.
std::size_t channel_of(const Shape& s, std::size_t e) { return e / (s.height * s.width); }

// A slot vector holding per-element values of v's tensor in every replica.
std::vector<double> pack_elements(const std::vector<double>& per_element, const Layout& layout) {
  Tensor t(layout.shape);
  t.data = per_element;
  return pack(t, layout);
}

bool is_zero(const std::vector<double>& v) {
  return std::all_of(v.begin(), v.end(), [](double x) { return x == 0.0; });
}

}  // namespace

class CompiledGraph::Builder {
 public:
  Builder(const ckks::Encoder& enc, Compilation mode, double scale, const ckks::Bootstrapper* bootstrapper,
          bool have_ranges, CompiledGraph& out)
      : enc_(enc), mode_(mode), scale_(scale), boot_(bootstrapper), have_ranges_(have_ranges), out_(out) {}

  // Lowest level a value may keep before its next node (with a bootstrapper: one above
  // its input level, for the scaling into EvalMod's domain).
  std::size_t floor() const { return boot_ ? boot_->input_level() + 1 : 0; }

  // A linear node: folds v's multiplier into the map, lands on target_scale one level down.
  Value linear(const std::string& name, const Value& v, SlotLinearMap map, const Layout& out, const Shape& shape,
               double target_scale) {
    return linear_here(name, ready(name, v, 1), std::move(map), out, shape, target_scale);
  }

  // y = weights (.) value + shift (of the value itself, multiplier included: linear()
  // folds it in) in layout `out` at target_scale; one level.
  Value affine(const std::string& name, const Value& v, const std::vector<double>& weights,
               const std::vector<double>& shift, const Layout& out, double target_scale) {
    SlotLinearMap map = lower_elementwise(weights, v.layout, out);
    if (!is_zero(shift)) map.bias = pack_elements(shift, out);
    return linear(name, v, std::move(map), out, v.shape, target_scale);
  }

  // The value with multiplier one (one level when it is not one already).
  Value materialize(const std::string& name, const Value& v) {
    if (v.multiplier.empty()) return v;
    return affine(name, v, std::vector<double>(v.shape.size(), 1.0), {}, v.layout, scale_);
  }

  Value batch_norm(const std::string& name, const Value& v, const BatchNorm& bn) {
    std::vector<double> s, t;
    bn.affine_form(s, t);
    std::vector<double> m = multiplier_of(v), shift(m.size());
    bool foldable = true;
    for (std::size_t e = 0; e < m.size(); ++e) {
      const std::size_t c = channel_of(v.shape, e);
      m[e] *= s[c];
      foldable = foldable && std::isfinite(m[e]) && std::fabs(m[e]) > 1e-12;
      shift[e] = t[c];
    }
    if (!foldable) {  // a zero scale (gamma = 0): the output is the shift alone, applied exactly
      std::vector<double> weights(m.size());
      for (std::size_t e = 0; e < m.size(); ++e) weights[e] = s[channel_of(v.shape, e)];
      return affine(name, v, weights, shift, v.layout, scale_);
    }
    Value y = v;
    y.multiplier = m;
    if (is_zero(shift)) return y;
    for (std::size_t e = 0; e < m.size(); ++e) shift[e] /= m[e];
    y.index = push(name, {v.index}, Shift{enc_.encode(pack_elements(shift, v.layout), v.level, v.scale)});
    return y;
  }

  Value herpn(const std::string& name, const Value& input, const HerPN& herpn) {
    const Value v = ready(name, input, 1);
    const Quadratic q = herpn.fuse();
    const std::vector<double> m = multiplier_of(v);
    Tensor a1(v.layout.shape), a0(v.layout.shape);
    std::vector<double> w2(m.size());
    for (std::size_t e = 0; e < m.size(); ++e) {
      const std::size_t c = channel_of(v.shape, e);
      if (!(std::fabs(q.w2[c]) > 1e-12))
        throw std::invalid_argument("compile: node '" + name + "': HerPN channel " + std::to_string(c) +
                                    " has a zero quadratic coefficient (gamma = 0); its factored form is undefined");
      w2[e] = q.w2[c] * m[e] * m[e];
      a1.data[e] = q.w1[c] / (q.w2[c] * m[e]);
      a0.data[e] = q.w0[c] / (q.w2[c] * m[e] * m[e]);
    }
    require_level(v.level);
    CompiledQuadratic quadratic = make_quadratic(enc_, mode_, {a1}, {a0}, v.layout, v.level, v.scale);
    const double output_scale = quadratic.output_scale;
    return {push(name, {v.index}, std::move(quadratic)), v.layout, v.shape, v.level - 1, output_scale, w2};
  }

  Value polynomial(const std::string& name, const Value& v, const PolynomialActivation& activation) {
    const std::vector<double> m = multiplier_of(v);
    const bool uniform = std::all_of(m.begin(), m.end(), [&](double x) { return x == m.front(); });
    ckks::Polynomial p{ckks::PolynomialBasis::kPower, activation.coeffs};
    // (a bootstrap's scaling keeps a multiplier uniform)
    const Value x = ready(name, uniform ? v : materialize(name + ".multiplier", v), p.depth());
    const double c = multiplier_of(x).front();  // p(c u) as a polynomial in u
    double power = 1;
    for (double& coeff : p.coeffs) coeff *= power, power *= c;
    if (p.degree() == 0) throw std::invalid_argument("compile: node '" + name + "': constant polynomial activation");
    if (p.depth() > x.level)
      throw std::invalid_argument("compile: node '" + name + "': the polynomial needs " + std::to_string(p.depth()) +
                                  " levels, " + std::to_string(x.level) + " are left (the model is too deep)");
    const std::size_t depth = p.depth();
    return {push(name, {x.index}, Poly{x.level, x.scale, scale_, std::move(p)}), x.layout, x.shape, x.level - depth,
            scale_, {}};
  }

  Value add(const std::string& name, const Value& a, const Value& b) {
    const bool agree = a.layout == b.layout && multiplier_of(a) == multiplier_of(b) &&
                       std::fabs(a.scale - b.scale) <= 1e-9 * b.scale;
    if (agree) return sum(name, a, b, b);
    // Bring the operand with more levels left to the other's layout, multiplier and scale:
    // stored = value / (the other's multiplier).
    const bool a_first = a.level >= b.level;
    const Value& ahead = a_first ? a : b;
    const Value& other = a_first ? b : a;
    std::vector<double> inverse = multiplier_of(other);
    for (double& m : inverse) m = 1.0 / m;
    const Value moved = affine(name + ".align", ahead, inverse, {}, other.layout, other.scale);
    return a_first ? sum(name, moved, other, other) : sum(name, other, moved, other);
  }

 private:
  Value linear_here(const std::string& name, const Value& v, SlotLinearMap map, const Layout& out, const Shape& shape,
                    double target_scale) {
    if (!v.multiplier.empty()) {
      const std::vector<double> packed = pack_elements(v.multiplier, v.layout);
      for (auto& e : map.entries) e.weight *= packed[e.in];
    }
    require_level(v.level);
    CompiledLinear l = make_linear(enc_, mode_, map, v.layout, out, v.level, v.scale, target_scale);
    return {push(name, {v.index}, std::move(l)), out, shape, v.level - 1, target_scale, {}, v.max_abs};
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
      x = linear_here(name + ".to_bootstrap", v, std::move(map), v.layout, v.shape, scale_);
      x.multiplier.assign(m.size(), r);
    }
    const Value out{push(name + ".bootstrap", {x.index}, Bootstrap{x.level, x.scale}), x.layout, x.shape,
                    boot_->output_level(), boot_->config().output_scale, x.multiplier, x.max_abs};
    bootstrapped_.emplace(v.index, out);
    return out;
  }

  Value sum(const std::string& name, const Value& a, const Value& b, Value like) {
    like.level = std::min(a.level, b.level);
    like.index = push(name, {a.index, b.index}, Sum{like.level});
    return like;
  }

  std::size_t push(const std::string& name, std::vector<std::size_t> inputs, StepOp op) {
    out_.steps_.push_back({name, std::move(inputs), std::move(op)});
    return out_.steps_.size();
  }

  const ckks::Encoder& enc_;
  Compilation mode_;
  double scale_;
  const ckks::Bootstrapper* boot_;
  bool have_ranges_;
  std::map<std::size_t, Value> bootstrapped_;  // by the index of the value bootstrapped
  CompiledGraph& out_;
};

CompiledGraph CompiledGraph::compile(const Graph& graph, const ckks::Encoder& encoder, std::size_t input_level,
                                     double scale, std::size_t plaintext_budget, Compilation mode,
                                     const ckks::Bootstrapper* bootstrapper, const FitReport* ranges) {
  if (input_level > encoder.context().max_level()) throw std::invalid_argument("compile: input level above the top");
  CompiledGraph g;
  g.encoder_ = &encoder;
  g.input_level_ = input_level;
  g.input_scale_ = scale;
  g.plan_ = mode == Compilation::kPlanOnly;
  const std::size_t slots = encoder.context().n() / 2;
  g.input_layout_ = graph_input_layout(graph.input_shape(), slots);
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
  Builder b(encoder, mode, scale, bootstrapper, ranges != nullptr, g);
  const auto range = [&](const std::string& name) {
    const auto it = range_of.find(name);
    return it == range_of.end() ? 0.0 : it->second;
  };
  std::vector<Value> values;
  values.push_back({0, g.input_layout_, graph.input_shape(), input_level, scale, {}, range(graph.nodes()[0].name)});
  for (std::size_t n = 1; n < graph.nodes().size(); ++n) {
    const GraphNode& node = graph.nodes()[n];
    const Value& x = values[node.inputs[0]];
    const auto spatial = [&](const char* what) {
      if (!(x.layout.shape == x.shape))
        throw std::invalid_argument(std::string("compile: node '") + node.name + "': " + what +
                                    " of a flattened tensor");
    };
    const auto pool = [&](const AvgPool2d& p) {
      spatial("pooling");
      const Layout out = pool_output_layout(p, x.layout);
      return b.linear(node.name, x, lower_avg_pool(p, x.layout, out), out, node.shape, scale);
    };
    try {
      values.push_back(std::visit(
          Overloaded{
              [&](const GraphInput&) -> Value { throw std::logic_error("second graph input"); },
              [&](const Conv2d& conv) {
                spatial("Conv2d");
                const Layout out = conv_output_layout(conv, x.layout);
                return b.linear(node.name, x, lower_conv(conv, x.layout, out), out, node.shape, scale);
              },
              [&](const BatchNorm& bn) { return b.batch_norm(node.name, x, bn); },
              [&](const AvgPool2d& p) { return pool(p); },
              [&](const AdaptiveAvgPool2d& p) {
                const std::size_t bh = x.shape.height / p.output_size, bw = x.shape.width / p.output_size;
                if (bh != bw)
                  throw std::invalid_argument("compile: node '" + node.name +
                                              "': adaptive pooling with non-square blocks is not supported encrypted");
                return pool(AvgPool2d{bh, bh});
              },
              [&](const Flatten&) {
                Value y = x;
                y.shape = node.shape;
                return y;
              },
              [&](const Linear& linear) {
                const Layout out = with_full_replication(Layout{node.shape, 1, slots});
                return b.linear(node.name, x, lower_linear(linear, x.layout, out), out, node.shape, scale);
              },
              [&](const Add&) { return b.add(node.name, x, values[node.inputs[1]]); },
              [&](const Scale& s) {
                Value y = x;
                y.multiplier = multiplier_of(x);
                for (double& m : y.multiplier) m *= s.factor;
                return y;
              },
              [&](const HerPN& h) { return b.herpn(node.name, x, h); },
              [&](const PolynomialActivation& p) { return b.polynomial(node.name, x, p); },
          },
          node.op));
      values.back().max_abs = range(node.name);
    } catch (const std::invalid_argument& e) {
      const std::string what = e.what();
      if (what.find("compile: node") == 0) throw;
      throw std::invalid_argument("compile: node '" + node.name + "' (" + op_name(node.op) + "): " + what);
    }
  }
  const Value out = b.materialize(graph.nodes().back().name + ".multiplier", values.back());
  if (g.bootstraps() > 0) g.bootstrapper_ = bootstrapper;
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

Tensor CompiledGraph::unpack_output(const std::vector<double>& slots) const {
  Tensor t = unpack(slots, output_layout_);
  t.shape = output_shape_;
  return t;
}

std::map<long, std::size_t> CompiledGraph::rotation_levels() const {
  std::vector<const CompiledLinear*> layers;
  for (const Step& s : steps_)
    if (const auto* l = std::get_if<CompiledLinear>(&s.op)) layers.push_back(l);
  std::map<long, std::size_t> levels = nn::rotation_levels(layers);
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

ckks::Ciphertext apply_step(const ckks::Evaluator& eval, const CompiledGraph::Step& step,
                            const std::vector<const ckks::Ciphertext*>& in, const ckks::Bootstrapper* bootstrapper,
                            const ckks::EncapsulationKeys* encapsulation) {
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
      },
      step.op);
}

// One step on the values `value_of` gives for its inputs, timed when `timings` is given.
template <typename ValueOf>
ckks::Ciphertext timed_step(const ckks::Evaluator& eval, const CompiledGraph::Step& step, ValueOf&& value_of,
                            const ckks::Bootstrapper* bootstrapper, const ckks::EncapsulationKeys* encapsulation,
                            std::vector<CompiledGraph::StepTiming>* timings) {
  std::vector<const ckks::Ciphertext*> in;
  for (const std::size_t v : step.inputs) in.push_back(&value_of(v));
  const auto start = std::chrono::steady_clock::now();
  ckks::Ciphertext out = apply_step(eval, step, in, bootstrapper, encapsulation);
  if (timings)
    timings->push_back({step.name, in[0]->level(),
                        std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count()});
  return out;
}

}  // namespace

ckks::Ciphertext CompiledGraph::run(const ckks::Evaluator& eval, const ckks::Ciphertext& input,
                                    std::vector<StepTiming>* timings, const ckks::EncapsulationKeys* encapsulation,
                                    const RegionRunner& runner) const {
  if (plan_) throw std::logic_error("compiled graph: a plan (rotation keys and layouts only) cannot run");
  if (input.level() < input_level_)
    throw std::invalid_argument("compiled graph: input at level " + std::to_string(input.level()) + ", needs " +
                                std::to_string(input_level_));
  if (input.slots() != input_layout_.slots) throw std::invalid_argument("compiled graph: input slot count mismatch");
  check_scale(input.scale, input_scale_, "compiled graph input");
  // Values are freed after their last use.
  std::vector<std::size_t> uses(steps_.size() + 1, 0);
  for (const Unit& u : order_) {
    if (u.region)
      for (const Branch& b : regions_[u.index].branches) ++uses[b.entry];
    else
      for (const std::size_t v : steps_[u.index].inputs) ++uses[v];
  }
  ++uses[output_value_];
  std::vector<ckks::Ciphertext> values(steps_.size() + 1);
  values[0] = input;
  eval.drop_to_level_inplace(values[0], input_level_);
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
          exits.push_back(run_branch(eval, u.index, b, values[branches[b].entry], timings, encapsulation));
      }
      for (std::size_t b = 0; b < branches.size(); ++b) values[branches[b].exit] = std::move(exits[b]);
      for (const Branch& b : branches) release(b.entry);
      continue;
    }
    const Step& step = steps_[u.index];
    values[u.index + 1] = timed_step(eval, step, [&](std::size_t v) -> const ckks::Ciphertext& { return values[v]; },
                                     bootstrapper_, encapsulation, timings);
    for (const std::size_t v : step.inputs) release(v);
  }
  return values[output_value_];
}

ckks::Ciphertext CompiledGraph::run_branch(const ckks::Evaluator& eval, std::size_t region, std::size_t branch,
                                           const ckks::Ciphertext& entry, std::vector<StepTiming>* timings,
                                           const ckks::EncapsulationKeys* encapsulation) const {
  if (plan_) throw std::logic_error("compiled graph: a plan (rotation keys and layouts only) cannot run");
  if (region >= regions_.size() || branch >= regions_[region].branches.size())
    throw std::out_of_range("compiled graph: no branch " + std::to_string(branch) + " in region " +
                            std::to_string(region));
  const Branch& br = regions_[region].branches[branch];
  if (entry.slots() != input_layout_.slots) throw std::invalid_argument("compiled graph: branch input slot count mismatch");
  std::map<std::size_t, ckks::Ciphertext> values;  // by value index
  std::map<std::size_t, std::size_t> uses;
  for (const std::size_t s : br.steps)
    for (const std::size_t v : steps_[s].inputs) ++uses[v];
  values[br.entry] = entry;
  for (const std::size_t s : br.steps) {
    const Step& step = steps_[s];
    ckks::Ciphertext out = timed_step(
        eval, step, [&](std::size_t v) -> const ckks::Ciphertext& { return values.at(v); }, bootstrapper_,
        encapsulation, timings);
    for (const std::size_t v : step.inputs)
      if (--uses[v] == 0) values.erase(v);
    values[s + 1] = std::move(out);
  }
  return std::move(values.at(br.exit));
}

namespace {

// Steps costing a level that make a branch worth a task of its own: a lone alignment or
// 1x1 shortcut beside a residual block is not (moving it would cost more than it runs).
constexpr std::size_t kBranchWork = 2;

bool costs_a_level(const CompiledGraph::StepOp& op) {
  return !std::holds_alternative<CompiledGraph::Shift>(op) && !std::holds_alternative<CompiledGraph::Sum>(op);
}

}  // namespace

// Sum trees are visited from the last step back, so a region inside a branch of a later
// one is claimed by the outer region first and left alone.
void CompiledGraph::find_parallel_regions() {
  regions_.clear();
  const std::size_t count = steps_.size();
  std::vector<std::vector<std::size_t>> consumers(count + 1);
  for (std::size_t s = 0; s < count; ++s)
    for (const std::size_t v : steps_[s].inputs) consumers[v].push_back(s);
  const auto is_sum = [&](std::size_t s) { return std::holds_alternative<Sum>(steps_[s].op); };
  // A sum feeding only another sum is inside that sum's tree.
  const auto inner_sum = [&](std::size_t v) {
    return v > 0 && is_sum(v - 1) && consumers[v].size() == 1 && is_sum(consumers[v][0]);
  };
  std::vector<int> claimed(count, -1);
  for (std::size_t root = count; root-- > 0;) {
    if (!is_sum(root) || claimed[root] >= 0 || inner_sum(root + 1)) continue;
    std::vector<bool> in_tree(count, false);
    std::vector<std::size_t> leaves, stack{root};
    while (!stack.empty()) {
      const std::size_t t = stack.back();
      stack.pop_back();
      in_tree[t] = true;
      for (const std::size_t v : steps_[t].inputs) {
        if (inner_sum(v) && claimed[v - 1] < 0) stack.push_back(v - 1);
        else leaves.push_back(v);
      }
    }
    // Steps each leaf depends on, and how many leaves depend on each step.
    std::vector<std::vector<bool>> ancestors(leaves.size(), std::vector<bool>(count, false));
    std::vector<std::size_t> shared(count, 0);
    for (std::size_t k = 0; k < leaves.size(); ++k) {
      std::vector<std::size_t> todo;
      if (leaves[k] > 0) todo.push_back(leaves[k] - 1);
      while (!todo.empty()) {
        const std::size_t s = todo.back();
        todo.pop_back();
        if (ancestors[k][s]) continue;
        ancestors[k][s] = true;
        ++shared[s];
        for (const std::size_t v : steps_[s].inputs)
          if (v > 0) todo.push_back(v - 1);
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
          if (v == 0 || !mine[v - 1]) entries.insert(v);
        if (s + 1 != b.exit)
          for (const std::size_t c : consumers[s + 1]) valid = valid && mine[c];
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
    if (v == 0) return std::nullopt;
    return region_of[v - 1] >= 0 ? count + static_cast<std::size_t>(region_of[v - 1]) : v - 1;
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

enum class StepKind : std::uint8_t { kLinear = 0, kQuadratic = 1, kShift = 2, kPoly = 3, kSum = 4, kBootstrap = 5 };

}  // namespace

ckks::Bytes CompiledGraph::save() const {
  if (plan_) throw std::logic_error("compiled graph: a plan (rotation keys and layouts only) cannot be saved");
  const ckks::Context& ctx = encoder_->context();
  ckks::ByteWriter w;
  w.put_bytes(reinterpret_cast<const std::uint8_t*>(kGraphMagic), 4);
  w.put<std::uint32_t>(kGraphVersion);
  w.put<std::uint64_t>(ctx.params().fingerprint());
  w.put<std::uint64_t>(input_level_);
  w.put<double>(input_scale_);
  save_layout(w, input_layout_);
  w.put<std::uint64_t>(steps_.size());
  for (const Step& s : steps_) {
    w.put<std::uint64_t>(s.name.size());
    w.put_bytes(reinterpret_cast<const std::uint8_t*>(s.name.data()), s.name.size());
    w.put<std::uint64_t>(s.inputs.size());
    for (const std::size_t i : s.inputs) w.put<std::uint64_t>(i);
    w.put<std::uint8_t>(static_cast<std::uint8_t>(s.op.index()));
    std::visit(Overloaded{
                   [&](const CompiledLinear& l) { save_linear(w, ctx, l); },
                   [&](const CompiledQuadratic& q) { save_quadratic(w, ctx, q); },
                   [&](const Shift& sh) { w.put_blob(ckks::save(ctx, sh.shift)); },
                   [&](const Poly& p) {
                     w.put<std::uint64_t>(p.input_level);
                     w.put<double>(p.input_scale);
                     w.put<double>(p.output_scale);
                     w.put<std::uint64_t>(p.polynomial.coeffs.size());
                     for (const double c : p.polynomial.coeffs) w.put<double>(c);
                   },
                   [&](const Sum& sum) { w.put<std::uint64_t>(sum.level); },
                   [&](const Bootstrap& b) {
                     w.put<std::uint64_t>(b.input_level);
                     w.put<double>(b.input_scale);
                     w.put<std::uint64_t>(bootstrapper_->output_level());
                     w.put<std::uint64_t>(bootstrapper_->slots());
                   },
               },
               s.op);
    w.align(8);  // keeps just-in-time coefficients 8-aligned for in-place use
  }
  w.put<std::uint64_t>(output_value_);
  for (std::size_t v : {output_shape_.channels, output_shape_.height, output_shape_.width}) w.put<std::uint64_t>(v);
  return std::move(w.bytes());
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
  g.input_level_ = r.get_count(what, ctx.max_level());
  g.input_scale_ = r.get<double>(what);
  if (!(g.input_scale_ > 0) || !std::isfinite(g.input_scale_)) throw ckks::SerializationError("compiled graph: bad scale");
  g.input_layout_ = load_layout(r, slots);
  // Levels and layouts of every value, to check each step against its inputs.
  std::vector<std::size_t> level{g.input_level_};
  std::vector<Layout> layout{g.input_layout_};
  std::vector<double> scale{g.input_scale_};
  const std::size_t count = r.get_count(what, 1 << 20);
  for (std::size_t i = 0; i < count; ++i) {
    Step s{{}, {}, Sum{}};  // the op is read below
    const auto name = r.get_view(r.get_count(what, 4096), what);
    s.name.assign(name.begin(), name.end());
    s.inputs.resize(r.get_count(what, 2));
    for (std::size_t& v : s.inputs) v = r.get_count(what, i);  // an earlier value
    const auto kind = static_cast<StepKind>(r.get<std::uint8_t>(what));
    const std::size_t arity = kind == StepKind::kSum ? 2 : 1;
    if (s.inputs.size() != arity) throw ckks::SerializationError("compiled graph: wrong input count for a step");
    const std::size_t in_level = level[s.inputs[0]];
    std::size_t out_level = 0;
    Layout out_layout = layout[s.inputs[0]];
    double out_scale = scale[s.inputs[0]];
    switch (kind) {
      case StepKind::kLinear: {
        CompiledLinear l = load_linear(encoder, r, backing);
        if (l.input_level > in_level || !(l.in == layout[s.inputs[0]]))
          throw ckks::SerializationError("compiled graph: linear step does not fit its input");
        out_level = l.input_level - 1;
        out_layout = l.out;
        out_scale = l.output_scale;
        s.op = std::move(l);
        break;
      }
      case StepKind::kQuadratic: {
        CompiledQuadratic q = load_quadratic(ctx, r);
        if (q.input_level != in_level) throw ckks::SerializationError("compiled graph: quadratic level mismatch");
        out_level = in_level - 1;
        out_scale = q.output_scale;
        s.op = std::move(q);
        break;
      }
      case StepKind::kShift: {
        Shift sh{ckks::load_plaintext(ctx, r.get_blob(what))};
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
        p.polynomial.coeffs.resize(r.get_count(what, 1 << 12));
        for (double& c : p.polynomial.coeffs) c = r.get<double>(what);
        const bool finite = std::all_of(p.polynomial.coeffs.begin(), p.polynomial.coeffs.end(),
                                        [](double c) { return std::isfinite(c); });
        if (p.input_level != in_level || !finite || p.polynomial.degree() == 0 ||
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
      default:
        throw ckks::SerializationError("compiled graph: unknown step kind");
    }
    r.align(8, what);
    level.push_back(out_level);
    layout.push_back(out_layout);
    scale.push_back(out_scale);
    g.steps_.push_back(std::move(s));
  }
  g.output_value_ = r.get_count(what, count);
  g.output_level_ = level[g.output_value_];
  g.output_layout_ = layout[g.output_value_];
  g.output_scale_ = scale[g.output_value_];
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
