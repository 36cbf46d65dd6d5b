#include "nn/model_file.h"

#include <nlohmann/json.hpp>

#include "ckks/serialization.h"

#include <cmath>
#include <cstring>
#include <fstream>
#include <map>

namespace pfhe::nn {

namespace {

using json = nlohmann::json;
constexpr char kMagic[4] = {'P', 'F', 'H', 'M'};
constexpr double kBatchNormEps = 1e-5;  // PyTorch's default, used by CryptoFace

struct TensorRef {
  std::vector<std::size_t> shape;
  std::vector<double> values;
};

// Writer side: collects named tensors in order.
class TensorWriter {
 public:
  void add(const std::string& name, std::vector<std::size_t> shape, const std::vector<double>& values) {
    std::size_t count = 1;
    for (auto d : shape) count *= d;
    if (count != values.size()) throw ModelFormatError("save_model: tensor " + name + " has the wrong size");
    entries_.push_back({{"name", name}, {"shape", shape}, {"offset", floats_.size()}});
    for (double v : values) floats_.push_back(static_cast<float>(v));
  }
  void add_bn(const std::string& prefix, const BatchNorm& bn) {
    add(prefix + ".running_mean", {bn.channels()}, bn.mean);
    add(prefix + ".running_var", {bn.channels()}, bn.var);
    if (!bn.gamma.empty()) add(prefix + ".weight", {bn.channels()}, bn.gamma);
    if (!bn.beta.empty()) add(prefix + ".bias", {bn.channels()}, bn.beta);
  }
  void add_herpn(const std::string& prefix, const HerPN& h) {
    add_bn(prefix + ".bn0", h.bn0);
    add_bn(prefix + ".bn1", h.bn1);
    add_bn(prefix + ".bn2", h.bn2);
    add(prefix + ".weight", {h.channels()}, h.gamma);
    add(prefix + ".bias", {h.channels()}, h.beta);
  }
  void add_conv(const std::string& name, const Conv2d& c) {
    add(name + ".weight", {c.out_channels, c.in_channels, c.kernel, c.kernel}, c.weight);
    if (!c.bias.empty()) add(name + ".bias", {c.out_channels}, c.bias);
  }
  const json& entries() const { return entries_; }
  const std::vector<float>& floats() const { return floats_; }

