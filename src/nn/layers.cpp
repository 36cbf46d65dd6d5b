#include "nn/layers.h"

#include <algorithm>
#include <cmath>
#include <numbers>
#include <string>

namespace pfhe::nn {

namespace {
void require(bool ok, const std::string& what) {
  if (!ok) throw std::invalid_argument(what);
}
}  // namespace

void Conv2d::validate() const {
  require(in_channels > 0 && out_channels > 0 && kernel > 0 && stride > 0, "Conv2d: zero dimension");
  require(weight.size() == out_channels * in_channels * kernel * kernel, "Conv2d: weight has the wrong size");
  require(bias.empty() || bias.size() == out_channels, "Conv2d: bias has the wrong size");
}

Shape Conv2d::output_shape(const Shape& in) const {
  require(in.channels == in_channels, "Conv2d: input has " + std::to_string(in.channels) + " channels, expected " +
                                          std::to_string(in_channels));
  require(in.height + 2 * padding >= kernel && in.width + 2 * padding >= kernel, "Conv2d: input smaller than kernel");
  return {out_channels, (in.height + 2 * padding - kernel) / stride + 1, (in.width + 2 * padding - kernel) / stride + 1};
}

Tensor Conv2d::forward(const Tensor& x) const {
  validate();
  Tensor y(output_shape(x.shape));
  const long height = static_cast<long>(x.shape.height), width = static_cast<long>(x.shape.width);
  const long pad = static_cast<long>(padding), step = static_cast<long>(stride);
  for (std::size_t o = 0; o < out_channels; ++o) {
    double* out = &y.at(o, 0, 0);
    std::fill(out, out + y.shape.height * y.shape.width, bias.empty() ? 0.0 : bias[o]);
    // Every output element receives its terms in (c, dy, dx) order, as a per-element sum
    // would add them, so results do not depend on this loop order; the inner loop runs
    // along an input row and vectorises.
    for (std::size_t c = 0; c < in_channels; ++c)
      for (std::size_t dy = 0; dy < kernel; ++dy)
        for (std::size_t dx = 0; dx < kernel; ++dx) {
          const double weight = w(o, c, dy, dx);
          const long off = static_cast<long>(dx) - pad;
          // Output columns j whose input column j * stride + off lies inside the row.
          const long first = off >= 0 ? 0 : (-off + step - 1) / step;
          const long last = std::min(static_cast<long>(y.shape.width), (width - off + step - 1) / step);
          for (std::size_t i = 0; i < y.shape.height; ++i) {
            const long yy = static_cast<long>(i) * step + static_cast<long>(dy) - pad;
            if (yy < 0 || yy >= height) continue;
            const double* row = x.data.data() + (c * x.shape.height + static_cast<std::size_t>(yy)) * x.shape.width;
            double* dst = out + i * y.shape.width;
            for (long j = first; j < last; ++j) dst[j] += weight * row[j * step + off];
          }
        }
  }
  return y;
}

void BatchNorm::validate() const {
  const std::size_t c = mean.size();
  require(c > 0 && var.size() == c, "BatchNorm: mean/var sizes differ");
  require(gamma.empty() || gamma.size() == c, "BatchNorm: gamma has the wrong size");
  require(beta.empty() || beta.size() == c, "BatchNorm: beta has the wrong size");
  require(eps > 0, "BatchNorm: eps must be positive");
  for (double v : var) require(v >= 0 && std::isfinite(v), "BatchNorm: variance must be finite and >= 0");
}

void BatchNorm::affine_form(std::vector<double>& scale, std::vector<double>& shift) const {
  validate();
  scale.resize(channels());
  shift.resize(channels());
  for (std::size_t c = 0; c < channels(); ++c) {
    const double g = gamma.empty() ? 1.0 : gamma[c], b = beta.empty() ? 0.0 : beta[c];
    scale[c] = g / std::sqrt(var[c] + eps);
    shift[c] = b - mean[c] * scale[c];
  }
}

Tensor BatchNorm::forward(const Tensor& x) const {
  std::vector<double> scale, shift;
  affine_form(scale, shift);
  const bool per_feature = x.shape.height == 1 && x.shape.width == 1 && x.shape.channels == channels();
  require(per_feature || x.shape.channels == channels(), "BatchNorm: channel count mismatch");
  Tensor y = x;
  const std::size_t plane = x.shape.height * x.shape.width;
  for (std::size_t i = 0; i < y.data.size(); ++i) {
    const std::size_t c = i / plane;
    y.data[i] = scale[c] * x.data[i] + shift[c];
  }
  return y;
}

void Quadratic::validate() const {
  require(!w2.empty() && w1.size() == w2.size() && w0.size() == w2.size(), "Quadratic: coefficient sizes differ");
  for (const auto* w : {&w2, &w1, &w0})
    for (const double v : *w) require(std::isfinite(v), "Quadratic: coefficient is not finite");
}

Tensor Quadratic::forward(const Tensor& x) const {
  require(w2.size() == x.shape.channels && w1.size() == w2.size() && w0.size() == w2.size(),
          "Quadratic: channel count mismatch");
  Tensor y = x;
  const std::size_t plane = x.shape.height * x.shape.width;
  for (std::size_t i = 0; i < y.data.size(); ++i) {
    const std::size_t c = i / plane;
    const double v = x.data[i];
    y.data[i] = w2[c] * v * v + w1[c] * v + w0[c];
  }
  return y;
}

void HerPN::validate() const {
  const std::size_t c = gamma.size();
  require(c > 0 && beta.size() == c, "HerPN: gamma/beta sizes differ");
  for (const BatchNorm* bn : {&bn0, &bn1, &bn2}) {
    bn->validate();
    require(bn->channels() == c, "HerPN: BatchNorm channel count mismatch");
  }
}

Tensor HerPN::forward(const Tensor& x) const {
  validate();
  require(x.shape.channels == channels(), "HerPN: channel count mismatch");
  Tensor h0(x.shape, 1.0), h1 = x, h2 = x;
  for (auto& v : h2.data) v = (v * v - 1.0) / std::numbers::sqrt2;
  const Tensor b0 = bn0.forward(h0), b1 = bn1.forward(h1), b2 = bn2.forward(h2);
  Tensor y = x;
  const std::size_t plane = x.shape.height * x.shape.width;
  const double inv_sqrt_2pi = 1.0 / std::sqrt(2 * std::numbers::pi), inv_sqrt_4pi = 1.0 / std::sqrt(4 * std::numbers::pi);
  for (std::size_t i = 0; i < y.data.size(); ++i) {
    const std::size_t c = i / plane;
    y.data[i] = gamma[c] * (b0.data[i] * inv_sqrt_2pi + b1.data[i] / 2 + b2.data[i] * inv_sqrt_4pi) + beta[c];
  }
  return y;
}

Quadratic HerPN::fuse() const {
  validate();
  const std::size_t n = channels();
  Quadratic q{std::vector<double>(n), std::vector<double>(n), std::vector<double>(n)};
  const double pi = std::numbers::pi;
  for (std::size_t c = 0; c < n; ++c) {
    const double s0 = std::sqrt(bn0.var[c] + bn0.eps), s1 = std::sqrt(bn1.var[c] + bn1.eps),
                 s2 = std::sqrt(bn2.var[c] + bn2.eps);
    // BN2((x^2-1)/sqrt2)/sqrt(4pi) = (x^2 - 1 - sqrt2 m2) / (sqrt(8 pi) s2)
    q.w2[c] = gamma[c] / (std::sqrt(8 * pi) * s2);
    q.w1[c] = gamma[c] / (2 * s1);
    q.w0[c] = beta[c] + gamma[c] * ((1 - bn0.mean[c]) / (std::sqrt(2 * pi) * s0) - bn1.mean[c] / (2 * s1) -
                                    (1 + std::numbers::sqrt2 * bn2.mean[c]) / (std::sqrt(8 * pi) * s2));
  }
  return q;
}

Shape AvgPool2d::output_shape(const Shape& in) const {
  require(kernel > 0 && stride > 0 && in.height >= kernel && in.width >= kernel, "AvgPool2d: bad geometry");
  return {in.channels, (in.height - kernel) / stride + 1, (in.width - kernel) / stride + 1};
}

Tensor AvgPool2d::forward(const Tensor& x) const {
  Tensor y(output_shape(x.shape));
  const double inv = 1.0 / static_cast<double>(kernel * kernel);
  for (std::size_t c = 0; c < y.shape.channels; ++c)
    for (std::size_t i = 0; i < y.shape.height; ++i)
      for (std::size_t j = 0; j < y.shape.width; ++j) {
        double acc = 0;
        for (std::size_t dy = 0; dy < kernel; ++dy)
          for (std::size_t dx = 0; dx < kernel; ++dx) acc += x.at(c, i * stride + dy, j * stride + dx);
        y.at(c, i, j) = acc * inv;
      }
  return y;
}

Shape AdaptiveAvgPool2d::output_shape(const Shape& in) const {
  require(output_size > 0 && in.height % output_size == 0 && in.width % output_size == 0,
          "AdaptiveAvgPool2d: input " + in.str() + " is not a multiple of " + std::to_string(output_size));
  return {in.channels, output_size, output_size};
}

Tensor AdaptiveAvgPool2d::forward(const Tensor& x) const {
  // Blocks of bh x bw: rows and columns divide separately (a non-square input has
  // non-square blocks).
  Tensor y(output_shape(x.shape));
  const std::size_t bh = x.shape.height / output_size, bw = x.shape.width / output_size;
  const double inv = 1.0 / static_cast<double>(bh * bw);
  for (std::size_t c = 0; c < y.shape.channels; ++c)
    for (std::size_t i = 0; i < output_size; ++i)
      for (std::size_t j = 0; j < output_size; ++j) {
        double acc = 0;
        for (std::size_t dy = 0; dy < bh; ++dy)
          for (std::size_t dx = 0; dx < bw; ++dx) acc += x.at(c, i * bh + dy, j * bw + dx);
        y.at(c, i, j) = acc * inv;
      }
  return y;
}

void Linear::validate() const {
  require(in_features > 0 && out_features > 0, "Linear: zero dimension");
  require(weight.size() == in_features * out_features, "Linear: weight has the wrong size");
  require(bias.empty() || bias.size() == out_features, "Linear: bias has the wrong size");
}

Tensor Linear::forward(const Tensor& x) const {
  validate();
  require(x.data.size() == in_features, "Linear: input has " + std::to_string(x.data.size()) + " features, expected " +
                                            std::to_string(in_features));
  Tensor y({out_features, 1, 1});
  for (std::size_t o = 0; o < out_features; ++o) {
    double acc = bias.empty() ? 0.0 : bias[o];
    for (std::size_t i = 0; i < in_features; ++i) acc += weight[o * in_features + i] * x.data[i];
    y.data[o] = acc;
  }
  return y;
}

Tensor add(const Tensor& a, const Tensor& b) {
  require(a.shape == b.shape, "add: shapes differ " + a.shape.str() + " vs " + b.shape.str());
  Tensor y = a;
  for (std::size_t i = 0; i < y.data.size(); ++i) y.data[i] += b.data[i];
  return y;
}

}  // namespace pfhe::nn
