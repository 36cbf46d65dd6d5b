// The key files of a key set: the client's secret keys and the server's evaluation keys,
// each a bundle (runtime/bundle.h) tagged with the key set. A model that switches to the
// half ring (nn/half_ring.h) has keys in both rings: the secret-key file then holds both
// secrets, and the evaluation-key file the big ring's relinearization and Galois keys,
// the half ring's, and the ring-switch key. A model that bootstraps with sparse-secret
// encapsulation (ckks/bootstrapping.h) adds the two encapsulation keys at the end; its
// conjugation key is one more Galois key.
#pragma once
#include <map>
#include <memory>
#include <optional>
#include <string>

#include "ckks/bootstrapping.h"
#include "ckks/context.h"
#include "ckks/keygen.h"
#include "ckks/keys.h"
#include "nn/half_ring.h"
#include "runtime/bundle.h"

namespace pfhe::runtime {

// What to do when a model that bootstraps meets a server given its model file: its
// bootstraps are placed from the calibration ranges only `pfhe compile` has, so the model
// file alone compiles without them (and refuses the keys made for the artefact's spec).
inline constexpr const char* kServeBootstrappedFromArtefact =
    "a model that bootstraps is served from its compiled model.pfhc, not its model file";

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
  std::optional<ckks::EncapsulationKeys> encapsulation;  // with a bootstrapping model's encapsulation
  // What the keys' words live in when they are used in place (a mapped key cache,
  // runtime/key_cache.h); null when they own them.
  std::shared_ptr<const void> storage;
};

// What an evaluation-key set holds: rotation steps with the level each is needed at, per
// ring; with bootstrapping the conjugation key's level and, with encapsulation, the
// ephemeral secret's Hamming weight (0: no encapsulation keys).
struct KeyRequest {
  std::map<long, std::size_t> big, half;
  std::optional<std::size_t> conjugation_level;
  int ephemeral_weight = 0;
};

EvaluationKeys make_evaluation_keys(const ckks::Context& ctx, const nn::HalfRing* half_ring, const SecretKeyFile& secret,
                                    const KeyRequest& rotations);
// The context of a key set's encapsulation keys (ckks::encapsulation_parameters of ctx's),
// made when the request asks for them; null otherwise.
std::unique_ptr<ckks::Context> encapsulation_context(const ckks::Context& ctx, const KeyRequest& request);
// The same keys written to `path` as they are made (ckks::StreamedGaloisKeys, a few at a
// time), so the key set (10 GB in memory for CryptoFaceNet) never is in memory at once.
void write_evaluation_keys(const std::string& path, const ckks::Context& ctx, const nn::HalfRing* half_ring,
                           const SecretKeyFile& secret, const KeyRequest& rotations);
// Keys already in memory (e.g. made by make_evaluation_keys), in the same file format.
void write_evaluation_keys(const std::string& path, const ckks::Context& ctx, const nn::HalfRing* half_ring,
                           const EvaluationKeys& keys);
// The objects of an evaluation-key file for a model with (or without) a half ring and
// encapsulation: returns the count of ring keys (before the encapsulation keys); throws
// ckks::SerializationError saying which kind of model the file was made for otherwise, or
// that it is a secret key (which a server must never be given).
std::size_t check_evaluation_key_objects(const BundleView& file, const nn::HalfRing* half_ring,
                                         const ckks::Context* encapsulation);
// Refuses a file without (or with) the half ring's keys when `half_ring` is (not) given, and
// without (or with) encapsulation keys when `encapsulation` (their context) is (not) given.
EvaluationKeys read_evaluation_keys(const std::string& path, const ckks::Context& ctx, const nn::HalfRing* half_ring,
                                    const ckks::Context* encapsulation = nullptr);

}  // namespace pfhe::runtime
