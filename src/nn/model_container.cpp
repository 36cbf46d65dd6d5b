#include "nn/model_container.h"

#include <cmath>
#include <cstring>

#include "ckks/serialization.h"

namespace pfhe::nn::container {

namespace {
constexpr char kMagic[4] = {'P', 'F', 'H', 'M'};
constexpr std::size_t kHeaderBytes = 24;  // magic, version (u32), header length (u64), float count (u64)
}  // namespace

void TensorWriter::add(const std::string& name, std::vector<std::size_t> shape, const std::vector<double>& values) {
  std::size_t count = 1;
  for (auto d : shape) count *= d;
  if (count != values.size()) throw ModelFormatError("save_model: tensor " + name + " has the wrong size");
  entries_.push_back({{"name", name}, {"shape", shape}, {"offset", floats_.size()}});
  for (double v : values) floats_.push_back(static_cast<float>(v));
}

void TensorWriter::add_bn(const std::string& prefix, const BatchNorm& bn) {
  add(prefix + ".running_mean", {bn.channels()}, bn.mean);
  add(prefix + ".running_var", {bn.channels()}, bn.var);
  if (!bn.gamma.empty()) add(prefix + ".weight", {bn.channels()}, bn.gamma);
  if (!bn.beta.empty()) add(prefix + ".bias", {bn.channels()}, bn.beta);
}

void TensorWriter::add_herpn(const std::string& prefix, const HerPN& h) {
  add_bn(prefix + ".bn0", h.bn0);
  add_bn(prefix + ".bn1", h.bn1);
  add_bn(prefix + ".bn2", h.bn2);
  add(prefix + ".weight", {h.channels()}, h.gamma);
  add(prefix + ".bias", {h.channels()}, h.beta);
}

void TensorWriter::add_conv(const std::string& name, const Conv2d& c) {
  add(name + ".weight", {c.out_channels, c.in_channels, c.kernel, c.kernel}, c.weight);
  if (!c.bias.empty()) add(name + ".bias", {c.out_channels}, c.bias);
}

TensorReader::TensorReader(const json& entries, std::span<const float> blob) {
  if (!entries.is_array()) throw ModelFormatError("model: 'tensors' must be an array");
  for (const auto& e : entries) {
    const std::string name = e.at("name").get<std::string>();
    Stored t;
    t.shape = e.at("shape").get<std::vector<std::size_t>>();
    const auto offset = e.at("offset").get<std::size_t>();
    std::size_t count = 1;
    for (auto d : t.shape) {
      if (d == 0 || d > (1u << 24)) throw ModelFormatError("model: tensor " + name + " has an invalid dimension");
      count *= d;
    }
    if (offset > blob.size() || count > blob.size() - offset)
      throw ModelFormatError("model: tensor " + name + " lies outside the data section (truncated file?)");
    t.values.reserve(count);
    for (std::size_t i = 0; i < count; ++i) {
      const float v = blob[offset + i];
      if (!std::isfinite(v)) throw ModelFormatError("model: tensor " + name + " holds a non-finite value");
      t.values.push_back(v);
    }
    if (!tensors_.emplace(name, std::move(t)).second) throw ModelFormatError("model: tensor " + name + " appears twice");
  }
}

std::vector<double> TensorReader::get(const std::string& name, const std::vector<std::size_t>& shape) const {
  const auto it = tensors_.find(name);
  if (it == tensors_.end()) throw ModelFormatError("model: missing tensor " + name);
  if (it->second.shape != shape) throw ModelFormatError("model: tensor " + name + " has the wrong shape");
  return it->second.values;
}

BatchNorm TensorReader::bn(const std::string& prefix, std::size_t c, bool affine, double eps) const {
  BatchNorm b{get(prefix + ".running_mean", {c}), get(prefix + ".running_var", {c}), {}, {}, eps};
  if (affine) {
    b.gamma = get(prefix + ".weight", {c});
    b.beta = get(prefix + ".bias", {c});
  }
  for (double v : b.var)
    if (v < 0) throw ModelFormatError("model: " + prefix + ".running_var has a negative variance");
  return b;
}

HerPN TensorReader::herpn(const std::string& prefix, std::size_t c, double eps) const {
  return HerPN{bn(prefix + ".bn0", c, false, eps), bn(prefix + ".bn1", c, false, eps), bn(prefix + ".bn2", c, false, eps),
               get(prefix + ".weight", {c}), get(prefix + ".bias", {c})};
}

Conv2d TensorReader::conv(const std::string& name, std::size_t in, std::size_t out, std::size_t k, std::size_t stride,
                          std::size_t padding) const {
  Conv2d c{in, out, k, stride, padding, get(name + ".weight", {out, in, k, k}), {}};
  if (has(name + ".bias")) c.bias = get(name + ".bias", {out});
  return c;
}

std::vector<std::uint8_t> write(const json& header, const std::vector<float>& floats) {
  const std::string text = header.dump();
  std::vector<std::uint8_t> out(kMagic, kMagic + 4);
  const auto put = [&out](const void* p, std::size_t n) {
    const auto* b = static_cast<const std::uint8_t*>(p);
    out.insert(out.end(), b, b + n);
  };
  const std::uint32_t version = kModelFormatVersion;
  const std::uint64_t json_size = text.size(), float_count = floats.size();
  put(&version, 4);
  put(&json_size, 8);
  put(&float_count, 8);
  put(text.data(), text.size());
  put(floats.data(), floats.size() * sizeof(float));
  return out;
}

bool has_magic(std::span<const std::uint8_t> bytes) {
  return bytes.size() >= 4 && std::memcmp(bytes.data(), kMagic, 4) == 0;
}

Parsed read(std::span<const std::uint8_t> bytes) {
  if (bytes.size() < kHeaderBytes || !has_magic(bytes))
    throw ModelFormatError("not a pfhe model file (bad magic or too short)");
  std::uint32_t version;
  std::uint64_t json_size, float_count;
  std::memcpy(&version, bytes.data() + 4, 4);
  std::memcpy(&json_size, bytes.data() + 8, 8);
  std::memcpy(&float_count, bytes.data() + 16, 8);
  if (version != kModelFormatVersion)
    throw ModelFormatError("unsupported model format version " + std::to_string(version));
  if (json_size > bytes.size() - kHeaderBytes ||
      float_count > (bytes.size() - kHeaderBytes - json_size) / sizeof(float) ||
      kHeaderBytes + json_size + float_count * sizeof(float) != bytes.size())
    throw ModelFormatError("model file size does not match its header (truncated or padded file)");
  Parsed p;
  try {
    p.header = json::parse(bytes.begin() + kHeaderBytes,
                           bytes.begin() + static_cast<std::ptrdiff_t>(kHeaderBytes + json_size));
  } catch (const json::exception& e) {
    throw ModelFormatError(std::string("model: invalid JSON header: ") + e.what());
  }
  if (!p.header.is_object() || !p.header.contains("architecture") || !p.header["architecture"].is_string())
    throw ModelFormatError("model: the header names no architecture");
  p.floats.resize(float_count);
  // A model without tensors has an empty data section (and a null data()): no copy at all.
  if (float_count > 0)
    std::memcpy(p.floats.data(), bytes.data() + kHeaderBytes + json_size, float_count * sizeof(float));
  return p;
}

void write_file(const std::string& path, std::span<const std::uint8_t> bytes) {
  try {
    ckks::write_file(path, bytes);
  } catch (const ckks::SerializationError& e) {
    throw ModelFormatError(e.what());
  }
}

std::vector<std::uint8_t> read_file(const std::string& path) {
  try {
    return ckks::read_file(path);
  } catch (const ckks::SerializationError& e) {
    throw ModelFormatError(std::string("model file: ") + e.what());
  }
}

}  // namespace pfhe::nn::container
