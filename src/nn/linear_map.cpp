#include "nn/linear_map.h"

#include <bit>
#include <complex>
#include <stdexcept>
#include <string>

namespace pfhe::nn {

Layout with_full_replication(Layout layout) {
  layout.replicas = 1;
  layout.validate();
  layout.replicas = layout.lane_slots() / layout.span();
  return layout;
}

Layout with_rotated_replicas(Layout layout) {
  // A rotation step is span / replicas positions: it needs at least two copies and no
  // more copies than positions (tiny tensors in a large lane keep plain copies).
  layout.rotated = layout.replicas > 1 && layout.span() % layout.replicas == 0;
  layout.validate();
  return layout;
}

std::vector<double> pack_lanes(const std::vector<Tensor>& per_lane, const Layout& layout) {
  layout.validate();
  if (per_lane.size() > layout.lanes) throw std::invalid_argument("pack: more tensors than lanes");
  std::vector<double> v(layout.slots, 0.0);
  for (std::size_t l = 0; l < per_lane.size(); ++l) {
    const Tensor& t = per_lane[l];
    expect_shape(t, layout.shape, "pack");
    for (std::size_t r = 0; r < layout.replicas; ++r)
      for (std::size_t c = 0; c < t.shape.channels; ++c)
        for (std::size_t y = 0; y < t.shape.height; ++y)
          for (std::size_t x = 0; x < t.shape.width; ++x)
            v[layout.replica_slot(r, layout.global_slot(l, c, y, x))] = t.at(c, y, x);
  }
  return v;
}

std::vector<double> pack(const Tensor& t, const Layout& layout) { return pack_lanes({t}, layout); }

std::vector<std::vector<double>> pack_patch_groups(const std::vector<Tensor>& patches, const Layout& layout) {
  std::vector<std::vector<double>> out;
  for (std::size_t first = 0; first < patches.size(); first += layout.lanes) {
    const std::size_t end = std::min(patches.size(), first + layout.lanes);
    out.push_back(pack_lanes({patches.begin() + static_cast<std::ptrdiff_t>(first),
                              patches.begin() + static_cast<std::ptrdiff_t>(end)},
                             layout));
  }
  return out;
}

Tensor unpack(const std::vector<double>& slots, const Layout& layout, std::size_t lane) {
  layout.validate();
  if (slots.size() != layout.slots) throw std::invalid_argument("unpack: slot count mismatch");
  if (lane >= layout.lanes) throw std::invalid_argument("unpack: lane out of range");
  Tensor t(layout.shape);
  for (std::size_t c = 0; c < t.shape.channels; ++c)
    for (std::size_t y = 0; y < t.shape.height; ++y)
      for (std::size_t x = 0; x < t.shape.width; ++x) t.at(c, y, x) = slots[layout.global_slot(lane, c, y, x)];
  return t;
}

namespace {

// Slot counts are powers of two (a mask, not a division: this runs per map entry).
std::size_t diagonal_of(std::size_t out, std::size_t in, std::size_t slots) { return (in + slots - out) & (slots - 1); }

std::vector<long> present_indices(const std::vector<char>& present) {
  std::vector<long> indices;
  for (std::size_t k = 0; k < present.size(); ++k)
    if (present[k]) indices.push_back(static_cast<long>(k));
  return indices;
}

// Builds a map from its entries on copy 0 of both layouts (global slots, every lane),
// expanded to every output copy. With a cyclic input layout each input is read from the
// copy at a non-negative offset below the input period from its output slot, so all
// output copies share the same few diagonals. Two layouts let the copies share the work
// instead (rotate-and-sum steps add them up, SlotLinearMap::post_sum_steps):
// - the output period is smaller than the input period (both plain and cyclic): the output
//   copies inside one input period split every row by offset window (hybrid method);
// - the input copies are rotated (same period, plain cyclic output): an entry at offset t
//   (in copy-0 positions) is read from copy k = t / (span / replicas) at the offset
//   t mod (span / replicas), so all copies use the same span / replicas offset window.
// For Lowered::kDiagonalIndices the copies only mark their diagonals: the expanded map
// (tens of millions of entries for CryptoFaceNet's convolutions) is never stored.
class MapBuilder {
 public:
  MapBuilder(const Layout& in, const Layout& out, Lowered what)
      : in_(in), out_(out), what_(what), n_(out.slots), in_period_(in.period()), out_period_(out.period()) {
    hybrid_ = !in.rotated && !out.rotated && in.cyclic() && out.cyclic() && in_period_ > out_period_;
    copies_split_ = in.rotated && !out.rotated && in.cyclic() && out.cyclic() && in_period_ == out_period_;
    copies_ = hybrid_ ? n_ / in_period_ : copies_split_ ? 1 : out.replicas;
  }
  // Sized once: these maps reach tens of millions of entries, and growing them by doubling
  // was half of a plan's time and ~10 % of CryptoFaceNet4's compile in copies and faults.
  void reserve(std::size_t copy0_entries) { copy0_.reserve(copy0_entries); }
  void add(std::size_t out_slot, std::size_t in_slot, double weight) { copy0_.push_back({out_slot, in_slot, weight}); }
  // `bias0`: one output period (empty: none), repeated on every copy.
  SlotLinearMap finish(const std::vector<double>& bias0) {
    SlotLinearMap m;
    m.slots = n_;
    if (hybrid_)
      for (std::size_t step = out_period_; step < in_period_; step <<= 1) m.post_sum_steps.push_back(static_cast<long>(step));
    if (copies_split_)
      for (std::size_t step = out_period_; step < n_; step <<= 1) m.post_sum_steps.push_back(static_cast<long>(step));
    if (what_ == Lowered::kDiagonalIndices) {
      std::vector<char> present(n_, 0);
      expand([&](std::size_t dst, std::size_t src, double) { present[diagonal_of(dst, src, n_)] = 1; });
      m.planned_indices = present_indices(present);
      return m;
    }
    m.entries.reserve(copy0_.size() * copies_);
    expand([&](std::size_t dst, std::size_t src, double w) { m.entries.push_back({dst, src, w}); });
    if (!bias0.empty()) {
      m.bias.assign(n_, 0.0);
      for (std::size_t k = 0; k < out_.replicas; ++k)
        for (std::size_t s = 0; s < out_period_; ++s) m.bias[out_.replica_slot(k, s)] = bias0[s];
    }
    return m;
  }

