// A reduced PatchCNN (2x2 grid of 8x8 patches, narrow backbones) compiled as a graph on a
// small insecure test ring, with its keys: the server state the runtime tests place work on.
#pragma once
#include <memory>

#include "ckks/encryptor.h"
#include "ckks/keygen.h"
#include "nn/compiled_graph.h"
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
  nn::Graph graph = model.to_graph();
  // One patch per ciphertext: four branch tasks (entries: the four input ciphertexts).
  nn::CompiledGraph compiled = compile(SIZE_MAX, nn::Compilation::kFull);
  ModelKeys keys{ctx, compiled.rotation_levels()};
  const ckks::Evaluator& eval = keys.eval;

  nn::CompiledGraph compile(std::size_t budget, nn::Compilation mode) const {
    return nn::CompiledGraph::compile(graph, enc, kLevels, ctx.params().default_scale(), budget, mode, nullptr, nullptr,
                                      1);
  }
  // The entries of the region's four branches (its tasks, in order) among the inputs.
  std::vector<ckks::Ciphertext> branch_entries(const std::vector<ckks::Ciphertext>& inputs) const {
    std::vector<ckks::Ciphertext> out;
    for (const auto& branch : compiled.parallel_regions().at(0).branches) out.push_back(inputs.at(branch.entry));
    return out;
  }
  std::vector<ckks::Ciphertext> encrypt_patches(const nn::Tensor& image) const {
    std::vector<ckks::Ciphertext> out;
    for (const auto& slots : compiled.pack_inputs(image))
      out.push_back(keys.encryptor.encrypt(enc.encode(slots, kLevels, ctx.params().default_scale())));
    return out;
  }
};

}  // namespace pfhe::test
