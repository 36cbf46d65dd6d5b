// Key material. Polynomials are in NTT form; "QP" polynomials carry a Q part (primes of
// the chain up to the key's level) and a P part (special primes).
#pragma once
#include <cstdint>
#include <map>
#include <vector>

#include "ring/poly.h"
#include "ring/prng.h"

namespace pfhe::ckks {

struct QPPoly {
  ring::Poly q, p;
  std::size_t byte_size() const { return q.byte_size() + p.byte_size(); }
};

struct SecretKey {
  QPPoly s;  // full chain and all special primes
};

// Over Q x P so that encryption can divide its noise by P (see Encryptor).
struct PublicKey {
  QPPoly b, a;  // b = -a*s + e
  std::size_t byte_size() const { return b.byte_size() + a.byte_size(); }
};

// Hybrid key-switching key from s' to s: digit j holds
// (b_j, a_j) = (-a_j*s + e_j + P*[Q/Q_j * (Q/Q_j)^{-1}]_{Q_j} * s', a_j) over Q_level x P.
struct SwitchingKey {
  std::vector<QPPoly> b, a;  // one per digit
  ring::Seed a_seed{};       // the a_j are expanded from this seed (stored instead of a)
  std::size_t max_level() const { return b.empty() ? 0 : b[0].q.limbs() - 1; }
  std::size_t byte_size() const {
    std::size_t s = 0;
    for (std::size_t j = 0; j < b.size(); ++j) s += b[j].byte_size() + a[j].byte_size();
    return s;
  }
};

struct RelinKey {
  SwitchingKey key;  // s^2 -> s
  std::size_t byte_size() const { return key.byte_size(); }
};

// Galois keys indexed by Galois element g (X -> X^g): s(X^g) -> s.
struct GaloisKeys {
  std::map<std::uint64_t, SwitchingKey> keys;
  bool has(std::uint64_t g) const { return keys.count(g) != 0; }
  std::size_t byte_size() const {
    std::size_t s = 0;
    for (const auto& [g, k] : keys) s += k.byte_size();
    return s;
  }
};

// Galois element for a left rotation by `step` slots (negative: right) in a ring of
// degree n: 5^step mod 2n, the step taken modulo n/2.
std::uint64_t galois_element_for_step(long step, std::size_t n);
// Galois element of complex conjugation: 2n - 1.
inline std::uint64_t galois_element_conjugate(std::size_t n) { return 2 * n - 1; }

}  // namespace pfhe::ckks
