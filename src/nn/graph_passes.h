// Graph-to-graph rewrites the compiler applies before lowering (nn/compiled_graph.h). Each
// keeps the graph's float64 forward (up to rounding) and saves encrypted work:
// - a BatchNorm read only from a Conv2d or a Linear, or from a sum of them (Adds, each node
//   read only by the next), becomes part of those layers, its shift shared equally (no
//   plaintext shift step, no multiplier left to align at a residual join or to apply at
//   the output: a classifier's BatchNorm after its per-patch heads costs no level);
// - a pooling into equal blocks that tile its input (adaptive, or an AvgPool2d whose kernel
//   is its stride: what torch exports adaptive_avg_pool2d as) whose output reaches a Linear
//   only through Flatten, BatchNorm and Scale nodes becomes part of that Linear, read
//   through a Flatten of the pooling's input: one linear transform and one level instead
//   of two (the pooling head of CryptoFace's backbones, of ResNets, of a LeNet). The dense
//   layer then reads the pooling's input (its diagonals follow the input's layout, not the
//   feature count).
// - a polynomial activation of degree 2 becomes a Quadratic with the same coefficients in
//   every channel: one level (its leading coefficient rides on the value's multiplier into
//   the next linear layer) instead of the ceil(log2(3)) = 2 of a polynomial evaluation.
// A replaced node keeps the name of the node whose output it now computes (the BatchNorm,
// the Linear), so fit() ranges and reports still find it.
#pragma once
#include "nn/graph.h"

namespace pfhe::nn {

Graph fold_into_linear_layers(const Graph& graph);

}  // namespace pfhe::nn
