// The half ring a compiled model switches to (ckks/ring_switch.h): where the switch
// happens and the contexts and encoder it needs, all derived from the big ring's
// parameters, so that a compiled model, a client spec and a key file only have to name the
// switch (level, special primes) and check the derived fingerprint.
#pragma once
#include <cstddef>
#include <cstdint>
#include <memory>

#include "ckks/byte_stream.h"
#include "ckks/context.h"
#include "ckks/encoder.h"
#include "ckks/evaluator.h"
#include "ckks/keys.h"

namespace pfhe::nn {

// Evaluating the blocks after a ring switch (ckks/ring_switch.h): the switch key with its
// context, and an evaluator of the half ring holding its relinearization and Galois keys.
struct HalfRingEvaluation {
  const ckks::Context& switch_context;
  const ckks::SwitchingKey& switch_key;
  const ckks::Evaluator& evaluator;
};

// A graph switches each value the compiler brings to `level` (nn/compiled_graph.h); the
// half ring keeps q_0 ... q_level and the first `special_primes` special primes.
struct RingSwitchChoice {
  std::size_t level, special_primes;
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
};

// The stored switch (docs/FORMAT.md: u64 flag, then level, special primes and the half
// ring's fingerprint), in compiled models and compiled graphs. Loading derives
// the half ring again from `big` and checks the fingerprint (ckks::SerializationError
// naming `what` otherwise); null when the flag says there is no switch.
void save_ring_switch(ckks::ByteWriter& w, const HalfRing* half);
std::shared_ptr<const HalfRing> load_ring_switch(const ckks::Parameters& big, ckks::ByteReader& r, const char* what);

}  // namespace pfhe::nn
