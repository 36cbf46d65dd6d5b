#include "nn/linear_map.h"

#include <string>

namespace pfhe::nn {

std::vector<double> pack(const Tensor& t, const Layout& layout) {
  layout.validate();
  expect_shape(t, layout.shape, "pack");
  std::vector<double> v(layout.slots, 0.0);
  for (std::size_t c = 0; c < t.shape.channels; ++c)
    for (std::size_t y = 0; y < t.shape.height; ++y)
      for (std::size_t x = 0; x < t.shape.width; ++x) v[layout.slot(c, y, x)] = t.at(c, y, x);
  return v;
}

Tensor unpack(const std::vector<double>& slots, const Layout& layout) {
  layout.validate();
  if (slots.size() != layout.slots) throw std::invalid_argument("unpack: slot count mismatch");
  Tensor t(layout.shape);
  for (std::size_t c = 0; c < t.shape.channels; ++c)
    for (std::size_t y = 0; y < t.shape.height; ++y)
      for (std::size_t x = 0; x < t.shape.width; ++x) t.at(c, y, x) = slots[layout.slot(c, y, x)];
  return t;
}

std::vector<double> SlotLinearMap::apply(const std::vector<double>& x) const {
  if (x.size() != slots) throw std::invalid_argument("SlotLinearMap: input has the wrong slot count");
  std::vector<double> y = bias.empty() ? std::vector<double>(slots, 0.0) : bias;
  for (const auto& e : entries) y[e.out] += e.weight * x[e.in];
  return y;
}

ckks::Diagonals SlotLinearMap::diagonals() const {
  ckks::Diagonals d;
  const long n = static_cast<long>(slots);
  for (const auto& e : entries) {
    const long k = ((static_cast<long>(e.in) - static_cast<long>(e.out)) % n + n) % n;
    auto& diag = d[k];
    if (diag.empty()) diag.assign(slots, 0.0);
    diag[e.out] += e.weight;
  }
  return d;
}

Layout conv_output_layout(const Conv2d& conv, const Layout& in) {
  const Shape out = conv.output_shape(in.shape);
  if (in.grid_height() % out.height != 0 || in.grid_width() % out.width != 0)
    throw std::invalid_argument("conv_output_layout: output " + out.str() + " does not tile the input grid");
  Layout o{out, in.grid_height() / out.height, in.slots};
  o.validate();
  return o;
}

SlotLinearMap lower_conv(const Conv2d& conv, const Layout& in, const Layout& out) {
  conv.validate();
  in.validate();
  out.validate();
  if (!(out.shape == conv.output_shape(in.shape))) throw std::invalid_argument("lower_conv: output layout shape mismatch");
  if (in.slots != out.slots) throw std::invalid_argument("lower_conv: layouts of different slot counts");
  SlotLinearMap m;
  m.slots = in.slots;
  for (std::size_t o = 0; o < conv.out_channels; ++o)
    for (std::size_t i = 0; i < out.shape.height; ++i)
      for (std::size_t j = 0; j < out.shape.width; ++j) {
        const std::size_t dst = out.slot(o, i, j);
        for (std::size_t c = 0; c < conv.in_channels; ++c)
          for (std::size_t dy = 0; dy < conv.kernel; ++dy)
            for (std::size_t dx = 0; dx < conv.kernel; ++dx) {
              const long yy = static_cast<long>(i * conv.stride + dy) - static_cast<long>(conv.padding);
              const long xx = static_cast<long>(j * conv.stride + dx) - static_cast<long>(conv.padding);
              if (yy < 0 || xx < 0 || yy >= static_cast<long>(in.shape.height) || xx >= static_cast<long>(in.shape.width))
                continue;
              const double w = conv.w(o, c, dy, dx);
              if (w != 0.0)
                m.entries.push_back({dst, in.slot(c, static_cast<std::size_t>(yy), static_cast<std::size_t>(xx)), w});
            }
      }
  if (!conv.bias.empty()) {
    m.bias.assign(m.slots, 0.0);
    for (std::size_t o = 0; o < conv.out_channels; ++o)
      for (std::size_t i = 0; i < out.shape.height; ++i)
        for (std::size_t j = 0; j < out.shape.width; ++j) m.bias[out.slot(o, i, j)] = conv.bias[o];
  }
  return m;
}

Layout pool_output_layout(const AvgPool2d& pool, const Layout& in) {
  const Shape out = pool.output_shape(in.shape);
  if (in.grid_height() % out.height != 0 || in.grid_width() % out.width != 0)
    throw std::invalid_argument("pool_output_layout: output " + out.str() + " does not tile the input grid");
  Layout o{out, in.grid_height() / out.height, in.slots};
  o.validate();
  return o;
}

SlotLinearMap lower_avg_pool(const AvgPool2d& pool, const Layout& in, const Layout& out) {
  if (!(out.shape == pool.output_shape(in.shape)) || in.slots != out.slots)
    throw std::invalid_argument("lower_avg_pool: layout mismatch");
  SlotLinearMap m;
  m.slots = in.slots;
  const double w = 1.0 / static_cast<double>(pool.kernel * pool.kernel);
  for (std::size_t c = 0; c < out.shape.channels; ++c)
    for (std::size_t i = 0; i < out.shape.height; ++i)
      for (std::size_t j = 0; j < out.shape.width; ++j)
        for (std::size_t dy = 0; dy < pool.kernel; ++dy)
          for (std::size_t dx = 0; dx < pool.kernel; ++dx)
            m.entries.push_back({out.slot(c, i, j), in.slot(c, i * pool.stride + dy, j * pool.stride + dx), w});
  return m;
}

SlotLinearMap lower_linear(const Linear& linear, const Layout& in) {
  linear.validate();
  in.validate();
  if (in.shape.size() != linear.in_features)
    throw std::invalid_argument("lower_linear: input " + in.shape.str() + " has " + std::to_string(in.shape.size()) +
                                " features, layer expects " + std::to_string(linear.in_features));
  if (linear.out_features > in.slots) throw std::invalid_argument("lower_linear: more outputs than slots");
  SlotLinearMap m;
  m.slots = in.slots;
  const Shape& s = in.shape;
  for (std::size_t f = 0; f < linear.out_features; ++f)
    for (std::size_t c = 0; c < s.channels; ++c)
      for (std::size_t y = 0; y < s.height; ++y)
        for (std::size_t x = 0; x < s.width; ++x) {
          const double w = linear.weight[f * linear.in_features + (c * s.height + y) * s.width + x];
          if (w != 0.0) m.entries.push_back({f, in.slot(c, y, x), w});
        }
  if (!linear.bias.empty()) {
    m.bias.assign(m.slots, 0.0);
    for (std::size_t f = 0; f < linear.out_features; ++f) m.bias[f] = linear.bias[f];
  }
  return m;
}

SlotLinearMap lower_channel_affine(const std::vector<double>& scale, const std::vector<double>& shift,
                                   const Layout& layout) {
  layout.validate();
  if (scale.size() != layout.shape.channels || shift.size() != layout.shape.channels)
    throw std::invalid_argument("lower_channel_affine: channel count mismatch");
  SlotLinearMap m;
  m.slots = layout.slots;
  m.bias.assign(m.slots, 0.0);
  for (std::size_t c = 0; c < layout.shape.channels; ++c)
    for (std::size_t y = 0; y < layout.shape.height; ++y)
      for (std::size_t x = 0; x < layout.shape.width; ++x) {
        const std::size_t s = layout.slot(c, y, x);
        m.entries.push_back({s, s, scale[c]});
        m.bias[s] = shift[c];
      }
  return m;
}

}  // namespace pfhe::nn
