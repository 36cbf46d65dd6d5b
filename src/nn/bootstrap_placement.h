// What the graph compiler's bootstrap placement (nn/compiled_graph.h) looks ahead at: at a
// fork (a value read by several nodes), the levels its readers consume before their paths
// join again. A residual block's trunk x feeds both x^2 -> conv and the shortcut to the
// Add; bootstrapping x before the block refreshes both paths with one bootstrap, where
// bootstrapping where a value runs out (inside the block, on x^2) leaves the shortcut, and
// so the sum and the next block, at the old level: one bootstrap per block instead of one
// per chain of blocks.
#pragma once
#include <cstddef>
#include <vector>

#include "nn/graph.h"

namespace pfhe::nn {

// Levels a node costs before lowering: a linear layer or a quadratic 1, a polynomial its
// evaluation depth, an L2 normalisation 2 more; element-wise nodes the compiler folds
// (BatchNorm, Scale, Flatten, Add) 0. An estimate: aligning multipliers can add a level.
std::size_t level_cost(const GraphOp& op);

// Per node n: the most levels a path from n's output consumes before reaching the first
// node that reads two values both computed from n (a join), or 0 when n is read by fewer
// than two nodes or its paths never join.
std::vector<std::size_t> levels_to_join(const Graph& graph);

}  // namespace pfhe::nn
