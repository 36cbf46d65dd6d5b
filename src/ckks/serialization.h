// Versioned binary format for parameters, plaintexts, ciphertexts and keys
// (documented in docs/FORMAT.md). Every loader validates the header (magic, version,
// object type, parameter fingerprint, sizes) and every coefficient against its prime, and
// throws SerializationError with a message naming what is wrong; it never crashes on
// malformed input.
#pragma once
#include <cerrno>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <span>
#include <stdexcept>
#include <string>
#include <string_view>
#include <system_error>
#include <vector>

#include "ckks/byte_stream.h"
#include "ckks/checksum.h"
#include "ckks/ciphertext.h"
#include "ckks/context.h"
#include "ckks/keys.h"

namespace pfhe::ckks {

inline constexpr std::uint16_t kFormatVersion = 1;

enum class ObjectType : std::uint16_t {
  kParameters = 1,
  kPlaintext = 2,
  kCiphertext = 3,
  kSeededCiphertext = 4,
  kSecretKey = 5,
  kPublicKey = 6,
  kRelinKey = 7,
  kGaloisKeys = 8,
  kSwitchingKey = 9,  // at its context's top level (a ring switch, encapsulation)
};
std::string to_string(ObjectType type);

struct SaveOptions {
  bool compress = false;  // zstd over the payload
  int compression_level = 3;
};

Bytes save_parameters(const Parameters& params, SaveOptions options = {});
Parameters load_parameters(std::span<const std::uint8_t> bytes);

Bytes save(const Context& ctx, const Plaintext& pt, SaveOptions options = {});
Bytes save(const Context& ctx, const Ciphertext& ct, SaveOptions options = {});
Bytes save(const Context& ctx, const SeededCiphertext& ct, SaveOptions options = {});
Bytes save(const Context& ctx, const SecretKey& sk, SaveOptions options = {});
Bytes save(const Context& ctx, const PublicKey& pk, SaveOptions options = {});
// Switching keys are stored seeded: the a_j are regenerated from the key's seed.
Bytes save(const Context& ctx, const RelinKey& rk, SaveOptions options = {});
Bytes save(const Context& ctx, const GaloisKeys& gk, SaveOptions options = {});
// A switching key at the top level of its context: a ring switch's (ckks/ring_switch.h, in
// its switch_key_parameters context) and the two of encapsulation (ckks/bootstrapping.h).
Bytes save_switching_key(const Context& switch_ctx, const SwitchingKey& key, SaveOptions options = {});

// A Galois key set written key by key, byte for byte what save(ctx, keys) (uncompressed)
// writes for the keys make(g, level) returns, without the whole set in memory: keys are
// made a few at a time (in parallel), serialized in increasing element order and handed to
// `sink`, then dropped. `element_levels` as from galois_element_levels (ckks/keygen.h).
// stored_size is the byte count the sink receives (for length-prefixed containers).
struct StreamedGaloisKeys {
  const Context& ctx;
  std::map<std::uint64_t, std::size_t> element_levels;
  std::size_t stored_size() const;
  void write(const std::function<SwitchingKey(std::uint64_t element, std::size_t level)>& make,
             const std::function<void(std::span<const std::uint8_t>)>& sink) const;
};

Plaintext load_plaintext(const Context& ctx, std::span<const std::uint8_t> bytes);
Ciphertext load_ciphertext(const Context& ctx, std::span<const std::uint8_t> bytes);
SeededCiphertext load_seeded_ciphertext(const Context& ctx, std::span<const std::uint8_t> bytes);
SecretKey load_secret_key(const Context& ctx, std::span<const std::uint8_t> bytes);
PublicKey load_public_key(const Context& ctx, std::span<const std::uint8_t> bytes);
RelinKey load_relin_key(const Context& ctx, std::span<const std::uint8_t> bytes);
SwitchingKey load_switching_key(const Context& switch_ctx, std::span<const std::uint8_t> bytes);
// With `backing` (what holds `bytes`, e.g. a file mapping) and the set stored uncompressed
// (read in place), each key's stored bytes are handed back to it (Backing::release) once
// parsed, so that loading does not hold the stored keys and the expanded ones at once.
GaloisKeys load_galois_keys(const Context& ctx, std::span<const std::uint8_t> bytes, const Backing* backing = nullptr);
// The same keys one by one, in stored order, to `sink(element, key)`: decoded (checked and
// expanded) `batch` at a time in parallel, so at most `batch` keys are in memory (the key
// cache, runtime/key_cache.h, expands a 4.8 GB key file this way). The whole set's framing
// is checked before the first key is handed over.
void for_each_galois_key(const Context& ctx, std::span<const std::uint8_t> bytes, const Backing* backing,
                         std::size_t batch, const std::function<void(std::uint64_t, SwitchingKey&&)>& sink);

// A plaintext inside a larger stored object (a compiled model's steps), laid out to be used
// in place: u32 level, u32 log2 slot count, f64 scale, zero padding to an 8-byte boundary
// of the stream, then its (level + 1) x N words in NTT form. With `backing` (what keeps the
// reader's bytes alive, a file mapping) the loaded plaintext borrows those words
// (ring::Poly::borrowed) instead of copying them. Either way every word is checked below
// its prime (limbs in parallel), and levels above the top are refused.
void put_plaintext_in_place(ByteWriter& w, const Plaintext& pt);
Plaintext get_plaintext_in_place(const Context& ctx, ByteReader& r, const std::shared_ptr<const Backing>& backing,
                                 const char* what);

// Reads only the header: the object type stored in `bytes` (throws if not a pfhe object).
ObjectType peek_type(std::span<const std::uint8_t> bytes);

// A file that could not be written (the disk full, a missing directory, permissions):
// the OS error (errno at the failure, EIO when none was set) in code(), the path in what().
class FileWriteError : public std::system_error {
 public:
  FileWriteError(int error, const std::string& what)
      : std::system_error(error != 0 ? error : EIO, std::generic_category(), what) {}
};

// Writes a file in pieces (large artefacts without one buffer for all of it) to
// "<path>.partial" and renames it into place on commit(); destroyed uncommitted (an
// error on the way), it removes the partial file. Errors (FileWriteError) name the path.
// pfhe's binary files end in a checksum trailer (ckks/checksum.h) that commit() appends; files read by
// other programs (text, images) are written without one (Trailer::kNone).
// The bytes reach the kernel in whole chunks of kChunkBytes at chunk-aligned offsets (the
// last chunk excepted): a kernel with large page-cache folios (ext4 on Linux 6.18 here)
// then caches the file in 2 MiB folios, and every later mapping of it (a compiled model,
// a key cache; each fork worker again) maps 2 MiB pages. Written in the serializers'
// pieces, a third of a 5.5 GB key cache stayed in small folios and a forked child's first
// read of its mapping took 0.67-0.74 s instead of 0.17-0.18 s (docs/BENCHMARKS.md).
class FileWriter {
 public:
  enum class Trailer { kChecksum, kNone };
  static constexpr std::size_t kChunkBytes = std::size_t{8} << 20;  // a multiple of 2 MiB
  explicit FileWriter(const std::string& path, Trailer trailer = Trailer::kChecksum);
  ~FileWriter();
  FileWriter(const FileWriter&) = delete;
  FileWriter& operator=(const FileWriter&) = delete;
  void write(std::span<const std::uint8_t> bytes);
  void commit();

 private:
  void write_raw(std::span<const std::uint8_t> bytes);
  void write_all(std::span<const std::uint8_t> bytes);  // to the kernel, all of it
  void flush_chunk();
  std::string path_, partial_;
  int fd_ = -1;
  std::vector<std::uint8_t> chunk_;  // bytes not yet handed to the kernel
  std::unique_ptr<Checksum> checksum_;  // null for Trailer::kNone
  bool committed_ = false;
};

// Whole-file helpers for pfhe's binary files: write_file appends the checksum trailer,
// read_file verifies it and returns the bytes before it. Errors name the path.
void write_file(const std::string& path, std::span<const std::uint8_t> bytes);
Bytes read_file(const std::string& path);
// Files for other programs and people (JSON specs and reports, score lists, images): no
// trailer; their readers validate what they parse.
void write_text_file(const std::string& path, std::string_view text);
std::string read_text_file(const std::string& path);
void write_raw_file(const std::string& path, std::span<const std::uint8_t> bytes);

}  // namespace pfhe::ckks
