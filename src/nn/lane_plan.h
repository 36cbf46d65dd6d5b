// The compiler's analysis of where the model input goes and which patches share
// ciphertexts (nn/compiled_graph.h, "Inputs"): crops of the input that tile it as a grid
// become the client's patches; patches whose branches have the same structure are
// evaluated together in lanes. Used by CompiledGraph::compile.
#pragma once
#include <string>
#include <vector>

#include "nn/graph.h"
#include "nn/layout.h"

namespace pfhe::nn {

// How the model input reaches the program: whole (no crops), or cut into grid x grid
// patches, crop_of[p] being the Crop node of patch p (row-major).
struct PatchPlan {
  std::size_t grid = 1;
  Shape patch;
  std::vector<std::size_t> crop_of;
};

// `consumers`: Graph::consumers(). Throws std::invalid_argument naming a Crop when the
// input is read both whole and cropped, or its crops do not tile it.
PatchPlan find_patches(const Graph& g, const std::vector<std::vector<std::size_t>>& consumers);

// The layout a linear node writes from input layout `x` (`lanes` lanes; a Linear that ends
// a lane group writes one lane, the sum of its lanes).
Layout linear_output_layout(const GraphNode& node, const Layout& x, std::size_t lanes);

// Which patches share ciphertexts: the branch of each patch and, when their branches can
// share (`exit` not empty), the Linear ending each and the Adds summing them.
struct LanePlan {
  std::size_t lanes = 1;
  std::vector<int> owner;                         // the patch whose branch a node is in, or -1
  std::vector<std::vector<std::size_t>> branch;   // nodes of each patch's branch, ascending
  std::vector<std::size_t> exit;                  // the Linear ending each branch
  std::size_t sum_root = 0;                       // the Add of the exits
  std::vector<bool> inner_sum;                    // Adds below sum_root (not compiled alone)
  std::vector<std::size_t> sum_leaves;            // what sum_root adds up, in order
};

// Throws std::invalid_argument when `requested` lanes (0: as many as fit, at most the patch
// count) are not a power of two, do not fit, or the branches cannot share ciphertexts.
LanePlan plan_lanes(const Graph& g, const std::vector<std::vector<std::size_t>>& consumers, const PatchPlan& patches,
                    std::size_t slots, std::size_t requested);

}  // namespace pfhe::nn
