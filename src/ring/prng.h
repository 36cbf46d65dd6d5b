// Seeded pseudo-random stream: AES-256-CTR (OpenSSL) keyed by a 32-byte seed. Seeds come
// from the operating system's CSPRNG (OpenSSL RAND_bytes); a stream can be re-created from
// its seed, which is how seeded ciphertexts and keys are stored at half size.
#pragma once
#include <array>
#include <cstdint>
#include <memory>
#include <vector>

namespace pfhe::ring {

using Seed = std::array<std::uint8_t, 32>;

// A fresh seed from the OS CSPRNG; throws std::runtime_error if it cannot be had.
Seed random_seed();

class Prng {
 public:
  explicit Prng(const Seed& seed);
  Prng(const Prng&) = delete;
  Prng& operator=(const Prng&) = delete;
  ~Prng();

  void fill(std::uint8_t* out, std::size_t bytes);
  std::uint64_t next_u64();

 private:
  void refill();
  struct Cipher;
  std::unique_ptr<Cipher> cipher_;
  std::vector<std::uint8_t> buffer_;
  std::size_t pos_;
};

}  // namespace pfhe::ring
