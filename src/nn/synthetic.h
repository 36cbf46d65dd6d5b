// Deterministic synthetic CryptoFace-style weights whose BatchNorm/HerPN statistics are
// calibrated by running images through the network, layer by layer, so that every value
// range (and so every polynomial input and the CKKS headroom) is realistic.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "nn/backbone.h"

namespace pfhe::nn {

// Smooth pseudo-images in [-1, 1], channel-major: a template shared by all images (as
// aligned faces share a structure) mixed with a per-image random field of sinusoids and
// blobs.
std::vector<Tensor> synthetic_images(std::size_t count, const Shape& shape, std::uint64_t seed);

// Random weights (He-normal convolutions, HerPN gamma in [0.3, 0.5], beta near 0) from
// `seed`, then running statistics measured on `calibration` patches. Quadratic networks
// amplify inputs their statistics have not seen: calibrate on at least 80-128 images of
// the input distribution (with 32, unseen images reached 10^4 standard deviations); the
// quadratic HerPN branch is damped so that held-out real faces stay in range (synthetic.cpp).
Backbone make_synthetic_backbone(const BackboneShape& shape, std::uint64_t seed, const std::vector<Tensor>& calibration);

// A synthetic PatchCNN: one calibrated backbone per patch position (each calibrated on its
// patches of `calibration`), a random head to `embedding` features, the head BatchNorm and
// the L2 polynomial fitted on the same images.
struct PatchCNN;
PatchCNN make_synthetic_patch_cnn(const BackboneShape& shape, std::size_t grid, std::size_t patch, std::size_t embedding,
                                  std::uint64_t seed, const std::vector<Tensor>& calibration);

// The named model sizes of the CLI, the benchmark stages and the tests: "tiny" (two blocks,
// one strided; shallow enough for N = 2^15), "reduced" (every CryptoFace layer type,
// channels 4..16, 8x8 patches), "cryptofacenet4|9|16" (the full backbone on a 2x2, 3x3, 4x4
// grid of 32x32 patches). Throws std::invalid_argument naming the valid kinds.
struct SyntheticKind {
  BackboneShape shape;
  std::size_t grid, patch, embedding;
};
SyntheticKind synthetic_kind(const std::string& name);

// A model graph that is not a PatchCNN: two towers of the same shape with their own
// weights read the same image (conv 3x3 + HerPN, twice; a strided conv + HerPN; conv +
// HerPN; global average pooling; a linear head) and their logits are summed (an
// ensemble): two parallel branches of equal work. HerPN statistics are calibrated on
// `calibration` as for the backbones. Kinds: "two-tower" (3x32x32 images, 16 and 32
// channels, 10 classes), "two-tower-tiny" (3x8x8, 4 and 8 channels, 4 classes; tests) and
// "two-tower-large" (each tower a whole CryptoFace backbone, Backbone::append_to, with a
// linear head to 10 classes: branches long enough to measure executors on).
// Throws std::invalid_argument naming the kinds for another name.
bool is_synthetic_graph_kind(const std::string& name);
Shape synthetic_graph_input(const std::string& name);
class Graph;
Graph make_synthetic_graph(const std::string& name, std::uint64_t seed, const std::vector<Tensor>& calibration);

// Sets every BatchNorm/HerPN running mean and variance from the given patches.
void calibrate(Backbone& model, const std::vector<Tensor>& patches);

}  // namespace pfhe::nn
