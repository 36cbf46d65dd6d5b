#include "nn/half_ring.h"

#include "ckks/ring_switch.h"

namespace pfhe::nn {

std::shared_ptr<const HalfRing> HalfRing::make(const ckks::Parameters& big, const RingSwitchChoice& choice) {
  return std::make_shared<const HalfRing>(big, choice);
}

HalfRing::HalfRing(const ckks::Parameters& big, const RingSwitchChoice& c)
    : choice(c),
      big_fingerprint(big.fingerprint()),
      context(ckks::half_ring_parameters(big, c.level, c.special_primes)),
      switch_context(ckks::switch_key_parameters(big, c.level, c.special_primes)),
      encoder(context),
      plan{encoder, c.after_block} {}

}  // namespace pfhe::nn