 private:
  // x mod m, by a mask when m is a power of two (slot counts and the periods of cyclic
  // layouts are): the divisions were most of a plan's time.
  struct Modulus {
    std::size_t m, mask;
    explicit Modulus(std::size_t m) : m(m), mask(std::has_single_bit(m) ? m - 1 : 0) {}
    std::size_t operator()(std::size_t x) const { return mask ? x & mask : x % m; }
  };

  // Calls emit(out slot, in slot, weight) for every copy of every entry, copy by copy.
  template <typename Emit>
  void expand(Emit&& emit) const {
    const Modulus mod_n(n_), mod_in(in_period_);
    if (hybrid_) {
      const std::size_t window = out_period_;
      const Modulus mod_window(window);
      for (std::size_t block = 0; block < n_; block += in_period_)
        for (const auto& e : copy0_) {
          const std::size_t offset = mod_in(e.in + in_period_ - mod_in(e.out));
          const std::size_t copy = offset / window;  // the output copy whose window holds this input
          const std::size_t dst = block + e.out + copy * window;
          emit(dst, mod_n(dst + mod_window(offset)), e.weight);
        }
    } else if (copies_split_) {
      const std::size_t window = in_period_ / in_.replicas;  // global slots of one rotation step
      const Modulus mod_window(window);
      for (const auto& e : copy0_) {
        const std::size_t offset = mod_in(e.in + in_period_ - e.out);
        const std::size_t src = in_.replica_slot(offset / window, e.in);
        emit(mod_n(src + n_ - mod_window(offset)), src, e.weight);
      }
    } else {
      for (std::size_t k = 0; k < out_.replicas; ++k)
        for (const auto& e : copy0_) {
          const std::size_t dst = out_.replica_slot(k, e.out);
          std::size_t src = e.in;  // copy 0 of a non-cyclic input
          if (in_.rotated) src = in_.replica_slot(k % in_.replicas, e.in);  // the same copy: per-channel maps stay diagonal
          else if (in_.cyclic()) src = mod_n(dst + mod_in(e.in + n_ - mod_in(dst)));
          emit(dst, src, e.weight);
        }
    }
  }

