#include "nn/patch_cnn.h"

#include <algorithm>
#include <bit>
#include <cstring>
#include <cmath>
#include <numeric>
#include <stdexcept>
#include <string>

#include "ckks/polynomial.h"
#include "ckks/serialization.h"
#include "nn/linear_map.h"

namespace pfhe::nn {

void PatchCNN::validate() const {
  if (grid == 0 || patch_size == 0) throw std::invalid_argument("PatchCNN: empty grid");
  if (backbones.size() != grid * grid)
    throw std::invalid_argument("PatchCNN: " + std::to_string(backbones.size()) + " backbones for a " +
                                std::to_string(grid) + "x" + std::to_string(grid) + " grid");
  for (const auto& b : backbones) b.validate();
  head.validate();
  head_bn.validate();
  const std::size_t features = backbones[0].feature_shape({3, patch_size, patch_size}).size();
  if (head.in_features != grid * grid * features || head_bn.channels() != head.out_features)
    throw std::invalid_argument("PatchCNN: head sizes do not match the backbones");
  if (!head_bn.gamma.empty() || !head_bn.beta.empty())
    throw std::invalid_argument("PatchCNN: the head BatchNorm1d is affine-free in CryptoFace");
}

Tensor extract_patch(const Tensor& image, std::size_t grid, std::size_t size, std::size_t index) {
  expect_shape(image, {3, grid * size, grid * size}, "extract_patch");
  if (index >= grid * grid) throw std::invalid_argument("extract_patch: patch index out of range");
  Tensor p({3, size, size});
  const std::size_t y0 = (index / grid) * size, x0 = (index % grid) * size;
  for (std::size_t c = 0; c < 3; ++c)
    for (std::size_t y = 0; y < size; ++y)
      for (std::size_t x = 0; x < size; ++x) p.at(c, y, x) = image.at(c, y0 + y, x0 + x);
  return p;
}

Tensor PatchCNN::patch(const Tensor& image, std::size_t index) const {
  return extract_patch(image, grid, patch_size, index);
}

Tensor PatchCNN::features(const Tensor& image, const TensorObserver* observe) const {
  validate();
  Tensor concat({head.in_features, 1, 1});
  std::size_t offset = 0;
  for (std::size_t p = 0; p < backbones.size(); ++p) {
    const Tensor f = backbones[p].forward(patch(image, p), observe, "nets." + std::to_string(p));
    std::copy(f.data.begin(), f.data.end(), concat.data.begin() + static_cast<std::ptrdiff_t>(offset));
    offset += f.data.size();
  }
  return concat;
}

Tensor PatchCNN::embedding(const Tensor& image, const TensorObserver* observe) const {
  return head_bn.forward(head.forward(features(image, observe)));
}

double sum_of_squares(const Tensor& t) { return std::inner_product(t.data.begin(), t.data.end(), t.data.begin(), 0.0); }

Tensor PatchCNN::normalize(Tensor e) const {
  const double factor = l2(sum_of_squares(e));
  for (auto& v : e.data) v *= factor;
  return e;
}

Linear PatchCNN::head_block(std::size_t p) const {
  std::vector<double> scale, shift;
  head_bn.affine_form(scale, shift);
  const std::size_t features = head.in_features / (grid * grid), outs = head.out_features;
  Linear block{features, outs, std::vector<double>(features * outs), std::vector<double>(outs)};
  const double share = 1.0 / static_cast<double>(grid * grid);
  for (std::size_t o = 0; o < outs; ++o) {
    for (std::size_t i = 0; i < features; ++i)
      block.weight[o * features + i] = head.weight[o * head.in_features + p * features + i] * scale[o];
    block.bias[o] = ((head.bias.empty() ? 0.0 : head.bias[o]) * scale[o] + shift[o]) * share;
  }
  return block;
}

Graph PatchCNN::to_graph() const {
  validate();
  Graph g(image_shape(), "image");
  std::size_t sum = 0;
  for (std::size_t p = 0; p < backbones.size(); ++p) {
    const std::string index = std::to_string(p), net = "nets." + index;
    const std::size_t crop =
        g.add(net + ".crop", Crop{p / grid * patch_size, p % grid * patch_size, patch_size, patch_size}, 0);
    const std::size_t head = g.add("head." + index, head_block(p), backbones[p].append_to(g, net, crop));
    std::string sum_name = "embedding";  // the last sum; the partial ones numbered
    if (p + 1 < backbones.size()) sum_name += "." + index;
    sum = p == 0 ? head : g.add(sum_name, Add{}, {sum, head});
  }
  if (!classifier) g.add("l2", L2Normalize{{l2.c, l2.b, l2.a}}, sum);
  return g;
}

L2FitPoints l2_fit_points(std::vector<double> ys) {
  if (ys.size() < 3) throw std::invalid_argument("L2 fit: needs at least 3 samples");
  std::sort(ys.begin(), ys.end());
  ys.resize(ys.size() - ys.size() / 100);  // trim the top 1 %
  const double mu = std::accumulate(ys.begin(), ys.end(), 0.0) / static_cast<double>(ys.size());
  double var = 0;
  for (double y : ys) var += (y - mu) * (y - mu);
  const double sigma = std::sqrt(var / static_cast<double>(ys.size()));
  if (!(sigma > 0) || !(mu > 0))
    throw std::invalid_argument("L2 fit: degenerate sum-of-squares statistics (mean " + std::to_string(mu) +
                                ", deviation " + std::to_string(sigma) + ")");
  // Decision: with heavy-tailed statistics (sigma >= mu/2) the lower point is clamped at
  // mu/2, keeping all three points on positive y where 1/sqrt is defined.
  return {std::max(mu - sigma, mu / 2), mu, mu + sigma};
}

L2NormPoly fit_l2_poly(std::vector<double> ys) {
  const L2FitPoints points = l2_fit_points(std::move(ys));
  // Quadratic through (y_k, 1/sqrt(y_k)), k = 0..2 (Lagrange form, then power coefficients).
  const double xs[3] = {points.lo, points.mid, points.hi};
  double a = 0, b = 0, c = 0;
  for (int k = 0; k < 3; ++k) {
    const double f = 1.0 / std::sqrt(xs[k]);
    const double u = xs[(k + 1) % 3], v = xs[(k + 2) % 3];
    const double denom = (xs[k] - u) * (xs[k] - v);
    a += f / denom;
    b += -f * (u + v) / denom;
    c += f * u * v / denom;
  }
  return {a, b, c};
}

void fit_l2_norm(PatchCNN& model, const std::vector<Tensor>& images) {
  model.l2 = fit_l2_poly(parallel_map(images, [&](const Tensor& img) { return sum_of_squares(model.embedding(img)); }));
}

double match_score(const Tensor& probe, const Tensor& enrolled, double threshold) {
  if (probe.data.size() != enrolled.data.size()) throw std::invalid_argument("match_score: size mismatch");
  double d = 0;
  for (std::size_t i = 0; i < probe.data.size(); ++i) d += (probe.data[i] - enrolled.data[i]) * (probe.data[i] - enrolled.data[i]);
  return d - threshold;
}

}  // namespace pfhe::nn
