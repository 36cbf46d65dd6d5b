// CryptoFace's PatchCNN: a G x G grid of P x P patches, one Backbone per patch, per-patch
// blocks of one linear head summed (with BatchNorm1d(affine=False) folded in), then L2
// normalisation by the polynomial e * (a y^2 + b y + c), y = sum e_i^2, and matching by
// squared distance to an enrolled template.
#pragma once
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "nn/backbone.h"
#include "nn/graph.h"
#include "nn/half_ring.h"

namespace pfhe::nn {

struct L2NormPoly {
  double a = 0, b = 0, c = 1;  // 1/sqrt(y) ~ a y^2 + b y + c
  double operator()(double y) const { return (a * y + b) * y + c; }
};

// Patch `index` (row-major) of a (3, grid * size, grid * size) image.
Tensor extract_patch(const Tensor& image, std::size_t grid, std::size_t size, std::size_t index);

struct PatchCNN {
  std::size_t grid = 2, patch_size = 32;
  std::vector<Backbone> backbones;  // grid * grid, row-major over patches
  Linear head;                      // (grid^2 * F) -> E over the concatenated features
  BatchNorm head_bn;                // affine-free BatchNorm1d(E)
  L2NormPoly l2;
  // A classifier's output is its logits (head_bn(head(...))): no L2 normalisation and no
  // matching, so the encrypted program needs 5 levels less.
  bool classifier = false;

  Shape image_shape() const { return {3, grid * patch_size, grid * patch_size}; }
  Tensor patch(const Tensor& image, std::size_t index) const;
  // The backbone features of every patch, concatenated (the head's input); `observe` sees
  // each backbone's intermediate values under "nets.<p>".
  Tensor features(const Tensor& image, const TensorObserver* observe = nullptr) const;
  // head_bn(head(concat backbone features)) before normalisation; `observe` as for features.
  Tensor embedding(const Tensor& image, const TensorObserver* observe = nullptr) const;
  // embedding * l2(sum of squares): what the encrypted pipeline computes.
  Tensor normalized(const Tensor& image) const { return normalize(embedding(image)); }
  Tensor normalize(Tensor embedding) const;
  // Head block of patch p with the BatchNorm folded in and the bias shared 1/grid^2 per patch.
  Linear head_block(std::size_t p) const;
  void validate() const;
  // The model as a graph: a Crop per patch ("nets.<p>.crop"), its backbone (nodes named as
  // Backbone::append_to does under "nets.<p>"), its head block ("head.<p>"), the sum of the
  // head blocks ("embedding", the last Add) and, unless a classifier, the normalisation
  // ("l2"). Its forward equals normalized() (embedding() for a classifier).
  Graph to_graph() const;
};

// The three fit points of the L2 polynomial from sum-of-squares samples: mu - sigma (clamped
// at mu / 2), mu, mu + sigma, with the top 1 % of samples trimmed first.
struct L2FitPoints {
  double lo = 0, mid = 0, hi = 0;
};
L2FitPoints l2_fit_points(std::vector<double> sums_of_squares);

// The quadratic through (y, 1/sqrt(y)) at the fit points of these samples.
L2NormPoly fit_l2_poly(std::vector<double> sums_of_squares);
double sum_of_squares(const Tensor& t);

// Fits l2 through y in {mu - sigma, mu, mu + sigma} of sum-of-squares statistics over the
// given images (top 1 % of y trimmed), as CryptoFace does; the lower point is clamped at
// mu / 2 when sigma > mu / 2.
void fit_l2_norm(PatchCNN& model, const std::vector<Tensor>& images);

// Squared distance minus threshold (negative: same person).
double match_score(const Tensor& probe, const Tensor& enrolled, double threshold);

}  // namespace pfhe::nn
