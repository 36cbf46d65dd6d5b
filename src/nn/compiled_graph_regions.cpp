// CompiledGraph's parallel regions (the branches the runtime runs as tasks) and the order
// of the steps and regions a run follows, derived from the steps alone, so a loaded graph
// has the same ones; and the per-task compilation of one branch (compile_task).
#include <algorithm>
#include <optional>
#include <queue>
#include <set>
#include <stdexcept>

#include "nn/compiled_graph.h"
#include "nn/graph_passes.h"

namespace pfhe::nn {

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

CompiledGraph CompiledGraph::compile_task(const Graph& input_graph, std::size_t region, std::size_t branch,
                                          std::size_t plaintext_budget) const {
  if (deferred_.empty()) throw std::logic_error("compile_task: the graph was not compiled per task");
  if (region >= regions_.size() || branch >= regions_[region].branches.size())
    throw std::out_of_range("compile_task: no branch " + std::to_string(branch) + " in region " + std::to_string(region));
  std::vector<bool> in_task(steps_.size(), false);
  for (const std::size_t s : regions_[region].branches[branch].steps) in_task[s] = true;
  const Recipe recipe{encoder_, input_level_, input_scale_, nullptr, nullptr, input_layout_.lanes, half_ring_, {}};
  CompiledGraph g = build(fold_into_linear_layers(input_graph), recipe, [&](std::size_t s) {
    return s < in_task.size() && in_task[s] ? Lowering::kFull : Lowering::kLayout;
  });
  g.check_same_steps(*this);
  g.keys_unknown_ = true;
  g.deferred_.resize(steps_.size());
  std::vector<CompiledLinear*> layers;
  for (std::size_t s = 0; s < steps_.size(); ++s) {
    g.deferred_[s] = !in_task[s];
    if (auto* l = std::get_if<CompiledLinear>(&g.steps_[s].op); l && in_task[s]) layers.push_back(l);
  }
  pre_encode_within_budget(std::move(layers), plaintext_budget);
  return g;
}

namespace {
bool same_geometry(const CompiledGraph::StepOp& a, const CompiledGraph::StepOp& b) {
  const auto* x = std::get_if<CompiledLinear>(&a);
  const auto* y = std::get_if<CompiledLinear>(&b);
  return !x || (x->input_level == y->input_level && x->in == y->in && x->out == y->out);
}
}  // namespace

bool CompiledGraph::same_step_structure(const CompiledGraph& other) const {
  if (steps_.size() != other.steps_.size()) return false;
  for (std::size_t s = 0; s < steps_.size(); ++s)
    if (steps_[s].name != other.steps_[s].name || steps_[s].inputs != other.steps_[s].inputs ||
        steps_[s].op.index() != other.steps_[s].op.index())
      return false;
  return true;
}

void CompiledGraph::check_same_steps(const CompiledGraph& other) const {
  bool same = inputs_ == other.inputs_ && same_step_structure(other);
  for (std::size_t s = 0; same && s < steps_.size(); ++s) same = same_geometry(steps_[s].op, other.steps_[s].op);
  if (!same) throw std::invalid_argument("compile_task: the graph is not the one this model was compiled from");
}

void CompiledGraph::check_compiled(std::size_t step) const {
  if (!deferred_.empty() && deferred_[step])
    throw std::logic_error("compiled graph: step '" + steps_[step].name +
                           "' is compiled per task (run its branch from compile_task's graph)");
}

}  // namespace pfhe::nn
