// Key generation: the secret key stays with the client; everything else is public.
#pragma once
#include <map>
#include <vector>

#include "ckks/context.h"
#include "ckks/keys.h"

namespace pfhe::ckks {

class KeyGenerator {
 public:
  explicit KeyGenerator(const Context& context);  // samples a fresh secret key
  KeyGenerator(const Context& context, SecretKey secret_key);

  const SecretKey& secret_key() const { return secret_key_; }
  const Context& context() const { return context_; }
  PublicKey create_public_key() const;
  // max_level: highest level the key will be used at (default: top); lower levels make
  // smaller keys because primes above the level are not stored.
  RelinKey create_relin_key(std::size_t max_level) const;
  RelinKey create_relin_key() const { return create_relin_key(context_.max_level()); }
  // The key for X -> X^g switches s to phi_g^{-1}(s) (not phi_g(s) to s): rotation then
  // permutes the two key-switched outputs instead of every decomposition digit.
  SwitchingKey create_galois_key(std::uint64_t galois_element, std::size_t max_level) const;
  // Keys for left rotations by each step (negative = right) and, if asked, conjugation.
  GaloisKeys create_galois_keys(const std::vector<long>& steps, bool conjugate, std::size_t max_level) const;
  GaloisKeys create_galois_keys(const std::vector<long>& steps, bool conjugate = false) const {
    return create_galois_keys(steps, conjugate, context_.max_level());
  }

  // One key per rotation step, each generated only up to the level it is needed at (the
  // highest level wins when two steps share a Galois element). This is the minimal key set
  // a compiled model asks for (CompiledGraph::rotation_levels()).
  GaloisKeys create_galois_keys(const std::map<long, std::size_t>& step_levels) const;

  // Switching key s' -> s where s' is given on the Q chain (NTT form, >= max_level+1 limbs).
  SwitchingKey create_switching_key(const ring::Poly& s_prime, std::size_t max_level) const {
    return create_switching_key(s_prime, secret_key_.s, max_level);
  }
  // Switching key s' -> `under` (a QP secret, NTT form).
  SwitchingKey create_switching_key(const ring::Poly& s_prime, const QPPoly& under, std::size_t max_level) const;

 private:
  ring::Poly secret_up_to(std::size_t level) const;  // s on q_0..q_level
  const Context& context_;
  SecretKey secret_key_;
};

// The Galois elements a set of rotation steps needs, each with the highest level one of its
// steps is used at (steps that are the identity are dropped): what create_galois_keys makes.
std::map<std::uint64_t, std::size_t> galois_element_levels(const Context& context,
                                                           const std::map<long, std::size_t>& step_levels);

// Regenerates the uniform `a` parts of a switching key from its seed (used by keygen and
// by the loader of seeded keys, so both derive exactly the same polynomials).
void expand_switching_key_a(const Context& context, const ring::Seed& seed, std::size_t max_level,
                            std::vector<QPPoly>& a);

}  // namespace pfhe::ckks
