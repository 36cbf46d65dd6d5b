// Where each tensor element lives in the slots of a ciphertext. A (C, H, W) tensor with
// gap g occupies grids of (H g) x (W g) slots; each grid interleaves g^2 channels inside
// its g x g cells (multiplexed packing), and ceil(C / g^2) grids follow each other.
// A stride-s convolution maps gap g to gap g s on the same grid, so its output needs no
// repacking and every linear layer stays a fixed set of slot diagonals. A layer whose
// output is smaller than its input's grid can hold (a valid, unpadded convolution; a
// pooling that drops a border) keeps that grid too: `grid_rows` x `grid_cols` then
// exceed (H g) x (W g), and the tensor fills the grid's top-left corner.
//
// With `replicas` r, the whole span is stored r times back to back. When r * span equals
// the slot count, a rotation by any offset is cyclic over the span, so a linear layer can
// read every input at a non-negative offset below the span from its output: a convolution
// then needs C channel offsets instead of 2C - 1 (fewer giant-step rotations).
//
// With `rotated` replicas, copy k holds the tensor rotated by k * span / replicas positions
// (the slot of replica k at position p holds the element whose copy-0 position is
// p + k span / replicas, cyclically within the span). A linear layer reading such an input
// can let each copy sum a different window of the inputs and add the copies up by
// rotate-and-sum: a convolution then needs span / replicas of its channel offsets, not
// all of them (SlotLinearMap::post_sum_steps). Its output is plainly replicated.
//
// With `lanes` L > 1, the ciphertext holds L independent tensors (the patches of one
// group, each with its own weights) interleaved slot by slot: lane l owns the slots
// s = l + L p, and p runs over slots / L positions laid out as above. A rotation by L k
// moves every lane by k positions at once, so L patches cost one set of rotations and
// one set of diagonals (their weights side by side in each diagonal).
#pragma once
#include <bit>
#include <stdexcept>
#include <string>

#include "nn/tensor.h"

namespace pfhe::nn {

struct Layout {
  Shape shape;
  std::size_t gap = 1;
  std::size_t slots = 0;  // slot count of the ciphertext holding the tensor
  std::size_t replicas = 1;
  std::size_t lanes = 1;
  bool rotated = false;  // copies rotated against each other (see above)
  // The grid when larger than (H g) x (W g); 0 x 0 otherwise (one form per layout).
  std::size_t grid_rows = 0, grid_cols = 0;

  bool operator==(const Layout&) const = default;

  std::size_t lane_slots() const { return slots / lanes; }
  std::size_t grid_height() const { return grid_rows ? grid_rows : shape.height * gap; }
  std::size_t grid_width() const { return grid_cols ? grid_cols : shape.width * gap; }
  std::size_t channels_per_grid() const { return gap * gap; }
  std::size_t grids() const { return (shape.channels + channels_per_grid() - 1) / channels_per_grid(); }
  // Slots of one copy: the grids rounded up to a power of two, so that replicas of a
  // power-of-two grid can fill a ciphertext exactly (3 input channels take 4 grids).
  std::size_t span() const { return std::bit_ceil(grids()) * grid_height() * grid_width(); }
  // Slots one copy of every lane spans: the period of a fully replicated layout.
  std::size_t period() const { return lanes * span(); }
  // Full replication: the copies fill each lane exactly (rotations are cyclic on the span).
  bool cyclic() const { return replicas * span() == lane_slots(); }

  std::size_t slot(std::size_t c, std::size_t y, std::size_t x) const {
    const std::size_t g = gap, sub = c % (g * g);
    return (c / (g * g)) * grid_height() * grid_width() + (y * g + sub / g) * grid_width() + x * g + sub % g;
  }
  std::size_t global_slot(std::size_t lane, std::size_t c, std::size_t y, std::size_t x) const {
    return lane + lanes * slot(c, y, x);
  }
  // Positions copy k is rotated by (0 without rotated replicas).
  std::size_t replica_shift(std::size_t k) const { return rotated ? k * (span() / replicas) % span() : 0; }
  // Where copy k keeps the element that copy 0 keeps at global slot `base` (< period()).
  std::size_t replica_slot(std::size_t k, std::size_t base) const {
    const std::size_t lane = base % lanes, position = base / lanes;
    return lane + lanes * (k * span() + (position + span() - replica_shift(k)) % span());
  }

  void validate() const {
    if (gap == 0 || shape.size() == 0) throw std::invalid_argument("Layout: empty tensor or zero gap");
    if ((grid_rows != 0) != (grid_cols != 0) ||
        (grid_rows != 0 && (grid_rows < shape.height * gap || grid_cols < shape.width * gap ||
                            (grid_rows == shape.height * gap && grid_cols == shape.width * gap))))
      throw std::invalid_argument("Layout: a " + std::to_string(grid_rows) + "x" + std::to_string(grid_cols) +
                                  " grid must be larger than the tensor " + shape.str() + " at gap " +
                                  std::to_string(gap) + " needs");
    if (slots == 0 || (slots & (slots - 1)) != 0) throw std::invalid_argument("Layout: slot count must be a power of two");
    if (lanes == 0 || (lanes & (lanes - 1)) != 0 || lanes > slots)
      throw std::invalid_argument("Layout: lane count must be a power of two <= slots");
    if (rotated && (replicas < 2 || span() % replicas != 0))
      throw std::invalid_argument("Layout: rotated copies need at least 2 replicas dividing the span");
    if (replicas == 0 || span() * replicas > lane_slots())
      throw std::invalid_argument("Layout: tensor " + shape.str() + " with gap " + std::to_string(gap) + " and " +
                                  std::to_string(replicas) + " replicas needs " + std::to_string(span() * replicas) +
                                  " slots, each of " + std::to_string(lanes) + " lanes has " + std::to_string(lane_slots()));
  }
};

// A layout of `shape` at `gap` on a rows x cols grid (as large as it needs, or larger: the
// grid then is recorded). Throws std::invalid_argument when the tensor does not fit.
Layout on_grid(const Shape& shape, std::size_t gap, std::size_t rows, std::size_t cols, std::size_t slots,
               std::size_t lanes);
// Where a graph puts its input: gap 1 on a grid of power-of-two sides (28 x 28 on 32 x 32),
// so that every span is a power of two and layouts replicate cyclically (a convolution
// then reads C channel offsets, and a dense head splits its rows over the output copies)
// instead of reading one copy at offsets spread over the whole ring.
// With `lanes`, each lane holds one such input (the patches of one lane group).
Layout graph_input_layout(const Shape& shape, std::size_t slots, std::size_t lanes = 1);
// The largest replica count that fits (lane slots / span, a power of two when both are).
Layout with_full_replication(Layout layout);
// The same layout with rotated copies when it has several and they fit a rotation step
// of at least one position (replicas <= span); unchanged otherwise.
Layout with_rotated_replicas(Layout layout);

// Slot vector of one tensor per lane (every replica; lanes without a tensor and unused
// slots are zero) and back (one lane, from replica 0).
std::vector<double> pack_lanes(const std::vector<Tensor>& per_lane, const Layout& layout);
std::vector<double> pack(const Tensor& t, const Layout& layout);  // into lane 0
// Slot vectors of patches, one per lane group: patch p goes to lane p % lanes of group
// p / lanes (layout.lanes lanes; a last, partial group has zero lanes).
std::vector<std::vector<double>> pack_patch_groups(const std::vector<Tensor>& patches, const Layout& layout);
Tensor unpack(const std::vector<double>& slots, const Layout& layout, std::size_t lane = 0);

}  // namespace pfhe::nn
