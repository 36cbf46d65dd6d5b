#include "nn/onnx_elementwise.h"

#include <algorithm>
#include <stdexcept>
#include <string>

namespace pfhe::nn::onnx_detail {

namespace {

std::string shape_text(const std::vector<std::int64_t>& dims) {
  std::string s = "(";
  for (std::size_t i = 0; i < dims.size(); ++i) s += (i ? ", " : "") + std::to_string(dims[i]);
  return s + ")";
}

// dims left-padded with ones to `rank` entries.
std::vector<std::int64_t> aligned(const std::vector<std::int64_t>& dims, std::size_t rank) {
  std::vector<std::int64_t> out(rank - dims.size(), 1);
  out.insert(out.end(), dims.begin(), dims.end());
  return out;
}

// Element strides of a tensor of `dims` read at the broadcast output's positions (0 along
// an axis it is broadcast over).
std::vector<std::size_t> broadcast_strides(const std::vector<std::int64_t>& dims) {
  std::vector<std::size_t> strides(dims.size());
  std::size_t stride = 1;
  for (std::size_t a = dims.size(); a-- > 0;) {
    strides[a] = dims[a] == 1 ? 0 : stride;
    stride *= static_cast<std::size_t>(dims[a]);
  }
  return strides;
}

// Coefficients a and b combined entry by entry (one of them may be a single value).
Coefficient combine(const Coefficient& a, const Coefficient& b, const std::function<double(double, double)>& f) {
  if (a.size() != b.size() && a.size() != 1 && b.size() != 1)
    throw std::invalid_argument("per-channel constants over " + std::to_string(a.size()) + " and " +
                                std::to_string(b.size()) + " channels");
  Coefficient out(std::max(a.size(), b.size()));
  for (std::size_t c = 0; c < out.size(); ++c) out[c] = f(a[a.size() == 1 ? 0 : c], b[b.size() == 1 ? 0 : c]);
  return out;
}

}  // namespace

Constant broadcast(const Constant& a, const Constant& b, const std::function<double(double, double)>& f) {
  const std::size_t rank = std::max(a.dims.size(), b.dims.size());
  const auto da = aligned(a.dims, rank), db = aligned(b.dims, rank);
  Constant out{std::vector<std::int64_t>(rank), {}};
  std::size_t count = 1;
  for (std::size_t i = 0; i < rank; ++i) {
    if (da[i] != db[i] && da[i] != 1 && db[i] != 1)
      throw std::invalid_argument("constants of shapes " + shape_text(a.dims) + " and " + shape_text(b.dims) +
                                  " do not broadcast");
    out.dims[i] = std::max(da[i], db[i]);
    count *= static_cast<std::size_t>(out.dims[i]);
  }
  const auto sa = broadcast_strides(da), sb = broadcast_strides(db);
  out.values.resize(count);
  for (std::size_t e = 0; e < count; ++e) {
    std::size_t rest = e, ia = 0, ib = 0;
    for (std::size_t i = rank; i-- > 0;) {
      const auto extent = static_cast<std::size_t>(out.dims[i]), index = rest % extent;
      rest /= extent;
      ia += index * sa[i];
      ib += index * sb[i];
    }
    out.values[e] = f(a.values[ia], b.values[ib]);
  }
  return out;
}

Constant batch_norm_of(const Constant& x, const BatchNorm& bn) {
  if (x.dims.size() < 2 || x.dims[1] != static_cast<std::int64_t>(bn.channels()))
    throw std::invalid_argument("a BatchNorm over " + std::to_string(bn.channels()) + " channels of a constant of shape " +
                                shape_text(x.dims));
  std::vector<double> scale, shift;
  bn.affine_form(scale, shift);
  std::size_t plane = 1;
  for (std::size_t a = 2; a < x.dims.size(); ++a) plane *= static_cast<std::size_t>(x.dims[a]);
  Constant y = x;
  for (std::size_t e = 0; e < y.values.size(); ++e) {
    const std::size_t c = e / plane % bn.channels();
    y.values[e] = scale[c] * x.values[e] + shift[c];
  }
  return y;
}

Coefficient per_channel(const Constant& k, const std::vector<std::size_t>& value_dims) {
  std::vector<std::int64_t> target(value_dims.begin(), value_dims.end());
  if (k.dims.size() > target.size())
    throw std::invalid_argument("a constant of shape " + shape_text(k.dims) + " does not broadcast to the value's " +
                                shape_text(target));
  const auto dims = aligned(k.dims, target.size());
  for (std::size_t a = 0; a < dims.size(); ++a)
    if (dims[a] != 1 && dims[a] != target[a])
      throw std::invalid_argument("a constant of shape " + shape_text(k.dims) + " does not broadcast to the value's " +
                                  shape_text(target));
  std::size_t plane = 1;
  for (std::size_t a = 2; a < dims.size(); ++a) plane *= static_cast<std::size_t>(dims[a]);
  const std::size_t channels = static_cast<std::size_t>(dims[1]);
  Coefficient out(channels);
  for (std::size_t e = 0; e < k.values.size(); ++e) {
    const std::size_t c = e / plane % channels;
    if (e % plane == 0 && e / plane < channels) out[c] = k.values[e];
    if (k.values[e] != out[c])
      throw std::invalid_argument("a constant that varies within a channel (only scalars and per-channel constants "
                                  "are supported)");
  }
  if (std::all_of(out.begin(), out.end(), [&](double v) { return v == out.front(); })) out.resize(1);
  return out;
}

bool ChannelPoly::uniform() const {
  return std::all_of(coeffs.begin(), coeffs.end(), [](const Coefficient& c) { return c.size() == 1; });
}

std::vector<double> ChannelPoly::expanded(std::size_t k, std::size_t channels) const {
  const Coefficient& c = coeffs.at(k);
  if (c.size() == 1) return std::vector<double>(channels, c.front());
  if (c.size() != channels)
    throw std::invalid_argument("per-channel coefficients over " + std::to_string(c.size()) + " channels, the value has " +
                                std::to_string(channels));
  return c;
}

ChannelPoly ChannelPoly::times(const Coefficient& k) const {
  ChannelPoly p = *this;
  for (Coefficient& c : p.coeffs) c = combine(c, k, std::multiplies<>());
  return p.normalized();
}

ChannelPoly ChannelPoly::plus(const Coefficient& k) const {
  ChannelPoly p = *this;
  p.coeffs[0] = combine(p.coeffs[0], k, std::plus<>());
  return p.normalized();
}

ChannelPoly ChannelPoly::times(const ChannelPoly& other) const {
  ChannelPoly p{std::vector<Coefficient>(coeffs.size() + other.coeffs.size() - 1, Coefficient{0.0})};
  for (std::size_t i = 0; i < coeffs.size(); ++i)
    for (std::size_t j = 0; j < other.coeffs.size(); ++j)
      p.coeffs[i + j] = combine(p.coeffs[i + j], combine(coeffs[i], other.coeffs[j], std::multiplies<>()), std::plus<>());
  return p.normalized();
}

ChannelPoly ChannelPoly::plus(const ChannelPoly& other, double sign) const {
  ChannelPoly p = *this;
  p.coeffs.resize(std::max(coeffs.size(), other.coeffs.size()), Coefficient{0.0});
  for (std::size_t k = 0; k < other.coeffs.size(); ++k)
    p.coeffs[k] = combine(p.coeffs[k], other.coeffs[k], [&](double a, double b) { return a + sign * b; });
  return p.normalized();
}

ChannelPoly ChannelPoly::normalized() const {
  ChannelPoly p = *this;
  for (Coefficient& c : p.coeffs)
    if (std::all_of(c.begin(), c.end(), [&](double v) { return v == c.front(); })) c.resize(1);
  while (p.coeffs.size() > 1 && p.coeffs.back().size() == 1 && p.coeffs.back().front() == 0.0) p.coeffs.pop_back();
  return p;
}

}  // namespace pfhe::nn::onnx_detail
