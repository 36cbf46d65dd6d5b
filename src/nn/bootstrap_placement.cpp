#include "nn/bootstrap_placement.h"

#include <algorithm>
#include <optional>

#include "ckks/polynomial.h"
#include "nn/overloaded.h"

namespace pfhe::nn {

std::size_t level_cost(const GraphOp& op) {
  const auto depth = [](const std::vector<double>& coeffs) {
    return ckks::Polynomial{ckks::PolynomialBasis::kPower, coeffs}.depth();
  };
  return std::visit(Overloaded{
                        [](const Conv2d&) -> std::size_t { return 1; },
                        [](const Linear&) -> std::size_t { return 1; },
                        [](const AvgPool2d&) -> std::size_t { return 1; },
                        [](const AdaptiveAvgPool2d&) -> std::size_t { return 1; },
                        [](const Quadratic&) -> std::size_t { return 1; },
                        [&](const PolynomialActivation& p) { return depth(p.coeffs); },
                        [&](const L2Normalize& l2) { return depth(l2.coeffs) + 2; },
                        [](const auto&) -> std::size_t { return 0; },
                    },
                    op);
}

std::vector<std::size_t> levels_to_join(const Graph& graph) {
  const auto& nodes = graph.nodes();
  const auto consumers = graph.consumers();
  std::vector<std::size_t> out(nodes.size(), 0);
  for (std::size_t u = 0; u < nodes.size(); ++u) {
    if (consumers[u].size() < 2) continue;
    // Longest level count from u's output to each node computed from it (topological order).
    std::vector<std::optional<std::size_t>> reach(nodes.size());
    reach[u] = 0;
    for (std::size_t m = u + 1; m < nodes.size(); ++m) {
      std::size_t from_u = 0, longest = 0;
      for (const std::size_t i : nodes[m].inputs)
        if (reach[i]) ++from_u, longest = std::max(longest, *reach[i]);
      if (from_u == 0) continue;
      if (from_u >= 2) {  // the first join
        out[u] = longest;
        break;
      }
      reach[m] = longest + level_cost(nodes[m].op);
    }
  }
  return out;
}

}  // namespace pfhe::nn
