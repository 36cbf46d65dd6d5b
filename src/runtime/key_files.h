// The key files of a key set: the client's secret keys and the server's evaluation keys,
// each a bundle (runtime/bundle.h) tagged with the key set. A model that switches to the
// half ring (nn/half_ring.h) has keys in both rings: the secret-key file then holds both
// secrets, and the evaluation-key file the big ring's relinearization and Galois keys,
// the half ring's, and the ring-switch key.
#pragma once
#include <map>
#include <memory>
#include <optional>
#include <string>

#include "ckks/context.h"
#include "ckks/keygen.h"
#include "ckks/keys.h"
#include "nn/half_ring.h"

namespace pfhe::runtime {

struct SecretKeyFile {
  std::uint64_t key_set = 0;
  ckks::SecretKey key;
  std::optional<ckks::SecretKey> half_key;  // with a ring switch
};
// Throws std::invalid_argument unless the file has the half-ring secret exactly when
// `half_ring` is given.
void check_secret_keys(const nn::HalfRing* half_ring, const SecretKeyFile& key);
// A new key set: a fresh tag (OS CSPRNG) and secret(s).
SecretKeyFile new_secret_keys(const ckks::Context& ctx, const nn::HalfRing* half_ring);
// Written readable by its owner only.
void write_secret_key(const std::string& path, const ckks::Context& ctx, const nn::HalfRing* half_ring,
                      const SecretKeyFile& key);
// Refuses a file with the wrong number of secrets for `half_ring`.
SecretKeyFile read_secret_key(const std::string& path, const ckks::Context& ctx, const nn::HalfRing* half_ring);

struct HalfRingKeys {
  ckks::RelinKey relin;
  ckks::GaloisKeys galois;
  ckks::SwitchingKey switch_key;  // big secret -> the half secret (ckks/ring_switch.h)
};

struct EvaluationKeys {
  std::uint64_t key_set = 0;
  ckks::RelinKey relin;
  ckks::GaloisKeys galois;
  std::optional<HalfRingKeys> half;
  // What the keys' words live in when they are used in place (a mapped key cache,
  // runtime/key_cache.h); null when they own them.
  std::shared_ptr<const void> storage;
};

// What an evaluation-key set holds: rotation steps with the level each is needed at, per ring.
struct RotationRequest {
  std::map<long, std::size_t> big, half;
};

EvaluationKeys make_evaluation_keys(const ckks::Context& ctx, const nn::HalfRing* half_ring, const SecretKeyFile& secret,
                                    const RotationRequest& rotations);
// The same keys written to `path` as they are made (ckks::StreamedGaloisKeys, a few at a
// time), so the key set (10 GB in memory for CryptoFaceNet) never is in memory at once.
void write_evaluation_keys(const std::string& path, const ckks::Context& ctx, const nn::HalfRing* half_ring,
                           const SecretKeyFile& secret, const RotationRequest& rotations);
// Keys already in memory (e.g. made by make_evaluation_keys), in the same file format.
void write_evaluation_keys(const std::string& path, const ckks::Context& ctx, const nn::HalfRing* half_ring,
                           const EvaluationKeys& keys);
// Refuses a file without (or with) the half ring's keys when `half_ring` is (not) given.
EvaluationKeys read_evaluation_keys(const std::string& path, const ckks::Context& ctx, const nn::HalfRing* half_ring);

}  // namespace pfhe::runtime
