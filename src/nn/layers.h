// Layers with their float64 plaintext forward (the reference the encrypted forward is
// checked against), and the folding of BatchNorm / HerPN into affine and quadratic forms.
#pragma once
#include <vector>

#include "nn/tensor.h"

namespace pfhe::nn {

struct Conv2d {
  std::size_t in_channels = 0, out_channels = 0, kernel = 3, stride = 1, padding = 1;
  std::vector<double> weight;  // [out][in][kernel][kernel]
  std::vector<double> bias;    // empty or [out]

  Shape output_shape(const Shape& in) const;
  Tensor forward(const Tensor& x) const;
  double w(std::size_t o, std::size_t i, std::size_t dy, std::size_t dx) const {
    return weight[((o * in_channels + i) * kernel + dy) * kernel + dx];
  }
  void validate() const;
};

// Per-channel y = gamma (x - mean) / sqrt(var + eps) + beta; affine=false means gamma=1, beta=0.
struct BatchNorm {
  std::vector<double> mean, var, gamma, beta;
  double eps = 1e-5;

  std::size_t channels() const { return mean.size(); }
  // y = scale * x + shift per channel.
  void affine_form(std::vector<double>& scale, std::vector<double>& shift) const;
  Tensor forward(const Tensor& x) const;  // per channel for (C,H,W); per feature for (F,1,1)
  void validate() const;
};

// Per-channel quadratic y = w2 x^2 + w1 x + w0: a HerPN in inference form (the form the
// model graph holds), or what an imported a x^2 + b x + c with per-channel constants folds to.
struct Quadratic {
  std::vector<double> w2, w1, w0;
  std::size_t channels() const { return w2.size(); }
  Tensor forward(const Tensor& x) const;
  void validate() const;  // equal non-empty sizes, finite coefficients
};

// CryptoFace's HerPN in training form: three affine-free BatchNorms over the Hermite terms
// h0 = 1, h1 = x, h2 = (x^2 - 1)/sqrt(2), combined as
//   gamma * [BN0(h0)/sqrt(2 pi) + BN1(h1)/2 + BN2(h2)/sqrt(4 pi)] + beta.
struct HerPN {
  BatchNorm bn0, bn1, bn2;  // affine-free: only mean/var/eps are used
  std::vector<double> gamma, beta;

  std::size_t channels() const { return gamma.size(); }
  Tensor forward(const Tensor& x) const;  // the training-form formula above, term by term
  // Folded into w2 x^2 + w1 x + w0 (exactly equal to forward in exact arithmetic).
  Quadratic fuse() const;
  void validate() const;
};

struct AvgPool2d {
  std::size_t kernel = 2, stride = 2;
  Shape output_shape(const Shape& in) const;
  Tensor forward(const Tensor& x) const;
};

// Output (C, out, out) by averaging equal blocks (the input size must be a multiple).
struct AdaptiveAvgPool2d {
  std::size_t output_size = 2;
  Shape output_shape(const Shape& in) const;
  Tensor forward(const Tensor& x) const;
};

struct Linear {
  std::size_t in_features = 0, out_features = 0;
  std::vector<double> weight;  // [out][in]
  std::vector<double> bias;    // empty or [out]
  Tensor forward(const Tensor& x) const;  // x is flattened in channel-major order
  void validate() const;
};

Tensor add(const Tensor& a, const Tensor& b);

}  // namespace pfhe::nn
