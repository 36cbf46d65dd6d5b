// Encryption (public-key or secret-key mode) and decryption.
#pragma once
#include <optional>

#include "ckks/ciphertext.h"
#include "ckks/context.h"
#include "ckks/keys.h"

namespace pfhe::ckks {

class Encryptor {
 public:
  Encryptor(const Context& context, const PublicKey& public_key);
  Encryptor(const Context& context, const SecretKey& secret_key);

  // Public-key mode if constructed with a public key, secret-key mode otherwise.
  Ciphertext encrypt(const Plaintext& pt) const;
  // Secret-key mode only: c1 is derived from a fresh seed and not stored.
  SeededCiphertext encrypt_seeded(const Plaintext& pt) const;

 private:
  void check_plaintext(const Plaintext& pt) const;
  const Context& context_;
  const PublicKey* public_key_ = nullptr;
  const SecretKey* secret_key_ = nullptr;
};

// Rebuilds c1 of a seeded ciphertext (deterministic in the seed and the level).
Ciphertext expand_seeded(const Context& context, const SeededCiphertext& seeded);

class Decryptor {
 public:
  Decryptor(const Context& context, const SecretKey& secret_key);
  Plaintext decrypt(const Ciphertext& ct) const;

 private:
  const Context& context_;
  const SecretKey& secret_key_;
};

}  // namespace pfhe::ckks
