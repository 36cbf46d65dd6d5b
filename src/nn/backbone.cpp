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

Tensor HerPNConvBlock::forward(const Tensor& x) const {
  const Tensor z = herpn1.forward(x);
  const Tensor main = conv2.forward(herpn2.forward(conv1.forward(z)));
  const Tensor shortcut = shortcut_conv ? shortcut_bn->forward(shortcut_conv->forward(z)) : z;
  return add(main, shortcut);
}

void Backbone::validate() const {
  conv0.validate();
  for (const auto& b : blocks) b.validate();
  pool_herpn.validate();
  bn1d.validate();
}

Tensor Backbone::forward(const Tensor& patch) const {
  Tensor x = conv0.forward(patch);
  for (const auto& b : blocks) x = b.forward(x);
  const Tensor pooled = AdaptiveAvgPool2d{pool_size}.forward(pool_herpn.forward(x));
  Tensor flat({pooled.shape.size(), 1, 1});
  flat.data = pooled.data;
  return bn1d.forward(flat);
}

Shape Backbone::feature_shape(const Shape& patch) const {
  Shape s = conv0.output_shape(patch);
  for (const auto& b : blocks) s = b.conv2.output_shape(b.conv1.output_shape(s));
  return {s.channels * pool_size * pool_size, 1, 1};
}

}  // namespace pfhe::nn
