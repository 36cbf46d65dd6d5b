// The container shared by pfhe model files (docs/MODEL_FORMAT.md): magic, version, a JSON
// architecture header and a section of named float32 tensors. Internal to src/nn: the
// PatchCNN (nn/model_file.h) and graph (nn/graph_file.h) formats are built on it.
#pragma once
#include <nlohmann/json.hpp>

#include <cstdint>
#include <map>
#include <span>
#include <string>
#include <vector>

#include "nn/layers.h"
#include "nn/model_file.h"

namespace pfhe::nn::container {

using json = nlohmann::json;

// PyTorch's default BatchNorm epsilon, used by CryptoFace.
inline constexpr double kBatchNormEps = 1e-5;

// Writer side: collects named tensors in order (stored as float32).
class TensorWriter {
 public:
  void add(const std::string& name, std::vector<std::size_t> shape, const std::vector<double>& values);
  void add_bn(const std::string& prefix, const BatchNorm& bn);
  void add_herpn(const std::string& prefix, const HerPN& h);
  void add_conv(const std::string& name, const Conv2d& c);
  const json& entries() const { return entries_; }
  const std::vector<float>& floats() const { return floats_; }

 private:
  json entries_ = json::array();
  std::vector<float> floats_;
};

// Reader side: name -> tensor (every value finite, inside the data section, each name
// once), with shape checks on access; ModelFormatError names the tensor.
class TensorReader {
 public:
  TensorReader(const json& entries, std::span<const float> blob);
  std::vector<double> get(const std::string& name, const std::vector<std::size_t>& shape) const;
  bool has(const std::string& name) const { return tensors_.count(name) != 0; }
  BatchNorm bn(const std::string& prefix, std::size_t channels, bool affine, double eps = kBatchNormEps) const;
  HerPN herpn(const std::string& prefix, std::size_t channels, double eps = kBatchNormEps) const;
  // Weight [out][in][k][k] and, when stored, bias [out].
  Conv2d conv(const std::string& name, std::size_t in, std::size_t out, std::size_t kernel, std::size_t stride,
              std::size_t padding) const;

 private:
  struct Stored {
    std::vector<std::size_t> shape;
    std::vector<double> values;
  };
  std::map<std::string, Stored> tensors_;
};

// magic "PFHM" + version + sizes + header + float32 data.
std::vector<std::uint8_t> write(const json& header, const std::vector<float>& floats);

struct Parsed {
  json header;
  std::vector<float> floats;
};
// Checks magic, version and the exact length, parses the header; the header's
// "architecture" is left to the caller.
Parsed read(std::span<const std::uint8_t> bytes);
// Whether `bytes` start with the model magic.
bool has_magic(std::span<const std::uint8_t> bytes);

// Whole-file I/O with errors as ModelFormatError naming the path.
void write_file(const std::string& path, std::span<const std::uint8_t> bytes);
std::vector<std::uint8_t> read_file(const std::string& path);

}  // namespace pfhe::nn::container
