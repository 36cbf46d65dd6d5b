// A bundle file: several serialized pfhe objects in one file ("PFHB", version, key-set
// tag, count, then length-prefixed objects). Patch ciphertexts, results, the secret key
// and the evaluation keys travel as bundles. The key-set tag is a random 64-bit number
// drawn at key generation and carried by every file made under that key set, so that
// mixing files of different key sets is a clear error instead of silent garbage (0: no
// tag). Loading checks the framing; every object is validated by its own loader (type,
// parameter fingerprint, sizes, coefficient ranges).
#pragma once
#include <functional>
#include <map>
#include <span>
#include <string>
#include <vector>

#include "ckks/byte_stream.h"
#include "ckks/ciphertext.h"
#include "ckks/context.h"
#include "ckks/keygen.h"
#include "ckks/keys.h"

namespace pfhe::runtime {

struct Bundle {
  std::uint64_t key_set = 0;
  std::vector<ckks::Bytes> objects;
};
ckks::Bytes save_bundle(const Bundle& bundle);
// The same bytes written straight to a file, one object at a time: `make_object(i)`
// produces object i, so at most one serialized object is in memory.
void write_bundle_file(const std::string& path, std::uint64_t key_set, std::size_t count,
                       const std::function<ckks::Bytes(std::size_t)>& make_object);
// A parsed bundle: views into the bytes it was parsed from (no copy of the objects).
struct BundleView {
  std::uint64_t key_set = 0;
  std::vector<std::span<const std::uint8_t>> objects;
};
BundleView load_bundle(std::span<const std::uint8_t> bytes);
BundleView view_of(const Bundle& bundle);

std::uint64_t new_key_set_tag();  // from the OS CSPRNG, never 0
// Throws std::invalid_argument naming both files when two tags differ.
void check_same_key_set(std::uint64_t a, const std::string& what_a, std::uint64_t b, const std::string& what_b);

struct CiphertextFile {
  std::uint64_t key_set = 0;
  std::vector<ckks::Ciphertext> ciphertexts;
};
// Files are read through a memory mapping (runtime/mapped_file.h).
// Compressed; seeded ciphertexts in a file are expanded on reading.
void write_ciphertexts(const std::string& path, const ckks::Context& ctx, const CiphertextFile& file);
CiphertextFile read_ciphertexts(const std::string& path, const ckks::Context& ctx);
// The ciphertexts of a bundle in memory (e.g. a client's freshly encrypted patches), each
// validated; seeded ones expanded.
CiphertextFile load_ciphertexts(const BundleView& bundle, const ckks::Context& ctx);

struct EvaluationKeys {
  std::uint64_t key_set = 0;
  ckks::RelinKey relin;
  ckks::GaloisKeys galois;
};
void write_evaluation_keys(const std::string& path, const ckks::Context& ctx, const EvaluationKeys& keys);
// The same file, made by `keygen` as it is written: the relinearization key, then the
// Galois keys for `rotation_levels` a few at a time (ckks::StreamedGaloisKeys), so the
// key set (10 GB in memory for CryptoFaceNet) never is in memory at once.
void write_evaluation_keys(const std::string& path, const ckks::Context& ctx, std::uint64_t key_set,
                           const ckks::KeyGenerator& keygen, const std::map<long, std::size_t>& rotation_levels);
EvaluationKeys read_evaluation_keys(const std::string& path, const ckks::Context& ctx);

struct SecretKeyFile {
  std::uint64_t key_set = 0;
  ckks::SecretKey key;
};
// Written readable by its owner only.
void write_secret_key(const std::string& path, const ckks::Context& ctx, const SecretKeyFile& key);
SecretKeyFile read_secret_key(const std::string& path, const ckks::Context& ctx);

}  // namespace pfhe::runtime
