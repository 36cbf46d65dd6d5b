// Element-wise algebra the ONNX importer (nn/onnx_import.h) follows symbolically: constant
// tensors with ONNX broadcasting, and polynomials of one value whose coefficients are the
// same for every channel or one per channel (what torch writes for a HerPN: BatchNorms of
// 1, x and x^2, scaled and shifted per channel, summed). Internal to the importer.
#pragma once
#include <cstdint>
#include <functional>
#include <vector>

#include "nn/layers.h"

namespace pfhe::nn::onnx_detail {

// A constant tensor (initializer or Constant node) in float64.
struct Constant {
  std::vector<std::int64_t> dims;
  std::vector<double> values;
  std::size_t size() const { return values.size(); }
};

// f applied element-wise under ONNX (numpy) broadcasting. Throws std::invalid_argument
// when the shapes do not broadcast.
Constant broadcast(const Constant& a, const Constant& b, const std::function<double(double, double)>& f);

// BatchNormalization (inference) of a constant of rank >= 2, channels along axis 1.
Constant batch_norm_of(const Constant& x, const BatchNorm& bn);

// One coefficient of a channel polynomial: a single value for every channel, or one per
// channel.
using Coefficient = std::vector<double>;

// The per-channel values of constant k broadcast against a value of ONNX shape
// value_dims ((1, C, H, W) or (1, F)): one value when k is the same everywhere, else one
// per channel. Throws std::invalid_argument when k does not broadcast to that shape or
// varies within a channel.
Coefficient per_channel(const Constant& k, const std::vector<std::size_t>& value_dims);

// sum_k coeffs[k] x^k with per-channel coefficients; trailing zero powers are dropped and a
// coefficient equal on every channel is kept as one value.
struct ChannelPoly {
  std::vector<Coefficient> coeffs;

  static ChannelPoly identity() { return {{{0.0}, {1.0}}}; }
  std::size_t degree() const { return coeffs.size() - 1; }
  bool uniform() const;  // every coefficient one value
  // The coefficient of x^k expanded to `channels` values.
  std::vector<double> expanded(std::size_t k, std::size_t channels) const;

  ChannelPoly times(const Coefficient& k) const;
  ChannelPoly plus(const Coefficient& k) const;
  ChannelPoly times(const ChannelPoly& other) const;
  ChannelPoly plus(const ChannelPoly& other, double sign) const;
  ChannelPoly normalized() const;
};

}  // namespace pfhe::nn::onnx_detail
