// The half ring a compiled PatchCNN switches to (ckks/ring_switch.h): where the switch
// happens and the contexts and encoder it needs, all derived from the big ring's
// parameters, so that a model file, a client spec and a key file only have to name the
// switch (block, level, special primes) and check the derived fingerprint.
#pragma once
#include <cstddef>
#include <cstdint>
#include <memory>

#include "ckks/context.h"
#include "ckks/encoder.h"
#include "nn/compiled_backbone.h"

namespace pfhe::nn {

struct RingSwitchChoice {
  std::size_t after_block, level, special_primes;
  bool operator==(const RingSwitchChoice&) const = default;
};

// Not copyable or movable (the encoder refers to the context): shared by the compiled
// model, its server and its client through std::shared_ptr.
class HalfRing {
 public:
  // Throws std::invalid_argument when the choice does not fit `big` (level out of range,
  // too many special primes, below 128-bit security for a secure `big`).
  static std::shared_ptr<const HalfRing> make(const ckks::Parameters& big, const RingSwitchChoice& choice);
  HalfRing(const ckks::Parameters& big, const RingSwitchChoice& choice);
  HalfRing(const HalfRing&) = delete;
  HalfRing& operator=(const HalfRing&) = delete;

  const RingSwitchChoice choice;
  const std::uint64_t big_fingerprint;  // of the parameters it was derived from
  const ckks::Context context;         // N/2, q_0..q_level, the first special primes
  const ckks::Context switch_context;  // the switch key's: N with the half ring's primes
  const ckks::Encoder encoder;         // of `context`
  const RingSwitchPlan plan;           // what CompiledBackbone compiles and loads with
};

}  // namespace pfhe::nn
