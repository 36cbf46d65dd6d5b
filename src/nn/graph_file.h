// Graph models (nn/graph.h) in the pfhe model file (docs/MODEL_FORMAT.md, architecture
// "graph"): the nodes in topological order with their attributes as JSON, their tensors as
// float32 named "<node>.<tensor>". Loading rebuilds the graph through Graph::add, so every
// shape and layer check applies; malformed files raise ModelFormatError naming the node.
#pragma once
#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "nn/graph.h"
#include "nn/model_file.h"

namespace pfhe::nn {

// Node names must be unique (they name the tensors); tensors are stored as float32.
std::vector<std::uint8_t> save_graph(const Graph& graph);
Graph load_graph(std::span<const std::uint8_t> bytes);

void save_graph_file(const Graph& graph, const std::string& path);
Graph load_graph_file(const std::string& path);
// Whether the file is a model file holding a graph (not a PatchCNN); a damaged model file
// throws ModelFormatError.
bool is_graph_model_file(const std::string& path);

}  // namespace pfhe::nn
