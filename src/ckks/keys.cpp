#include "ckks/keys.h"

namespace pfhe::ckks {

std::uint64_t galois_element_for_step(long step, std::size_t n) {
  const long half = static_cast<long>(n / 2);
  long k = step % half;
  if (k < 0) k += half;
  const std::uint64_t two_n = 2 * n;
  std::uint64_t g = 1, base = 5;
  for (auto e = static_cast<std::uint64_t>(k); e; e >>= 1) {
    if (e & 1) g = g * base % two_n;
    base = base * base % two_n;
  }
  return g;
}

}  // namespace pfhe::ckks
