// A reduced PatchCNN (2x2 grid of 8x8 patches, narrow backbones) compiled on a small
// insecure test ring, with its keys: the server state the runtime tests place work on.
#pragma once
#include <memory>

#include "ckks/encryptor.h"
#include "ckks/keygen.h"
#include "nn/linear_map.h"
#include "nn/patch_cnn.h"
#include "nn/synthetic.h"
#include "../nn_test_util.h"
#include "../test_util.h"

namespace pfhe::test {

struct ReducedServer {
  static constexpr std::size_t kLevels = 28;
  ckks::Context ctx{small_params(11, kLevels)};
  ckks::Encoder enc{ctx};
  std::vector<nn::Tensor> images = nn::synthetic_images(128, {3, 16, 16}, 5);
  nn::PatchCNN model = nn::make_synthetic_patch_cnn(reduced_backbone_shape(), 2, 8, 16, 13, images);
  // One patch per ciphertext: four tasks for the executors to place.
  nn::CompiledPatchCNN compiled =
      nn::CompiledPatchCNN::compile(model, enc, kLevels, ctx.params().default_scale(), SIZE_MAX, 1);
  ModelKeys keys{ctx, compiled.rotation_levels()};
  const ckks::Evaluator& eval = keys.eval;

  std::vector<ckks::Ciphertext> encrypt_patches(const nn::Tensor& image) const {
    std::vector<nn::Tensor> patches;
    for (std::size_t p = 0; p < compiled.patches(); ++p) patches.push_back(model.patch(image, p));
    std::vector<ckks::Ciphertext> out;
    for (const auto& slots : nn::pack_patch_groups(patches, compiled.input_layout()))
      out.push_back(keys.encryptor.encrypt(enc.encode(slots, kLevels, ctx.params().default_scale())));
    return out;
  }
};

}  // namespace pfhe::test
