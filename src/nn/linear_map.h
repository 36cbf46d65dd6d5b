// Linear layers lowered to linear maps between slot vectors, y = M x + b, and from there to
// the generalized diagonals a LinearTransform evaluates. Lowering works from the layer
// definition and the input/output layouts, so padding, strides, gaps and pooling are all
// captured exactly; the number of distinct diagonals is the cost the layout choice drives.
#pragma once
#include <optional>
#include <vector>

#include "ckks/linear_transform.h"
#include "nn/layers.h"
#include "nn/layout.h"

namespace pfhe::nn {

struct SlotLinearMap {
  struct Entry {
    std::size_t out, in;
    double weight;
  };
  std::size_t slots = 0;
  std::vector<Entry> entries;
  std::vector<double> bias;  // per output slot (empty: none)
  // Rotate-and-sum steps after the diagonals, before the bias: y += rot(y, step) in order.
  // Used when the output span is smaller than the input span (strided convolutions, the
  // pooling head): each output copy inside one input span then sums a different window of
  // inputs, which cuts the diagonal count by span_in / span_out for log2 of that many
  // rotations (the hybrid method for wide matrices).
  std::vector<long> post_sum_steps;

  // A map lowered with Lowered::kDiagonalIndices has no entries, only these (sorted).
  std::optional<std::vector<long>> planned_indices;

  std::vector<double> apply(const std::vector<double>& x) const;  // cleartext reference
  ckks::Diagonals diagonals() const;
  // The keys diagonals() would have (offsets in [0, slots)), without building the values.
  std::vector<long> diagonal_indices() const;
};

// What a lowering builds: the whole map, or (for a plan, which needs only the rotations)
// its diagonal indices, found without materializing the entries of every copy (tens of
// millions for CryptoFaceNet's convolutions: most of a plan's time and memory). A map of
// indices only has no bias either; apply() and diagonals() refuse it (std::logic_error).
enum class Lowered { kEntries, kDiagonalIndices };

// The lowering functions take one layer per lane (fewer than `lanes`: the other lanes
// are zero); a single layer is the one-lane case.

// The output layout a convolution produces from `in`: same grid and lanes, gap multiplied
// by stride, fully replicated when the input is replicated.
Layout conv_output_layout(const Conv2d& conv, const Layout& in);
SlotLinearMap lower_conv(const std::vector<Conv2d>& per_lane, const Layout& in, const Layout& out,
                         Lowered what = Lowered::kEntries);
inline SlotLinearMap lower_conv(const Conv2d& conv, const Layout& in, const Layout& out) {
  return lower_conv(std::vector<Conv2d>{conv}, in, out);
}

Layout pool_output_layout(const AvgPool2d& pool, const Layout& in);
SlotLinearMap lower_avg_pool(const AvgPool2d& pool, const Layout& in, const Layout& out,
                             Lowered what = Lowered::kEntries);

// Linear layer over the channel-major flattening of the input tensor; the output layout is
// (out_features, 1, 1) with gap 1 (feature f in slot f of each replica). With a one-lane
// output the lanes' results are summed (a PatchCNN group's head blocks).
SlotLinearMap lower_linear(const std::vector<Linear>& per_lane, const Layout& in, const Layout& out,
                           Lowered what = Lowered::kEntries);
inline SlotLinearMap lower_linear(const Linear& linear, const Layout& in, const Layout& out) {
  return lower_linear(std::vector<Linear>{linear}, in, out);
}

// y = w (.) x element by element between two layouts of tensors with the same element
// count and lanes: element e (channel-major index) of `in` goes to element e of `out`, so
// a flattened tensor and its (C, H, W) original are interchangeable. `weights` holds one
// weight per element for each lane in turn (lanes beyond them are zero).
SlotLinearMap lower_elementwise(const std::vector<double>& weights, const Layout& in, const Layout& out,
                                Lowered what = Lowered::kEntries);

// Per-channel affine y = scale_c x + shift_c (folded BatchNorm) as a diagonal map; one
// (scale, shift) pair per lane.
struct ChannelAffine {
  std::vector<double> scale, shift;
};
SlotLinearMap lower_channel_affine(const std::vector<ChannelAffine>& per_lane, const Layout& layout,
                                   Lowered what = Lowered::kEntries);
inline SlotLinearMap lower_channel_affine(const std::vector<double>& scale, const std::vector<double>& shift,
                                          const Layout& layout) {
  return lower_channel_affine(std::vector<ChannelAffine>{{scale, shift}}, layout);
}

}  // namespace pfhe::nn