 private:
  json entries_ = json::array();
  std::vector<float> floats_;
};

// Reader side: name -> tensor, with shape checks on access.
class TensorReader {
 public:
  TensorReader(const json& entries, std::span<const float> blob) {
    if (!entries.is_array()) throw ModelFormatError("model: 'tensors' must be an array");
    for (const auto& e : entries) {
      const std::string name = e.at("name").get<std::string>();
      TensorRef t;
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

  std::vector<double> get(const std::string& name, const std::vector<std::size_t>& shape) const {
    const auto it = tensors_.find(name);
    if (it == tensors_.end()) throw ModelFormatError("model: missing tensor " + name);
    if (it->second.shape != shape) throw ModelFormatError("model: tensor " + name + " has the wrong shape");
    return it->second.values;
  }
  bool has(const std::string& name) const { return tensors_.count(name) != 0; }

  BatchNorm bn(const std::string& prefix, std::size_t c, bool affine) const {
    BatchNorm b{get(prefix + ".running_mean", {c}), get(prefix + ".running_var", {c}), {}, {}, kBatchNormEps};
    if (affine) {
      b.gamma = get(prefix + ".weight", {c});
      b.beta = get(prefix + ".bias", {c});
    }
    for (double v : b.var)
      if (v < 0) throw ModelFormatError("model: " + prefix + ".running_var has a negative variance");
    return b;
  }
  HerPN herpn(const std::string& prefix, std::size_t c) const {
    return HerPN{bn(prefix + ".bn0", c, false), bn(prefix + ".bn1", c, false), bn(prefix + ".bn2", c, false),
                 get(prefix + ".weight", {c}), get(prefix + ".bias", {c})};
  }
  Conv2d conv(const std::string& name, std::size_t in, std::size_t out, std::size_t k, std::size_t stride) const {
    Conv2d c{in, out, k, stride, k / 2, get(name + ".weight", {out, in, k, k}), {}};
    if (has(name + ".bias")) c.bias = get(name + ".bias", {out});
    return c;
  }

 private:
  std::map<std::string, TensorRef> tensors_;
};

}  // namespace

std::vector<std::uint8_t> save_model(const PatchCNN& model) {
  model.validate();
  const Backbone& b0 = model.backbones.front();
  json arch;
  arch["architecture"] = "cryptoface_pcnn";
  arch["grid"] = model.grid;
  arch["patch_size"] = model.patch_size;
  arch["embedding"] = model.head.out_features;
  arch["stem_channels"] = b0.conv0.out_channels;
  json blocks = json::array();
  for (const auto& blk : b0.blocks) blocks.push_back({blk.conv1.out_channels, blk.conv1.stride});
  arch["blocks"] = blocks;
  arch["pool_size"] = b0.pool_size;
  arch["l2"] = {model.l2.a, model.l2.b, model.l2.c};
  arch["task"] = model.classifier ? "classification" : "verification";
  TensorWriter w;
  for (std::size_t p = 0; p < model.backbones.size(); ++p) {
    const Backbone& b = model.backbones[p];
    const std::string net = "nets." + std::to_string(p);
    w.add_conv(net + ".conv", b.conv0);
    for (std::size_t j = 0; j < b.blocks.size(); ++j) {
      const auto& blk = b.blocks[j];
      const std::string layer = net + ".layers." + std::to_string(j);
      w.add_herpn(layer + ".herpn1", blk.herpn1);
      w.add_conv(layer + ".conv1", blk.conv1);
      w.add_herpn(layer + ".herpn2", blk.herpn2);
      w.add_conv(layer + ".conv2", blk.conv2);
      if (blk.shortcut_conv) {
        w.add_conv(layer + ".shortcut.0", *blk.shortcut_conv);
        w.add_bn(layer + ".shortcut.1", *blk.shortcut_bn);
      }
    }
    w.add_herpn(net + ".herpnpool.herpn", b.pool_herpn);
    w.add_bn(net + ".bn", b.bn1d);
  }
  w.add("linear.weight", {model.head.out_features, model.head.in_features}, model.head.weight);
  if (!model.head.bias.empty()) w.add("linear.bias", {model.head.out_features}, model.head.bias);
  w.add_bn("bn", model.head_bn);
  arch["tensors"] = w.entries();
  const std::string text = arch.dump();
  std::vector<std::uint8_t> out(kMagic, kMagic + 4);
  const auto put = [&out](const void* p, std::size_t n) {
    const auto* b = static_cast<const std::uint8_t*>(p);
    out.insert(out.end(), b, b + n);
  };
  const std::uint32_t version = kModelFormatVersion;
  const std::uint64_t json_size = text.size(), float_count = w.floats().size();
  put(&version, 4);
  put(&json_size, 8);
  put(&float_count, 8);
  put(text.data(), text.size());
  put(w.floats().data(), w.floats().size() * sizeof(float));
  return out;
}

PatchCNN load_model(std::span<const std::uint8_t> bytes) {
  constexpr std::size_t kHeader = 24;
  if (bytes.size() < kHeader || std::memcmp(bytes.data(), kMagic, 4) != 0)
    throw ModelFormatError("not a pfhe model file (bad magic or too short)");
  std::uint32_t version;
  std::uint64_t json_size, float_count;
  std::memcpy(&version, bytes.data() + 4, 4);
  std::memcpy(&json_size, bytes.data() + 8, 8);
  std::memcpy(&float_count, bytes.data() + 16, 8);
  if (version != kModelFormatVersion)
    throw ModelFormatError("unsupported model format version " + std::to_string(version));
  if (json_size > bytes.size() - kHeader || float_count > (bytes.size() - kHeader - json_size) / sizeof(float) ||
      kHeader + json_size + float_count * sizeof(float) != bytes.size())
    throw ModelFormatError("model file size does not match its header (truncated or padded file)");
  json arch;
  try {
    arch = json::parse(bytes.begin() + kHeader, bytes.begin() + static_cast<std::ptrdiff_t>(kHeader + json_size));
  } catch (const json::exception& e) {
    throw ModelFormatError(std::string("model: invalid JSON header: ") + e.what());
  }
  std::vector<float> blob(float_count);
  std::memcpy(blob.data(), bytes.data() + kHeader + json_size, float_count * sizeof(float));
  try {
    if (arch.at("architecture").get<std::string>() != "cryptoface_pcnn")
      throw ModelFormatError("model: unknown architecture " + arch.at("architecture").dump());
    const TensorReader r(arch.at("tensors"), blob);
    PatchCNN m;
    m.grid = arch.at("grid").get<std::size_t>();
    m.patch_size = arch.at("patch_size").get<std::size_t>();
    const auto embedding = arch.at("embedding").get<std::size_t>();
    const auto stem = arch.at("stem_channels").get<std::size_t>();
    const auto blocks = arch.at("blocks").get<std::vector<std::pair<std::size_t, std::size_t>>>();
    const auto pool = arch.at("pool_size").get<std::size_t>();
    const auto l2 = arch.at("l2").get<std::vector<double>>();
    if (m.grid == 0 || m.grid > 16 || m.patch_size == 0 || m.patch_size > 1024 || stem == 0 || pool == 0 ||
        embedding == 0 || blocks.empty() || l2.size() != 3)
      throw ModelFormatError("model: architecture fields out of range");
    m.l2 = {l2[0], l2[1], l2[2]};
    const std::string task = arch.value("task", "verification");
    if (task != "verification" && task != "classification")
      throw ModelFormatError("model: unknown task '" + task + "' (verification or classification)");
    m.classifier = task == "classification";
    std::size_t features = 0;
    for (std::size_t p = 0; p < m.grid * m.grid; ++p) {
      const std::string net = "nets." + std::to_string(p);
      Backbone b;
      b.conv0 = r.conv(net + ".conv", 3, stem, 3, 1);
      std::size_t channels = stem;
      for (std::size_t j = 0; j < blocks.size(); ++j) {
        const auto [out, stride] = blocks[j];
        if (out == 0 || stride == 0 || stride > 4) throw ModelFormatError("model: invalid block description");
        const std::string layer = net + ".layers." + std::to_string(j);
        HerPNConvBlock blk{r.herpn(layer + ".herpn1", channels), r.conv(layer + ".conv1", channels, out, 3, stride),
                           r.herpn(layer + ".herpn2", out), r.conv(layer + ".conv2", out, out, 3, 1), std::nullopt,
                           std::nullopt};
        if (stride != 1 || out != channels) {
          blk.shortcut_conv = r.conv(layer + ".shortcut.0", channels, out, 1, stride);
          blk.shortcut_bn = r.bn(layer + ".shortcut.1", out, true);
        }
        b.blocks.push_back(std::move(blk));
        channels = out;
      }
      b.pool_herpn = r.herpn(net + ".herpnpool.herpn", channels);
      b.pool_size = pool;
      features = channels * pool * pool;
      b.bn1d = r.bn(net + ".bn", features, r.has(net + ".bn.weight"));
      m.backbones.push_back(std::move(b));
    }
    const std::size_t in = m.grid * m.grid * features;
    m.head = Linear{in, embedding, r.get("linear.weight", {embedding, in}), {}};
    if (r.has("linear.bias")) m.head.bias = r.get("linear.bias", {embedding});
    m.head_bn = r.bn("bn", embedding, false);
    m.validate();
    return m;
  } catch (const json::exception& e) {
    throw ModelFormatError(std::string("model: malformed architecture: ") + e.what());
  } catch (const std::invalid_argument& e) {
    throw ModelFormatError(std::string("model: inconsistent architecture: ") + e.what());
  }
}

void save_model_file(const PatchCNN& model, const std::string& path) {
  try {
    ckks::write_file(path, save_model(model));
  } catch (const ckks::SerializationError& e) {
    throw ModelFormatError(e.what());
  }
}

PatchCNN load_model_file(const std::string& path) {
  ckks::Bytes bytes;
  try {
    bytes = ckks::read_file(path);
  } catch (const ckks::SerializationError& e) {
    throw ModelFormatError(std::string("model file: ") + e.what());
  }
  return load_model(bytes);
}

bool is_model_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw std::invalid_argument(path + ": cannot open");
  char magic[4] = {};
  in.read(magic, 4);
  return in.gcount() == 4 && std::memcmp(magic, kMagic, 4) == 0;
}

}  // namespace pfhe::nn