  const Layout& in_;
  const Layout& out_;
  const Lowered what_;
  const std::size_t n_, in_period_, out_period_;
  bool hybrid_ = false, copies_split_ = false;
  std::size_t copies_ = 1;
  std::vector<SlotLinearMap::Entry> copy0_;
};

void check_pair(const Layout& in, const Layout& out, const char* who) {
  in.validate();
  out.validate();
  if (in.slots != out.slots) throw std::invalid_argument(std::string(who) + ": layouts of different slot counts");
}

void check_lanes(std::size_t layers, const Layout& in, const Layout& out, bool may_sum, const char* who) {
  if (layers == 0 || layers > in.lanes) throw std::invalid_argument(std::string(who) + ": one layer per lane expected");
  if (out.lanes != in.lanes && !(may_sum && out.lanes == 1))
    throw std::invalid_argument(std::string(who) + ": input and output lane counts differ");
}

}  // namespace

std::vector<double> SlotLinearMap::apply(const std::vector<double>& x) const {
  if (planned_indices) throw std::logic_error("SlotLinearMap: a map of diagonal indices only cannot be applied");
  if (x.size() != slots) throw std::invalid_argument("SlotLinearMap: input has the wrong slot count");
  std::vector<double> y(slots, 0.0);
  for (const auto& e : entries) y[e.out] += e.weight * x[e.in];
  for (long step : post_sum_steps) {
    const std::vector<double> partial = y;
    for (std::size_t i = 0; i < slots; ++i) y[i] += partial[(i + static_cast<std::size_t>(step)) % slots];
  }
  if (!bias.empty())
    for (std::size_t i = 0; i < slots; ++i) y[i] += bias[i];
  return y;
}

std::vector<long> SlotLinearMap::diagonal_indices() const {
  if (planned_indices) return *planned_indices;
  std::vector<char> present(slots, 0);
  for (const auto& e : entries) present[diagonal_of(e.out, e.in, slots)] = 1;
  return present_indices(present);
}

ckks::Diagonals SlotLinearMap::diagonals() const {
  if (planned_indices) throw std::logic_error("SlotLinearMap: a map of diagonal indices only has no diagonals");
  // Entries are scattered through a flat table from diagonal to its values (millions of
  // entries for the large convolutions: a map lookup each was most of this function).
  const std::vector<long> indices = diagonal_indices();
  std::vector<std::vector<std::complex<double>>*> column(slots, nullptr);
  ckks::Diagonals d;
  for (long k : indices) {
    auto& diag = d.emplace_hint(d.end(), k, std::vector<std::complex<double>>(slots, 0.0))->second;
    column[static_cast<std::size_t>(k)] = &diag;
  }
  for (const auto& e : entries) (*column[diagonal_of(e.out, e.in, slots)])[e.out] += e.weight;
  return d;
}

Layout on_grid(const Shape& shape, std::size_t gap, std::size_t rows, std::size_t cols, std::size_t slots,
               std::size_t lanes) {
  if (shape.height * gap > rows || shape.width * gap > cols)
    throw std::invalid_argument("output " + shape.str() + " at gap " + std::to_string(gap) + " does not fit the input's " +
                                std::to_string(rows) + "x" + std::to_string(cols) +
                                " slot grid (an encrypted layer keeps its input's grid: its output may shrink, not grow)");
  Layout l{shape, gap, slots, 1, lanes};
  if (shape.height * gap != rows || shape.width * gap != cols) {
    l.grid_rows = rows;
    l.grid_cols = cols;
  }
  return l;
}

Layout graph_input_layout(const Shape& shape, std::size_t slots, std::size_t lanes) {
  return with_full_replication(
      on_grid(shape, 1, std::bit_ceil(shape.height), std::bit_ceil(shape.width), slots, lanes));
}

namespace {
// A strided layer multiplies the gap by its stride on the same grid; the output fills the
// grid's top-left corner (output (i, j) where input (i s, j s) was).
Layout strided_output_layout(const Shape& out, std::size_t stride, const Layout& in) {
  Layout o = on_grid(out, in.gap * stride, in.grid_height(), in.grid_width(), in.slots, in.lanes);
  return in.cyclic() ? with_full_replication(o) : (o.validate(), o);
}
}  // namespace

Layout conv_output_layout(const Conv2d& conv, const Layout& in) {
  return strided_output_layout(conv.output_shape(in.shape), conv.stride, in);
}

SlotLinearMap lower_conv(const std::vector<Conv2d>& per_lane, const Layout& in, const Layout& out, Lowered what) {
  check_pair(in, out, "lower_conv");
  check_lanes(per_lane.size(), in, out, false, "lower_conv");
  MapBuilder map(in, out, what);
  std::size_t bound = 0;  // at most one entry per (output, input channel, tap)
  for (const Conv2d& conv : per_lane) bound += out.shape.size() * conv.in_channels * conv.kernel * conv.kernel;
  map.reserve(bound);
  std::vector<double> bias;
  for (std::size_t lane = 0; lane < per_lane.size(); ++lane) {
    const Conv2d& conv = per_lane[lane];
    conv.validate();
    if (!(out.shape == conv.output_shape(in.shape))) throw std::invalid_argument("lower_conv: output layout shape mismatch");
    for (std::size_t o = 0; o < conv.out_channels; ++o)
      for (std::size_t i = 0; i < out.shape.height; ++i)
        for (std::size_t j = 0; j < out.shape.width; ++j) {
          const std::size_t dst = out.global_slot(lane, o, i, j);
          for (std::size_t c = 0; c < conv.in_channels; ++c)
            for (std::size_t dy = 0; dy < conv.kernel; ++dy)
              for (std::size_t dx = 0; dx < conv.kernel; ++dx) {
                const long yy = static_cast<long>(i * conv.stride + dy) - static_cast<long>(conv.padding);
                const long xx = static_cast<long>(j * conv.stride + dx) - static_cast<long>(conv.padding);
                if (yy < 0 || xx < 0 || yy >= static_cast<long>(in.shape.height) ||
                    xx >= static_cast<long>(in.shape.width))
                  continue;
                const double w = conv.w(o, c, dy, dx);
                if (w != 0.0)
                  map.add(dst, in.global_slot(lane, c, static_cast<std::size_t>(yy), static_cast<std::size_t>(xx)), w);
              }
        }
    if (!conv.bias.empty()) {
      bias.resize(out.period(), 0.0);
      for (std::size_t o = 0; o < conv.out_channels; ++o)
        for (std::size_t i = 0; i < out.shape.height; ++i)
          for (std::size_t j = 0; j < out.shape.width; ++j) bias[out.global_slot(lane, o, i, j)] = conv.bias[o];
    }
  }
  return map.finish(bias);
}

Layout pool_output_layout(const AvgPool2d& pool, const Layout& in) {
  return strided_output_layout(pool.output_shape(in.shape), pool.stride, in);
}

SlotLinearMap lower_avg_pool(const AvgPool2d& pool, const Layout& in, const Layout& out, Lowered what) {
  check_pair(in, out, "lower_avg_pool");
  if (!(out.shape == pool.output_shape(in.shape)) || in.lanes != out.lanes)
    throw std::invalid_argument("lower_avg_pool: layout mismatch");
  MapBuilder map(in, out, what);
  map.reserve(in.lanes * out.shape.size() * pool.kernel * pool.kernel);
  const double w = 1.0 / static_cast<double>(pool.kernel * pool.kernel);
  for (std::size_t lane = 0; lane < in.lanes; ++lane)
    for (std::size_t c = 0; c < out.shape.channels; ++c)
      for (std::size_t i = 0; i < out.shape.height; ++i)
        for (std::size_t j = 0; j < out.shape.width; ++j)
          for (std::size_t dy = 0; dy < pool.kernel; ++dy)
            for (std::size_t dx = 0; dx < pool.kernel; ++dx)
              map.add(out.global_slot(lane, c, i, j), in.global_slot(lane, c, i * pool.stride + dy, j * pool.stride + dx),
                      w);
  return map.finish({});
}

SlotLinearMap lower_linear(const std::vector<Linear>& per_lane, const Layout& in, const Layout& out, Lowered what) {
  check_pair(in, out, "lower_linear");
  check_lanes(per_lane.size(), in, out, true, "lower_linear");
  MapBuilder map(in, out, what);
  map.reserve(per_lane.size() * out.shape.size() * in.shape.size());
  std::vector<double> bias;
  for (std::size_t lane = 0; lane < per_lane.size(); ++lane) {
    const Linear& linear = per_lane[lane];
    linear.validate();
    if (in.shape.size() != linear.in_features)
      throw std::invalid_argument("lower_linear: input " + in.shape.str() + " has " + std::to_string(in.shape.size()) +
                                  " features, layer expects " + std::to_string(linear.in_features));
    if (!(out.shape == Shape{linear.out_features, 1, 1}) || out.gap != 1)
      throw std::invalid_argument("lower_linear: output layout must be (" + std::to_string(linear.out_features) +
                                  ", 1, 1) with gap 1");
    const std::size_t out_lane = out.lanes == 1 ? 0 : lane;
    const Shape& s = in.shape;
    for (std::size_t f = 0; f < linear.out_features; ++f)
      for (std::size_t c = 0; c < s.channels; ++c)
        for (std::size_t y = 0; y < s.height; ++y)
          for (std::size_t x = 0; x < s.width; ++x) {
            const double w = linear.weight[f * linear.in_features + (c * s.height + y) * s.width + x];
            if (w != 0.0) map.add(out.global_slot(out_lane, f, 0, 0), in.global_slot(lane, c, y, x), w);
          }
    if (!linear.bias.empty()) {
      bias.resize(out.period(), 0.0);
      for (std::size_t f = 0; f < linear.out_features; ++f) bias[out.global_slot(out_lane, f, 0, 0)] += linear.bias[f];
    }
  }
  return map.finish(bias);
}

SlotLinearMap lower_elementwise(const std::vector<double>& weights, const Layout& in, const Layout& out,
                                Lowered what) {
  check_pair(in, out, "lower_elementwise");
  const std::size_t size = in.shape.size();
  if (in.lanes != out.lanes || out.shape.size() != size || size == 0 || weights.size() % size != 0 ||
      weights.size() / size > in.lanes)
    throw std::invalid_argument("lower_elementwise: element or lane counts differ");
  // Element e (channel-major) of a layout's tensor, in `lane`.
  const auto slot_of = [](const Layout& l, std::size_t lane, std::size_t e) {
    const std::size_t plane = l.shape.height * l.shape.width;
    return l.global_slot(lane, e / plane, (e % plane) / l.shape.width, e % l.shape.width);
  };
  MapBuilder map(in, out, what);
  map.reserve(weights.size());
  for (std::size_t i = 0; i < weights.size(); ++i)
    if (weights[i] != 0.0) map.add(slot_of(out, i / size, i % size), slot_of(in, i / size, i % size), weights[i]);
  return map.finish({});
}

SlotLinearMap lower_channel_affine(const std::vector<ChannelAffine>& per_lane, const Layout& layout, Lowered what) {
  layout.validate();
  check_lanes(per_lane.size(), layout, layout, false, "lower_channel_affine");
  MapBuilder map(layout, layout, what);
  map.reserve(per_lane.size() * layout.shape.size());
  std::vector<double> bias(layout.period(), 0.0);
  for (std::size_t lane = 0; lane < per_lane.size(); ++lane) {
    const ChannelAffine& a = per_lane[lane];
    if (a.scale.size() != layout.shape.channels || a.shift.size() != layout.shape.channels)
      throw std::invalid_argument("lower_channel_affine: channel count mismatch");
    for (std::size_t c = 0; c < layout.shape.channels; ++c)
      for (std::size_t y = 0; y < layout.shape.height; ++y)
        for (std::size_t x = 0; x < layout.shape.width; ++x) {
          const std::size_t s = layout.global_slot(lane, c, y, x);
          map.add(s, s, a.scale[c]);
          bias[s] = a.shift[c];
        }
  }
  return map.finish(bias);
}

}  // namespace pfhe::nn
