// Shared helpers for the nn tests: the reduced CryptoFace backbone used on small rings.
#pragma once
#include "nn/backbone.h"

namespace pfhe::test {

// Channels 4, 4, 8 (s2), 8, 16 (s2), 16: every layer type of CryptoFaceNet at a size that
// runs encrypted in seconds.
inline nn::BackboneShape reduced_backbone_shape() {
  nn::BackboneShape s;
  s.stem_channels = 4;
  s.blocks = {{4, 1}, {8, 2}, {8, 1}, {16, 2}, {16, 1}};
  return s;
}

}  // namespace pfhe::test
