// A bundle file: several serialized pfhe objects in one file ("PFHB", version, key-set
// tag, count, then length-prefixed objects). Patch ciphertexts, results, the secret key
// and the evaluation keys travel as bundles. The key-set tag is a random 64-bit number
// drawn at key generation and carried by every file made under that key set, so that
// mixing files of different key sets is a clear error instead of silent garbage (0: no
// tag). Loading checks the framing; every object is validated by its own loader (type,
// parameter fingerprint, sizes, coefficient ranges). The key files: runtime/key_files.h.
#pragma once
#include <functional>
#include <map>
#include <span>
#include <string>
#include <vector>

#include "ckks/byte_stream.h"
#include "ckks/ciphertext.h"
#include "ckks/context.h"
#include "ckks/serialization.h"

namespace pfhe::runtime {

struct Bundle {
  std::uint64_t key_set = 0;
  std::vector<ckks::Bytes> objects;
};
ckks::Bytes save_bundle(const Bundle& bundle);
// An object of a bundle file produced as the file is written: its exact size, then its
// bytes handed to the sink in pieces (e.g. Galois keys made a few at a time).
using ByteSink = std::function<void(std::span<const std::uint8_t>)>;
struct StreamedObject {
  std::uint64_t size;
  std::function<void(const ByteSink&)> write;
};
StreamedObject streamed(ckks::Bytes bytes);  // an object already in memory
// The same bytes as save_bundle, written straight to a file one object at a time.
void write_bundle_file(const std::string& path, std::uint64_t key_set, const std::vector<StreamedObject>& objects);
// The same file written as its objects become available (the benchmark's scores, in pair
// order as the pairs finish): `count` objects, each added in order, then commit().
// Uncommitted (an error on the way), the partial file is removed.
class BundleFileWriter {
 public:
  BundleFileWriter(const std::string& path, std::uint64_t key_set, std::size_t count);
  void add(const StreamedObject& object);
  void commit();  // throws std::logic_error unless `count` objects were added

 private:
  ckks::FileWriter file_;
  std::size_t count_, added_ = 0;
};
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
// The same file's ciphertexts one at a time, in order, each validated and handed to
// `visit` (then dropped by the caller): a file of many results without all of them
// expanded in memory (the benchmark's 1,024 scores).
void for_each_ciphertext(const std::string& path, const ckks::Context& ctx,
                         const std::function<void(std::uint64_t key_set, ckks::Ciphertext&&)>& visit);
// The bytes write_ciphertexts puts in a file (checksum trailer included) and back, for
// ciphertexts that travel without a file (the service); errors name `what`.
ckks::Bytes ciphertext_file_bytes(const ckks::Context& ctx, const CiphertextFile& file);
// One ciphertext as a ciphertext file stores it (compressed), for BundleFileWriter.
ckks::Bytes stored_ciphertext(const ckks::Context& ctx, const ckks::Ciphertext& c);
CiphertextFile parse_ciphertext_file(std::span<const std::uint8_t> bytes, const ckks::Context& ctx,
                                     const std::string& what);
// The ciphertexts of a bundle in memory (e.g. a client's freshly encrypted patches), each
// validated; seeded ones expanded.
CiphertextFile load_ciphertexts(const BundleView& bundle, const ckks::Context& ctx);

}  // namespace pfhe::runtime
