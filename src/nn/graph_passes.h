// Graph-to-graph rewrites the compiler applies before lowering (nn/compiled_graph.h). Each
// keeps the graph's float64 forward (up to rounding) and saves encrypted work:
// - a BatchNorm read only from a Conv2d becomes part of that convolution (no plaintext
//   shift step, no multiplier left to align at a residual join);
// - an adaptive (global) average pooling whose output reaches a Linear only through
//   Flatten, BatchNorm and Scale nodes becomes part of that Linear, read through a Flatten
//   of the pooling's input: one linear transform and one level instead of two (the
//   pooling head of CryptoFace's backbones and of ResNets). Strided AvgPool2d layers stay:
//   folding them would multiply the dense layer's inputs for no level saved in general.
// A replaced node keeps the name of the node whose output it now computes (the BatchNorm,
// the Linear), so fit() ranges and reports still find it.
#pragma once
#include "nn/graph.h"

namespace pfhe::nn {

// bn(conv(x)) as one convolution.
Conv2d fold_batch_norm(Conv2d conv, const BatchNorm& bn);

Graph fold_into_linear_layers(const Graph& graph);

}  // namespace pfhe::nn
