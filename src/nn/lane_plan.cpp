#include "nn/lane_plan.h"

#include <algorithm>
#include <bit>
#include <cmath>
#include <map>
#include <optional>
#include <stdexcept>

#include "nn/linear_map.h"
#include "nn/overloaded.h"

namespace pfhe::nn {

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

namespace {

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

}  // namespace

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

}  // namespace pfhe::nn
