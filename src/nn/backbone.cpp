#include "nn/backbone.h"

#include <stdexcept>

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

Shape Backbone::feature_shape(const Shape& patch) const {
  Shape s = conv0.output_shape(patch);
  for (const auto& b : blocks) s = b.conv2.output_shape(b.conv1.output_shape(s));
  return {s.channels * pool_size * pool_size, 1, 1};
}

}  // namespace pfhe::nn
