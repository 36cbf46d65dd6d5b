#include "nn/linear_map.h"

#include <complex>
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

// Expands a map given on copy 0 of both layouts (global slots, every lane) to every
// output copy. With a cyclic input layout each input is read from the copy at a
// non-negative offset below the input period from its output slot, so all output copies
// share the same few diagonals. Two layouts let the copies share the work instead
// (rotate-and-sum steps add them up, SlotLinearMap::post_sum_steps):
// - the output period is smaller than the input period (both plain and cyclic): the output
//   copies inside one input period split every row by offset window (hybrid method);
// - the input copies are rotated (same period, plain cyclic output): an entry at offset t
//   (in copy-0 positions) is read from copy k = t / (span / replicas) at the offset
//   t mod (span / replicas), so all copies use the same span / replicas offset window.
SlotLinearMap replicate(std::vector<SlotLinearMap::Entry> entries, const std::vector<double>& bias0,
                        const Layout& in, const Layout& out) {
  SlotLinearMap m;
  m.slots = out.slots;
  const std::size_t n = out.slots;
  const std::size_t in_period = in.period(), out_period = out.period();
  const bool hybrid = !in.rotated && !out.rotated && in.cyclic() && out.cyclic() && in_period > out_period;
  const bool copies_split = in.rotated && !out.rotated && in.cyclic() && out.cyclic() && in_period == out_period;
  // Sized once: these maps reach tens of millions of entries, and growing them by doubling
  // cost CryptoFaceNet4's compile ~10 % in page faults and copies.
  m.entries.reserve(entries.size() * (hybrid ? n / in_period : copies_split ? 1 : out.replicas));
  if (hybrid) {
    const std::size_t window = out_period;
    for (std::size_t block = 0; block < n; block += in_period)
      for (const auto& e : entries) {
        const std::size_t offset = (e.in + in_period - e.out % in_period) % in_period;
        const std::size_t copy = offset / window;  // the output copy whose window holds this input
        const std::size_t dst = block + e.out + copy * window;
        m.entries.push_back({dst, (dst + offset % window) % n, e.weight});
      }
    for (std::size_t step = window; step < in_period; step <<= 1) m.post_sum_steps.push_back(static_cast<long>(step));
  } else if (copies_split) {
    const std::size_t window = in_period / in.replicas;  // global slots of one rotation step
    for (const auto& e : entries) {
      const std::size_t offset = (e.in + in_period - e.out) % in_period;
      const std::size_t copy = offset / window;
      const std::size_t src = in.replica_slot(copy, e.in);
      m.entries.push_back({(src + n - offset % window) % n, src, e.weight});
    }
    for (std::size_t step = out_period; step < n; step <<= 1) m.post_sum_steps.push_back(static_cast<long>(step));
  } else {
    for (std::size_t k = 0; k < out.replicas; ++k)
      for (const auto& e : entries) {
        const std::size_t dst = out.replica_slot(k, e.out);
        std::size_t src = e.in;  // copy 0 of a non-cyclic input
        if (in.rotated) src = in.replica_slot(k % in.replicas, e.in);  // the same copy: per-channel maps stay diagonal
        else if (in.cyclic()) src = (dst + (e.in + n - dst % in_period) % in_period) % n;
        m.entries.push_back({dst, src, e.weight});
      }
  }
  if (!bias0.empty()) {
    m.bias.assign(n, 0.0);
    for (std::size_t k = 0; k < out.replicas; ++k)
      for (std::size_t s = 0; s < out_period; ++s) m.bias[out.replica_slot(k, s)] = bias0[s];
  }
  return m;
}

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

namespace {
long diagonal_of(const SlotLinearMap::Entry& e, std::size_t slots) {
  const long n = static_cast<long>(slots);
  return ((static_cast<long>(e.in) - static_cast<long>(e.out)) % n + n) % n;
}
}  // namespace

std::vector<long> SlotLinearMap::diagonal_indices() const {
  std::vector<char> present(slots, 0);
  for (const auto& e : entries) present[static_cast<std::size_t>(diagonal_of(e, slots))] = 1;
  std::vector<long> indices;
  for (std::size_t k = 0; k < slots; ++k)
    if (present[k]) indices.push_back(static_cast<long>(k));
  return indices;
}

