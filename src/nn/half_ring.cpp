#include "nn/half_ring.h"

#include "ckks/ring_switch.h"
#include "ckks/serialization.h"

namespace pfhe::nn {

std::shared_ptr<const HalfRing> HalfRing::make(const ckks::Parameters& big, const RingSwitchChoice& choice) {
  return std::make_shared<const HalfRing>(big, choice);
}

HalfRing::HalfRing(const ckks::Parameters& big, const RingSwitchChoice& c)
    : choice(c),
      big_fingerprint(big.fingerprint()),
      context(ckks::half_ring_parameters(big, c.level, c.special_primes)),
      switch_context(ckks::switch_key_parameters(big, c.level, c.special_primes)),
      encoder(context) {}

void save_ring_switch(ckks::ByteWriter& w, const HalfRing* half) {
  w.put<std::uint64_t>(half ? 1 : 0);
  if (!half) return;
  w.put<std::uint64_t>(half->choice.level);
  w.put<std::uint64_t>(half->choice.special_primes);
  w.put<std::uint64_t>(half->context.params().fingerprint());
}

std::shared_ptr<const HalfRing> load_ring_switch(const ckks::Parameters& big, ckks::ByteReader& r, const char* what) {
  const auto flag = r.get<std::uint64_t>(what);
  if (flag > 1) throw ckks::SerializationError(std::string(what) + ": bad ring-switch flag");
  if (flag == 0) return nullptr;
  RingSwitchChoice choice;
  choice.level = r.get_count(what, big.max_level());
  choice.special_primes = r.get_count(what, big.p().size());
  const auto fingerprint = r.get<std::uint64_t>(what);
  std::shared_ptr<const HalfRing> half;
  try {
    half = HalfRing::make(big, choice);
  } catch (const std::invalid_argument& e) {
    throw ckks::SerializationError(std::string(what) + ": invalid ring switch: " + e.what());
  }
  if (half->context.params().fingerprint() != fingerprint)
    throw ckks::SerializationError(std::string(what) + ": the half ring's fingerprint does not match its parameters");
  return half;
}

}  // namespace pfhe::nn
