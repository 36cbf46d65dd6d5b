// Shared helpers for the nn tests: the reduced CryptoFace backbone used on small rings.
#pragma once
#include "nn/synthetic.h"

namespace pfhe::test {

// Channels 4, 4, 8 (s2), 8, 16 (s2), 16: every layer type of CryptoFaceNet at a size that
// runs encrypted in seconds.
inline nn::BackboneShape reduced_backbone_shape() { return nn::synthetic_kind("reduced").shape; }

}  // namespace pfhe::test