ckks::Diagonals SlotLinearMap::diagonals() const {
  // Entries are scattered through a flat table from diagonal to its values (millions of
  // entries for the large convolutions: a map lookup each was most of this function).
  const std::vector<long> indices = diagonal_indices();
  std::vector<std::vector<std::complex<double>>*> column(slots, nullptr);
  ckks::Diagonals d;
  for (long k : indices) {
    auto& diag = d.emplace_hint(d.end(), k, std::vector<std::complex<double>>(slots, 0.0))->second;
    column[static_cast<std::size_t>(k)] = &diag;
  }
  for (const auto& e : entries) (*column[static_cast<std::size_t>(diagonal_of(e, slots))])[e.out] += e.weight;
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

SlotLinearMap lower_conv(const std::vector<Conv2d>& per_lane, const Layout& in, const Layout& out) {
  check_pair(in, out, "lower_conv");
  check_lanes(per_lane.size(), in, out, false, "lower_conv");
  std::vector<SlotLinearMap::Entry> entries;
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
                  entries.push_back(
                      {dst, in.global_slot(lane, c, static_cast<std::size_t>(yy), static_cast<std::size_t>(xx)), w});
              }
        }
    if (!conv.bias.empty()) {
      bias.resize(out.period(), 0.0);
      for (std::size_t o = 0; o < conv.out_channels; ++o)
        for (std::size_t i = 0; i < out.shape.height; ++i)
          for (std::size_t j = 0; j < out.shape.width; ++j) bias[out.global_slot(lane, o, i, j)] = conv.bias[o];
    }
  }
  return replicate(std::move(entries), bias, in, out);
}

Layout pool_output_layout(const AvgPool2d& pool, const Layout& in) {
  return strided_output_layout(pool.output_shape(in.shape), pool.stride, in);
}

SlotLinearMap lower_avg_pool(const AvgPool2d& pool, const Layout& in, const Layout& out) {
  check_pair(in, out, "lower_avg_pool");
  if (!(out.shape == pool.output_shape(in.shape)) || in.lanes != out.lanes)
    throw std::invalid_argument("lower_avg_pool: layout mismatch");
  std::vector<SlotLinearMap::Entry> entries;
  const double w = 1.0 / static_cast<double>(pool.kernel * pool.kernel);
  for (std::size_t lane = 0; lane < in.lanes; ++lane)
    for (std::size_t c = 0; c < out.shape.channels; ++c)
      for (std::size_t i = 0; i < out.shape.height; ++i)
        for (std::size_t j = 0; j < out.shape.width; ++j)
          for (std::size_t dy = 0; dy < pool.kernel; ++dy)
            for (std::size_t dx = 0; dx < pool.kernel; ++dx)
              entries.push_back({out.global_slot(lane, c, i, j),
                                 in.global_slot(lane, c, i * pool.stride + dy, j * pool.stride + dx), w});
  return replicate(std::move(entries), {}, in, out);
}

SlotLinearMap lower_linear(const std::vector<Linear>& per_lane, const Layout& in, const Layout& out) {
  check_pair(in, out, "lower_linear");
  check_lanes(per_lane.size(), in, out, true, "lower_linear");
  std::vector<SlotLinearMap::Entry> entries;
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
            if (w != 0.0) entries.push_back({out.global_slot(out_lane, f, 0, 0), in.global_slot(lane, c, y, x), w});
          }
    if (!linear.bias.empty()) {
      bias.resize(out.period(), 0.0);
      for (std::size_t f = 0; f < linear.out_features; ++f) bias[out.global_slot(out_lane, f, 0, 0)] += linear.bias[f];
    }
  }
  return replicate(std::move(entries), bias, in, out);
}

SlotLinearMap lower_elementwise(const std::vector<double>& weights, const Layout& in, const Layout& out) {
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
  std::vector<SlotLinearMap::Entry> entries;
  for (std::size_t i = 0; i < weights.size(); ++i)
    if (weights[i] != 0.0) entries.push_back({slot_of(out, i / size, i % size), slot_of(in, i / size, i % size), weights[i]});
  return replicate(std::move(entries), {}, in, out);
}

SlotLinearMap lower_channel_affine(const std::vector<ChannelAffine>& per_lane, const Layout& layout) {
  layout.validate();
  check_lanes(per_lane.size(), layout, layout, false, "lower_channel_affine");
  std::vector<SlotLinearMap::Entry> entries;
  std::vector<double> bias(layout.period(), 0.0);
  for (std::size_t lane = 0; lane < per_lane.size(); ++lane) {
    const ChannelAffine& a = per_lane[lane];
    if (a.scale.size() != layout.shape.channels || a.shift.size() != layout.shape.channels)
      throw std::invalid_argument("lower_channel_affine: channel count mismatch");
    for (std::size_t c = 0; c < layout.shape.channels; ++c)
      for (std::size_t y = 0; y < layout.shape.height; ++y)
        for (std::size_t x = 0; x < layout.shape.width; ++x) {
          const std::size_t s = layout.global_slot(lane, c, y, x);
          entries.push_back({s, s, a.scale[c]});
          bias[s] = a.shift[c];
        }
  }
  return replicate(std::move(entries), bias, layout, layout);
}

}  // namespace pfhe::nn
