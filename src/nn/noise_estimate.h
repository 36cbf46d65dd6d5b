// The precision an encrypted PatchCNN inference will reach at a ring degree N and scale D,
// estimated without keys or ciphertexts: the float64 forward runs twice on each image,
// once exactly and once with, after every step the encrypted program performs, the
// Gaussian error that step's roundings add; the relative difference of the two outputs
// is the estimate. What lets `pfhe compile --precision-bits` pick the scale.
//
// The error model (docs/STATUS.md, "scale from a precision target"): rescaling and the
// ModDown of key switching round a polynomial to r0 + r1 s, r_i uniform in [-1/2, 1/2),
// s ternary with about 2N/3 non-zero coefficients, i.e. coefficients of variance N/18; a
// slot's real part then carries N * N / 36, a decoded error of standard deviation N / (6 D)
// (rounding_noise). Per step:
//   - fresh encryption of a pixel: 3.2 sqrt(N / 2) / D (the Gaussian sigma 3.2);
//   - a linear layer's output (conv, pooling head): one rescale; a block output adds the
//     rescales of conv2 and of the shortcut;
//   - a HerPN's output x(x + a1) + a0: its rescale plus the next layer's baby-step ModDown
//     (sqrt 2 roundings), times |w2| per channel since w2 is folded into the next layer;
//   - the head outputs summed over the patches, and the normalisation's last two rescales.
// Neglected: the rounding of encoded weights (slot error sqrt(N / 24) / q per diagonal,
// under a sixth of one rescale even summed over CryptoFace's largest convolution) and the
// rounding of the sum of squares inside the normalisation (relative error 1 / y against
// the embedding's ~ sqrt(E / y)).
#pragma once
#include <cstdint>
#include <vector>

#include "nn/patch_cnn.h"

namespace pfhe::nn {

// Decoded standard deviation of one rescale / ModDown rounding.
double rounding_noise(std::size_t ring_degree, double scale);

struct PrecisionEstimate {
  double relative = 0;  // max over images of max |noisy - exact| / max |exact| (nn::precision_of)
  double bits() const;
};

// Noise drawn from a fixed-seed std::mt19937_64: a simulation, not cryptography.
// Throws std::invalid_argument on no images or an invalid degree/scale.
PrecisionEstimate estimate_precision(const PatchCNN& model, const std::vector<Tensor>& images,
                                     std::size_t ring_degree, double scale, std::uint64_t seed = 1);

}  // namespace pfhe::nn
