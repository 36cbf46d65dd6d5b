// The pfhe model file: architecture (JSON) + float32 tensors named as in CryptoFace's
// PyTorch state_dict, documented in docs/MODEL_FORMAT.md. Loading validates everything
// (magic, version, JSON fields, every expected tensor's presence, shape, bounds and
// finiteness, BatchNorm variances) and throws ModelFormatError naming the problem.
#pragma once
#include <cstdint>
#include <span>
#include <stdexcept>
#include <string>
#include <vector>

#include "nn/patch_cnn.h"

namespace pfhe::nn {

class ModelFormatError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

inline constexpr std::uint32_t kModelFormatVersion = 1;

std::vector<std::uint8_t> save_model(const PatchCNN& model);
PatchCNN load_model(std::span<const std::uint8_t> bytes);

void save_model_file(const PatchCNN& model, const std::string& path);
PatchCNN load_model_file(const std::string& path);
// Whether the file starts like a model file (its magic), without loading it; a file that
// cannot be opened throws std::invalid_argument naming it.
bool is_model_file(const std::string& path);

}  // namespace pfhe::nn
