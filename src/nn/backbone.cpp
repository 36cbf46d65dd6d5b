#include "nn/backbone.h"

#include <stdexcept>

#include "nn/graph.h"

namespace pfhe::nn {

void HerPNConvBlock::validate() const {
  herpn1.validate();
  herpn2.validate();
  conv1.validate();
  conv2.validate();
  if (shortcut_conv.has_value() != shortcut_bn.has_value())
    throw std::invalid_argument("HerPNConvBlock: shortcut conv and BatchNorm come together");
  if (shortcut_conv) {
    shortcut_conv->validate();
    shortcut_bn->validate();
  } else if (conv1.stride != 1 || conv1.in_channels != conv2.out_channels) {
    throw std::invalid_argument("HerPNConvBlock: an identity shortcut needs stride 1 and equal channels");
  }
}

Tensor HerPNConvBlock::forward(const Tensor& input, const TensorObserver* observe, const std::string& prefix) const {
  const auto seen = [&](const char* point, Tensor t) {
    if (observe) (*observe)(prefix + point, t);
    return t;
  };
  const Tensor x = seen(".herpn1 input", input);
  const Tensor z = seen(".conv1 input", herpn1.forward(x));
  const Tensor h = seen(".herpn2 input", conv1.forward(z));
  const Tensor main = conv2.forward(seen(".conv2 input", herpn2.forward(h)));
  const Tensor shortcut = shortcut_conv ? shortcut_bn->forward(shortcut_conv->forward(z)) : z;
  return seen(" output", add(main, shortcut));
}

void Backbone::validate() const {
  conv0.validate();
  for (const auto& b : blocks) b.validate();
  pool_herpn.validate();
  bn1d.validate();
}

Tensor Backbone::forward(const Tensor& patch, const TensorObserver* observe, const std::string& prefix) const {
  Tensor x = conv0.forward(patch);
  if (observe) (*observe)(prefix + ".conv output", x);
  for (std::size_t j = 0; j < blocks.size(); ++j) x = blocks[j].forward(x, observe, prefix + ".layers." + std::to_string(j));
  return bn1d.forward(pooled_features(x, observe, prefix));
}

Tensor Backbone::pooled_features(const Tensor& block_output, const TensorObserver* observe,
                                 const std::string& prefix) const {
  Tensor x = block_output;
  if (observe) (*observe)(prefix + ".herpnpool input", x);
  Tensor activated = pool_herpn.forward(x);
  if (observe) (*observe)(prefix + ".pool input", activated);
  const Tensor pooled = AdaptiveAvgPool2d{pool_size}.forward(activated);
  Tensor flat({pooled.shape.size(), 1, 1});
  flat.data = pooled.data;
  return flat;
}

std::size_t Backbone::append_to(Graph& graph, const std::string& prefix, std::size_t input) const {
  std::size_t x = graph.add(prefix + ".conv", conv0, input);
  for (std::size_t j = 0; j < blocks.size(); ++j) {
    const HerPNConvBlock& b = blocks[j];
    const std::string name = prefix + ".layers." + std::to_string(j);
    const std::size_t z = graph.add(name + ".herpn1", b.herpn1.fuse(), x);
    std::size_t main = graph.add(name + ".conv1", b.conv1, z);
    main = graph.add(name + ".herpn2", b.herpn2.fuse(), main);
    main = graph.add(name + ".conv2", b.conv2, main);
    std::size_t shortcut = z;
    if (b.shortcut_conv) {
      shortcut = graph.add(name + ".shortcut", *b.shortcut_conv, z);
      shortcut = graph.add(name + ".shortcut.bn", *b.shortcut_bn, shortcut);
    }
    x = graph.add(name, Add{}, {main, shortcut});
  }
  x = graph.add(prefix + ".herpnpool", pool_herpn.fuse(), x);
  x = graph.add(prefix + ".pool", AdaptiveAvgPool2d{pool_size}, x);
  x = graph.add(prefix + ".flatten", Flatten{}, x);
  return graph.add(prefix + ".bn1d", bn1d, x);
}

Shape Backbone::feature_shape(const Shape& patch) const {
  Shape s = conv0.output_shape(patch);
  for (const auto& b : blocks) s = b.conv2.output_shape(b.conv1.output_shape(s));
  return {s.channels * pool_size * pool_size, 1, 1};
}

}  // namespace pfhe::nn
