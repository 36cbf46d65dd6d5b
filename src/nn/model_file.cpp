#include "nn/model_file.h"

#include "ckks/serialization.h"
#include "nn/model_container.h"

#include <cmath>
#include <cstring>
#include <fstream>
#include <map>

namespace pfhe::nn {

using container::json;
using container::TensorReader;
using container::TensorWriter;

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
  return container::write(arch, w.floats());
}

PatchCNN load_model(std::span<const std::uint8_t> bytes) {
  const container::Parsed parsed = container::read(bytes);
  const json& arch = parsed.header;
  const std::vector<float>& blob = parsed.floats;
  try {
    if (arch.at("architecture").get<std::string>() != "cryptoface_pcnn")
      throw ModelFormatError("model: architecture " + arch.at("architecture").dump() +
                             " is not a PatchCNN (cryptoface_pcnn)");
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
      b.conv0 = r.conv(net + ".conv", 3, stem, 3, 1, 1);
      std::size_t channels = stem;
      for (std::size_t j = 0; j < blocks.size(); ++j) {
        const auto [out, stride] = blocks[j];
        if (out == 0 || stride == 0 || stride > 4) throw ModelFormatError("model: invalid block description");
        const std::string layer = net + ".layers." + std::to_string(j);
        HerPNConvBlock blk{r.herpn(layer + ".herpn1", channels), r.conv(layer + ".conv1", channels, out, 3, stride, 1),
                           r.herpn(layer + ".herpn2", out), r.conv(layer + ".conv2", out, out, 3, 1, 1), std::nullopt,
                           std::nullopt};
        if (stride != 1 || out != channels) {
          blk.shortcut_conv = r.conv(layer + ".shortcut.0", channels, out, 1, stride, 0);
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

void save_model_file(const PatchCNN& model, const std::string& path) { container::write_file(path, save_model(model)); }

PatchCNN load_model_file(const std::string& path) { return load_model(container::read_file(path)); }

bool is_model_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw std::invalid_argument(path + ": cannot open");
  std::uint8_t magic[4] = {};
  in.read(reinterpret_cast<char*>(magic), 4);
  return in.gcount() == 4 && container::has_magic(magic);
}

}  // namespace pfhe::nn
