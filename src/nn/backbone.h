// CryptoFace's per-patch backbone (PatchCNN, CVPR 2025) with its float64 forward:
//   Conv3x3(3 -> c0, s1, p1, no bias)
//   HerPNConv blocks: HerPN -> conv3x3(stride) -> HerPN -> conv3x3(s1), plus a shortcut from
//     the first HerPN's output (identity, or conv1x1(stride) + BatchNorm2d when the shape
//     changes), added to the second conv's output
//   HerPNPool: HerPN -> AdaptiveAvgPool(2) -> Flatten -> BatchNorm1d
// CryptoFaceNet uses channels 16, 16, 32 (s2), 32, 64 (s2), 64 on 32x32 patches.
#pragma once
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "nn/layers.h"

namespace pfhe::nn {

class Graph;

// Sees intermediate values of a forward pass by point name and may change them before the
// pass goes on: fit() records ranges with it, the noise estimate (nn/noise_estimate.h) adds
// the error an encrypted step would add at that point.
using TensorObserver = std::function<void(const std::string& point, Tensor& value)>;

struct HerPNConvBlock {
  HerPN herpn1;
  Conv2d conv1;
  HerPN herpn2;
  Conv2d conv2;
  std::optional<Conv2d> shortcut_conv;  // with shortcut_bn, when the shape changes
  std::optional<BatchNorm> shortcut_bn;

  // Observed points, in order: "<prefix>.herpn1 input", "<prefix>.conv1 input" (herpn1's
  // output, also the shortcut's input), "<prefix>.herpn2 input", "<prefix>.conv2 input",
  // "<prefix> output".
  Tensor forward(const Tensor& x, const TensorObserver* observe = nullptr, const std::string& prefix = {}) const;
  void validate() const;
};

struct Backbone {
  Conv2d conv0;
  std::vector<HerPNConvBlock> blocks;
  HerPN pool_herpn;
  std::size_t pool_size = 2;
  BatchNorm bn1d;  // over the flattened (C * pool^2) features

  // -> (C * pool^2, 1, 1) features. Observed points: "<prefix>.conv output", the blocks'
  // points under "<prefix>.layers.<j>", "<prefix>.herpnpool input" and "<prefix>.pool input"
  // (the pooling HerPN's output).
  Tensor forward(const Tensor& patch, const TensorObserver* observe = nullptr, const std::string& prefix = {}) const;
  // HerPNPool without the BatchNorm1d: flattened AdaptiveAvgPool(HerPN(x)).
  Tensor pooled_features(const Tensor& block_output, const TensorObserver* observe = nullptr,
                         const std::string& prefix = {}) const;
  Shape feature_shape(const Shape& patch) const;
  void validate() const;
  // Appends this backbone to `graph` reading node `input` (a patch), its nodes named
  // "<prefix>.conv", "<prefix>.layers.<j>.herpn1", ..., "<prefix>.bn1d"; returns the
  // features' node. The graph's forward of those nodes equals forward().
  std::size_t append_to(Graph& graph, const std::string& prefix, std::size_t input) const;
};

// Channel plan of a backbone: conv0 output channels and, per block, (out channels, stride).
struct BackboneShape {
  std::size_t in_channels = 3, stem_channels = 16;
  std::vector<std::pair<std::size_t, std::size_t>> blocks = {{16, 1}, {32, 2}, {32, 1}, {64, 2}, {64, 1}};
  std::size_t pool_size = 2;
};

}  // namespace pfhe::nn
