// Plaintexts and ciphertexts: NTT-form RNS polynomials at a level (limbs = level + 1)
// with the scale of the encoded values and the number of used slots (a power of two).
#pragma once
#include <cstdint>
#include <stdexcept>
#include <vector>

#include "ring/poly.h"
#include "ring/prng.h"

namespace pfhe::ckks {

// Polynomials moved into a ciphertext's vector. A braced list would copy each one (an
// std::initializer_list holds const elements): a whole allocation and copy per polynomial.
template <typename... P>
std::vector<ring::Poly> moved_polys(P&&... polys) {
  std::vector<ring::Poly> out;
  out.reserve(sizeof...(polys));
  (out.push_back(std::forward<P>(polys)), ...);
  return out;
}

struct Plaintext {
  ring::Poly poly;
  double scale = 1;
  int log_slots = 0;
  std::size_t level() const { return poly.limbs() - 1; }
  std::size_t slots() const { return std::size_t{1} << log_slots; }
};

struct Ciphertext {
  std::vector<ring::Poly> polys;  // (c0, c1) or (c0, c1, c2) before relinearization
  double scale = 1;
  int log_slots = 0;

  std::size_t size() const { return polys.size(); }
  std::size_t level() const {
    if (polys.empty()) throw std::logic_error("empty ciphertext");
    return polys[0].limbs() - 1;
  }
  std::size_t slots() const { return std::size_t{1} << log_slots; }
  std::size_t byte_size() const {
    std::size_t s = 0;
    for (const auto& p : polys) s += p.byte_size();
    return s;
  }
};

// A fresh secret-key ciphertext whose c1 is regenerated from a seed: half the size on the
// wire. Expand with Encryptor::expand (or the loader) before computing on it.
struct SeededCiphertext {
  ring::Poly c0;
  ring::Seed seed{};
  double scale = 1;
  int log_slots = 0;
  std::size_t level() const { return c0.limbs() - 1; }
};

}  // namespace pfhe::ckks
