#include "ring/prng.h"

#include <openssl/evp.h>
#include <openssl/rand.h>

#include <cstring>
#include <stdexcept>

namespace pfhe::ring {

namespace {
constexpr std::size_t kBufferBytes = 16 * 1024;
}

Seed random_seed() {
  Seed seed;
  if (RAND_bytes(seed.data(), static_cast<int>(seed.size())) != 1)
    throw std::runtime_error("OpenSSL RAND_bytes failed: no secure randomness available");
  return seed;
}

struct Prng::Cipher {
  EVP_CIPHER_CTX* ctx = nullptr;
  ~Cipher() { EVP_CIPHER_CTX_free(ctx); }
};

Prng::Prng(const Seed& seed) : cipher_(std::make_unique<Cipher>()), buffer_(kBufferBytes), pos_(kBufferBytes) {
  cipher_->ctx = EVP_CIPHER_CTX_new();
  const std::uint8_t iv[16] = {};  // the key is never reused with another stream
  if (!cipher_->ctx ||
      EVP_EncryptInit_ex(cipher_->ctx, EVP_aes_256_ctr(), nullptr, seed.data(), iv) != 1)
    throw std::runtime_error("cannot initialise AES-256-CTR");
}

Prng::~Prng() = default;

void Prng::refill() {
  static const std::vector<std::uint8_t> zeros(kBufferBytes, 0);
  int out_len = 0;
  if (EVP_EncryptUpdate(cipher_->ctx, buffer_.data(), &out_len, zeros.data(),
                        static_cast<int>(kBufferBytes)) != 1 ||
      out_len != static_cast<int>(kBufferBytes))
    throw std::runtime_error("AES-256-CTR keystream generation failed");
  pos_ = 0;
}

void Prng::fill(std::uint8_t* out, std::size_t bytes) {
  while (bytes > 0) {
    if (pos_ == buffer_.size()) refill();
    const std::size_t take = std::min(bytes, buffer_.size() - pos_);
    std::memcpy(out, buffer_.data() + pos_, take);
    pos_ += take;
    out += take;
    bytes -= take;
  }
}

std::uint64_t Prng::next_u64() {
  std::uint64_t v;
  fill(reinterpret_cast<std::uint8_t*>(&v), sizeof v);
  return v;
}

}  // namespace pfhe::ring
