#include "ckks/serialization.h"

#include <fcntl.h>
#include <omp.h>
#include <unistd.h>

#include <zstd.h>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstring>
#include <fstream>
#include <limits>
#include <set>

#include "ckks/keygen.h"
#include "ring/parallel.h"

namespace pfhe::ckks {

namespace {

constexpr char kMagic[4] = {'P', 'F', 'H', 'E'};
constexpr std::size_t kHeaderSize = 40;
constexpr std::uint32_t kFlagZstd = 1;
// Upper bound on any decompressed payload (a full rotation-key set of N = 2^17 stays below).
constexpr std::uint64_t kMaxPayload = std::uint64_t{1} << 40;

Bytes object_header(ObjectType type, std::uint64_t fingerprint, std::uint32_t flags, std::uint64_t stored_size,
                    std::uint64_t raw_size) {
  ByteWriter w;
  w.put_bytes(reinterpret_cast<const std::uint8_t*>(kMagic), 4);
  w.put<std::uint16_t>(kFormatVersion);
  w.put<std::uint16_t>(static_cast<std::uint16_t>(type));
  w.put<std::uint32_t>(flags);
  w.put<std::uint32_t>(0);  // reserved
  w.put<std::uint64_t>(fingerprint);
  w.put<std::uint64_t>(stored_size);
  w.put<std::uint64_t>(raw_size);
  return std::move(w.bytes());
}

Bytes finish(ObjectType type, std::uint64_t fingerprint, Bytes payload, const SaveOptions& options) {
  std::uint32_t flags = 0;
  const std::uint64_t raw_size = payload.size();
  if (options.compress) {
    Bytes packed(ZSTD_compressBound(payload.size()));
    const std::size_t n = ZSTD_compress(packed.data(), packed.size(), payload.data(), payload.size(),
                                        options.compression_level);
    if (ZSTD_isError(n)) throw SerializationError(std::string("zstd: ") + ZSTD_getErrorName(n));
    packed.resize(n);
    payload = std::move(packed);
    flags |= kFlagZstd;
  }
  Bytes out = object_header(type, fingerprint, flags, payload.size(), raw_size);
  out.insert(out.end(), payload.begin(), payload.end());
  return out;
}

struct Header {
  ObjectType type;
  std::uint32_t flags;
  std::uint64_t fingerprint, stored_size, raw_size;
};

Header read_header(std::span<const std::uint8_t> bytes) {
  if (bytes.size() < kHeaderSize) throw SerializationError("not a pfhe object: input shorter than the header");
  if (std::memcmp(bytes.data(), kMagic, 4) != 0) throw SerializationError("not a pfhe object: bad magic");
  ByteReader r(bytes.subspan(4, kHeaderSize - 4));
  const auto version = r.get<std::uint16_t>("header");
  if (version != kFormatVersion)
    throw SerializationError("unsupported format version " + std::to_string(version) + " (this build reads " +
                             std::to_string(kFormatVersion) + ")");
  Header h;
  const auto type = r.get<std::uint16_t>("header");
  if (type < 1 || type > 9) throw SerializationError("unknown object type " + std::to_string(type));
  h.type = static_cast<ObjectType>(type);
  h.flags = r.get<std::uint32_t>("header");
  if (h.flags & ~kFlagZstd) throw SerializationError("unknown header flags");
  if (r.get<std::uint32_t>("header") != 0) throw SerializationError("reserved header field is not zero");
  h.fingerprint = r.get<std::uint64_t>("header");
  h.stored_size = r.get<std::uint64_t>("header");
  h.raw_size = r.get<std::uint64_t>("header");
  if (h.stored_size != bytes.size() - kHeaderSize)
    throw SerializationError("payload size mismatch: header says " + std::to_string(h.stored_size) + " bytes, " +
                             std::to_string(bytes.size() - kHeaderSize) + " present (truncated or padded file)");
  if (h.raw_size > kMaxPayload) throw SerializationError("payload size exceeds the format limit");
  if (!(h.flags & kFlagZstd) && h.raw_size != h.stored_size)
    throw SerializationError("uncompressed payload size mismatch");
  return h;
}

// An object's payload: a view into the input when it is stored uncompressed (no copy: the
// Galois keys of a CryptoFace model are 4.8 GB), else the decompressed bytes it owns.
class Payload {
 public:
  explicit Payload(std::span<const std::uint8_t> view) : view_(view) {}
  explicit Payload(Bytes owned) : owned_(std::move(owned)), view_(owned_) {}
  Payload(const Payload&) = delete;
  Payload& operator=(const Payload&) = delete;
  operator std::span<const std::uint8_t>() const { return view_; }
  bool in_place() const { return owned_.empty(); }  // a view into the caller's input

 private:
  Bytes owned_;
  std::span<const std::uint8_t> view_;
};

// Checks type and fingerprint; returns the payload (decompressed if it was compressed).
Payload open_payload(std::span<const std::uint8_t> bytes, ObjectType expected, std::uint64_t fingerprint) {
  const Header h = read_header(bytes);
  if (h.type != expected)
    throw SerializationError("expected a " + to_string(expected) + ", found a " + to_string(h.type));
  if (h.fingerprint != fingerprint)
    throw SerializationError(to_string(expected) + " was made for other parameters (fingerprint mismatch)");
  const auto payload = bytes.subspan(kHeaderSize);
  if (!(h.flags & kFlagZstd)) return Payload(payload);
  const unsigned long long content = ZSTD_getFrameContentSize(payload.data(), payload.size());
  if (content == ZSTD_CONTENTSIZE_ERROR || content == ZSTD_CONTENTSIZE_UNKNOWN || content != h.raw_size)
    throw SerializationError("corrupt compressed payload");
  Bytes raw(h.raw_size);
  const std::size_t n = ZSTD_decompress(raw.data(), raw.size(), payload.data(), payload.size());
  if (ZSTD_isError(n) || n != h.raw_size) throw SerializationError("corrupt compressed payload");
  return Payload(std::move(raw));
}

double get_scale(ByteReader& r, const char* what) {
  const double s = r.get<double>(what);
  if (!std::isfinite(s) || !(s > 0)) throw SerializationError(std::string(what) + ": invalid scale");
  return s;
}

int get_log_slots(ByteReader& r, const Context& ctx, const char* what) {
  const auto v = r.get<std::uint32_t>(what);
  if (v >= static_cast<std::uint32_t>(ctx.params().log_n()))
    throw SerializationError(std::string(what) + ": slot count exceeds N/2");
  return static_cast<int>(v);
}

std::size_t get_limbs_for_level(ByteReader& r, const Context& ctx, const char* what) {
  const auto level = r.get<std::uint32_t>(what);
  if (level > ctx.max_level())
    throw SerializationError(std::string(what) + ": level " + std::to_string(level) + " above the top level " +
                             std::to_string(ctx.max_level()));
  return level + 1;
}

QPPoly get_qp(ByteReader& r, const Context& ctx, std::size_t q_limbs, const char* what) {
  ring::Poly q = r.get_poly(ctx.ring_q(), q_limbs, what);
  ring::Poly p = r.get_poly(ctx.ring_p(), ctx.ring_p().size(), what);
  return QPPoly{std::move(q), std::move(p)};
}

void put_switching_key(ByteWriter& w, const SwitchingKey& key) {
  w.put<std::uint32_t>(static_cast<std::uint32_t>(key.max_level()));
  w.put<std::uint32_t>(static_cast<std::uint32_t>(key.b.size()));
  w.put_bytes(key.a_seed.data(), key.a_seed.size());
  for (const auto& b : key.b) w.put_qp(b);
}

// The stored part of a switching key (b and the seed of a); expand_a completes it.
SwitchingKey get_switching_key_b(ByteReader& r, const Context& ctx, const char* what) {
  const std::size_t limbs = get_limbs_for_level(r, ctx, what);
  const auto digits = r.get<std::uint32_t>(what);
  if (digits != ctx.params().digits_at(limbs - 1))
    throw SerializationError(std::string(what) + ": wrong number of key-switching digits");
  SwitchingKey key;
  r.get_bytes(key.a_seed.data(), key.a_seed.size(), what);
  for (std::uint32_t j = 0; j < digits; ++j) key.b.push_back(get_qp(r, ctx, limbs, what));
  return key;
}

void expand_a(const Context& ctx, SwitchingKey& key) { expand_switching_key_a(ctx, key.a_seed, key.max_level(), key.a); }

SwitchingKey get_switching_key(ByteReader& r, const Context& ctx, const char* what) {
  SwitchingKey key = get_switching_key_b(r, ctx, what);
  expand_a(ctx, key);
  return key;
}

}  // namespace

std::string to_string(ObjectType type) {
  switch (type) {
    case ObjectType::kParameters: return "parameter set";
    case ObjectType::kPlaintext: return "plaintext";
    case ObjectType::kCiphertext: return "ciphertext";
    case ObjectType::kSeededCiphertext: return "seeded ciphertext";
    case ObjectType::kSecretKey: return "secret key";
    case ObjectType::kPublicKey: return "public key";
    case ObjectType::kRelinKey: return "relinearization key";
    case ObjectType::kGaloisKeys: return "Galois key set";
    case ObjectType::kSwitchingKey: return "switching key";
  }
  return "unknown object";
}

ObjectType peek_type(std::span<const std::uint8_t> bytes) { return read_header(bytes).type; }

Bytes save_parameters(const Parameters& params, SaveOptions options) {
  ByteWriter w;
  w.put<std::uint32_t>(static_cast<std::uint32_t>(params.log_n()));
  w.put<std::uint32_t>(static_cast<std::uint32_t>(params.q().size()));
  w.put<std::uint32_t>(static_cast<std::uint32_t>(params.p().size()));
  for (auto q : params.q()) w.put<std::uint64_t>(q);
  for (auto p : params.p()) w.put<std::uint64_t>(p);
  w.put<std::uint32_t>(static_cast<std::uint32_t>(params.dnum()));
  w.put<std::uint8_t>(static_cast<std::uint8_t>(params.secret()));
  w.put<std::uint32_t>(static_cast<std::uint32_t>(params.hamming_weight()));
  w.put<double>(params.default_scale());
  w.put<std::uint8_t>(params.insecure() ? 1 : 0);
  for (std::size_t count : params.digit_primes()) w.put<std::uint32_t>(static_cast<std::uint32_t>(count));
  return finish(ObjectType::kParameters, params.fingerprint(), std::move(w.bytes()), options);
}

Parameters load_parameters(std::span<const std::uint8_t> bytes) {
  const Header h = read_header(bytes);
  const Payload payload = open_payload(bytes, ObjectType::kParameters, h.fingerprint);
  ByteReader r(payload);
  const char* what = "parameter set";
  const auto log_n = r.get<std::uint32_t>(what);
  const auto nq = r.get<std::uint32_t>(what), np = r.get<std::uint32_t>(what);
  if (log_n < 4 || log_n > 17 || nq == 0 || nq > 256 || np == 0 || np > 64)
    throw SerializationError("parameter set: sizes out of range");
  std::vector<std::uint64_t> q(nq), p(np);
  for (auto& v : q) v = r.get<std::uint64_t>(what);
  for (auto& v : p) v = r.get<std::uint64_t>(what);
  const auto dnum = r.get<std::uint32_t>(what);
  const auto secret = r.get<std::uint8_t>(what);
  const auto hamming = r.get<std::uint32_t>(what);
  const double scale = r.get<double>(what);
  const auto insecure = r.get<std::uint8_t>(what);
  if (dnum == 0 || dnum > nq) throw SerializationError("parameter set: invalid field");
  // The primes of each digit; sets written before they were stored have equal runs, which
  // is what dnum alone gives.
  std::vector<std::size_t> primes_per_digit;
  if (!r.at_end())
    for (std::uint32_t j = 0; j < dnum; ++j) primes_per_digit.push_back(r.get<std::uint32_t>(what));
  r.expect_end(what);
  if (secret > 1 || insecure > 1 || hamming > (1u << log_n))
    throw SerializationError("parameter set: invalid field");
  try {
    Parameters params = Parameters::from_primes(static_cast<int>(log_n), q, p, static_cast<int>(dnum),
                                                static_cast<SecretDistribution>(secret), static_cast<int>(hamming),
                                                scale, insecure == 1, 10, primes_per_digit);
    if (params.fingerprint() != h.fingerprint)
      throw SerializationError("parameter set: fingerprint does not match its contents");
    return params;
  } catch (const std::invalid_argument& e) {
    throw SerializationError(std::string("parameter set rejected: ") + e.what());
  }
}

Bytes save(const Context& ctx, const Plaintext& pt, SaveOptions options) {
  ByteWriter w;
  w.put<std::uint32_t>(static_cast<std::uint32_t>(pt.level()));
  w.put<double>(pt.scale);
  w.put<std::uint32_t>(static_cast<std::uint32_t>(pt.log_slots));
  w.put_poly(pt.poly);
  return finish(ObjectType::kPlaintext, ctx.params().fingerprint(), std::move(w.bytes()), options);
}

Plaintext load_plaintext(const Context& ctx, std::span<const std::uint8_t> bytes) {
  const Payload payload = open_payload(bytes, ObjectType::kPlaintext, ctx.params().fingerprint());
  ByteReader r(payload);
  const char* what = "plaintext";
  const std::size_t limbs = get_limbs_for_level(r, ctx, what);
  Plaintext pt;
  pt.scale = get_scale(r, what);
  pt.log_slots = get_log_slots(r, ctx, what);
  pt.poly = r.get_poly(ctx.ring_q(), limbs, what);
  r.expect_end(what);
  return pt;
}

void put_plaintext_in_place(ByteWriter& w, const Plaintext& pt) {
  w.put<std::uint32_t>(static_cast<std::uint32_t>(pt.level()));
  w.put<std::uint32_t>(static_cast<std::uint32_t>(pt.log_slots));
  w.put<double>(pt.scale);
  w.align(sizeof(std::uint64_t));  // so that a mapped file can be read in place
  w.put_bytes(reinterpret_cast<const std::uint8_t*>(pt.poly.words().data()), pt.poly.byte_size());
}

Plaintext get_plaintext_in_place(const Context& ctx, ByteReader& r, const std::shared_ptr<const Backing>& backing,
                                 const char* what) {
  const std::size_t limbs = get_limbs_for_level(r, ctx, what);
  Plaintext pt;
  pt.log_slots = get_log_slots(r, ctx, what);
  pt.scale = get_scale(r, what);
  r.align(sizeof(std::uint64_t), what);
  const std::span<const std::uint8_t> bytes = r.get_view(ctx.n() * limbs * sizeof(std::uint64_t), what);
  if (backing && reinterpret_cast<std::uintptr_t>(bytes.data()) % alignof(std::uint64_t) == 0) {
    pt.poly = ring::Poly::borrowed(reinterpret_cast<const std::uint64_t*>(bytes.data()), ctx.n(), limbs);
  } else {
    pt.poly = ring::Poly::uninitialized(ctx.n(), limbs);
    std::memcpy(pt.poly.words().data(), bytes.data(), bytes.size());
  }
  ring::parallel_for(limbs, [&](std::size_t l) {
    if (!ring::limb_is_reduced(pt.poly.limb(l), ctx.n(), ctx.ring_q().modulus(l).value()))
      throw SerializationError(std::string(what) + ": a coefficient is not reduced modulo its prime");
  });
  return pt;
}

Bytes save(const Context& ctx, const Ciphertext& ct, SaveOptions options) {
  ByteWriter w;
  w.put<std::uint32_t>(static_cast<std::uint32_t>(ct.level()));
  w.put<double>(ct.scale);
  w.put<std::uint32_t>(static_cast<std::uint32_t>(ct.log_slots));
  w.put<std::uint32_t>(static_cast<std::uint32_t>(ct.size()));
  for (const auto& p : ct.polys) w.put_poly(p);
  return finish(ObjectType::kCiphertext, ctx.params().fingerprint(), std::move(w.bytes()), options);
}

Ciphertext load_ciphertext(const Context& ctx, std::span<const std::uint8_t> bytes) {
  const Payload payload = open_payload(bytes, ObjectType::kCiphertext, ctx.params().fingerprint());
  ByteReader r(payload);
  const char* what = "ciphertext";
  const std::size_t limbs = get_limbs_for_level(r, ctx, what);
  Ciphertext ct;
  ct.scale = get_scale(r, what);
  ct.log_slots = get_log_slots(r, ctx, what);
  const auto size = r.get<std::uint32_t>(what);
  if (size < 2 || size > 3) throw SerializationError("ciphertext: must have 2 or 3 polynomials");
  for (std::uint32_t k = 0; k < size; ++k) ct.polys.push_back(r.get_poly(ctx.ring_q(), limbs, what));
  r.expect_end(what);
  return ct;
}

Bytes save(const Context& ctx, const SeededCiphertext& ct, SaveOptions options) {
  ByteWriter w;
  w.put<std::uint32_t>(static_cast<std::uint32_t>(ct.level()));
  w.put<double>(ct.scale);
  w.put<std::uint32_t>(static_cast<std::uint32_t>(ct.log_slots));
  w.put_bytes(ct.seed.data(), ct.seed.size());
  w.put_poly(ct.c0);
  return finish(ObjectType::kSeededCiphertext, ctx.params().fingerprint(), std::move(w.bytes()), options);
}

SeededCiphertext load_seeded_ciphertext(const Context& ctx, std::span<const std::uint8_t> bytes) {
  const Payload payload = open_payload(bytes, ObjectType::kSeededCiphertext, ctx.params().fingerprint());
  ByteReader r(payload);
  const char* what = "seeded ciphertext";
  const std::size_t limbs = get_limbs_for_level(r, ctx, what);
  SeededCiphertext ct;
  ct.scale = get_scale(r, what);
  ct.log_slots = get_log_slots(r, ctx, what);
  r.get_bytes(ct.seed.data(), ct.seed.size(), what);
  ct.c0 = r.get_poly(ctx.ring_q(), limbs, what);
  r.expect_end(what);
  return ct;
}

Bytes save(const Context& ctx, const SecretKey& sk, SaveOptions options) {
  ByteWriter w;
  w.put_qp(sk.s);
  return finish(ObjectType::kSecretKey, ctx.params().fingerprint(), std::move(w.bytes()), options);
}

SecretKey load_secret_key(const Context& ctx, std::span<const std::uint8_t> bytes) {
  const Payload payload = open_payload(bytes, ObjectType::kSecretKey, ctx.params().fingerprint());
  ByteReader r(payload);
  SecretKey sk{get_qp(r, ctx, ctx.max_level() + 1, "secret key")};
  r.expect_end("secret key");
  return sk;
}

Bytes save(const Context& ctx, const PublicKey& pk, SaveOptions options) {
  ByteWriter w;
  w.put_qp(pk.b);
  w.put_qp(pk.a);
  return finish(ObjectType::kPublicKey, ctx.params().fingerprint(), std::move(w.bytes()), options);
}

PublicKey load_public_key(const Context& ctx, std::span<const std::uint8_t> bytes) {
  const Payload payload = open_payload(bytes, ObjectType::kPublicKey, ctx.params().fingerprint());
  ByteReader r(payload);
  PublicKey pk;
  pk.b = get_qp(r, ctx, ctx.max_level() + 1, "public key");
  pk.a = get_qp(r, ctx, ctx.max_level() + 1, "public key");
  r.expect_end("public key");
  return pk;
}

Bytes save(const Context& ctx, const RelinKey& rk, SaveOptions options) {
  ByteWriter w;
  put_switching_key(w, rk.key);
  return finish(ObjectType::kRelinKey, ctx.params().fingerprint(), std::move(w.bytes()), options);
}

RelinKey load_relin_key(const Context& ctx, std::span<const std::uint8_t> bytes) {
  const Payload payload = open_payload(bytes, ObjectType::kRelinKey, ctx.params().fingerprint());
  ByteReader r(payload);
  RelinKey rk{get_switching_key(r, ctx, "relinearization key")};
  r.expect_end("relinearization key");
  return rk;
}

Bytes save_switching_key(const Context& switch_ctx, const SwitchingKey& key, SaveOptions options) {
  if (key.max_level() != switch_ctx.max_level()) throw std::invalid_argument("switching key: not at the context's top level");
  ByteWriter w;
  put_switching_key(w, key);
  return finish(ObjectType::kSwitchingKey, switch_ctx.params().fingerprint(), std::move(w.bytes()), options);
}

SwitchingKey load_switching_key(const Context& switch_ctx, std::span<const std::uint8_t> bytes) {
  const char* what = "switching key";
  const Payload payload = open_payload(bytes, ObjectType::kSwitchingKey, switch_ctx.params().fingerprint());
  ByteReader r(payload);
  SwitchingKey key = get_switching_key(r, switch_ctx, what);
  r.expect_end(what);
  if (key.max_level() != switch_ctx.max_level()) throw SerializationError("switching key: not at the top level");
  return key;
}

Bytes save(const Context& ctx, const GaloisKeys& gk, SaveOptions options) {
  ByteWriter w;
  w.put<std::uint32_t>(static_cast<std::uint32_t>(gk.keys.size()));
  for (const auto& [g, key] : gk.keys) {
    w.put<std::uint64_t>(g);
    put_switching_key(w, key);
  }
  return finish(ObjectType::kGaloisKeys, ctx.params().fingerprint(), std::move(w.bytes()), options);
}

namespace {
// What put_switching_key writes for a key at `level`.
std::size_t stored_switching_key_size(const Context& ctx, std::size_t level) {
  const std::size_t poly_q = 4 + (level + 1) * ctx.n() * 8, poly_p = 4 + ctx.ring_p().size() * ctx.n() * 8;
  return 4 + 4 + ring::Seed{}.size() + ctx.params().digits_at(level) * (poly_q + poly_p);
}
}  // namespace

std::size_t StreamedGaloisKeys::stored_size() const {
  std::size_t payload = 4;
  for (const auto& [g, level] : element_levels) payload += 8 + stored_switching_key_size(ctx, level);
  return kHeaderSize + payload;
}

void StreamedGaloisKeys::write(const std::function<SwitchingKey(std::uint64_t element, std::size_t level)>& make,
                               const std::function<void(std::span<const std::uint8_t>)>& sink) const {
  const std::uint64_t payload = stored_size() - kHeaderSize;
  sink(object_header(ObjectType::kGaloisKeys, ctx.params().fingerprint(), 0, payload, payload));
  ByteWriter count;
  count.put<std::uint32_t>(static_cast<std::uint32_t>(element_levels.size()));
  sink(count.bytes());
  std::size_t written = count.bytes().size();
  const std::vector<std::pair<std::uint64_t, std::size_t>> todo(element_levels.begin(), element_levels.end());
  // A batch of keys per round, one per thread: the memory of a few keys, the speed of all cores.
  const std::size_t batch = 2 * static_cast<std::size_t>(std::max(1, omp_get_max_threads()));
  for (std::size_t first = 0; first < todo.size(); first += batch) {
    const std::size_t count_now = std::min(batch, todo.size() - first);
    std::vector<SwitchingKey> keys(count_now);
    ring::parallel_for(count_now, [&](std::size_t i) { keys[i] = make(todo[first + i].first, todo[first + i].second); });
    for (std::size_t i = 0; i < count_now; ++i) {
      ByteWriter w;
      w.reserve(8 + stored_switching_key_size(ctx, todo[first + i].second));
      w.put<std::uint64_t>(todo[first + i].first);
      put_switching_key(w, keys[i]);
      written += w.bytes().size();
      sink(w.bytes());
    }
  }
  if (written != payload) throw std::logic_error("streamed Galois keys: size differs from the computed size");
}

void for_each_galois_key(const Context& ctx, std::span<const std::uint8_t> bytes, const Backing* backing,
                         std::size_t batch, const std::function<void(std::uint64_t, SwitchingKey&&)>& sink) {
  if (batch == 0) throw std::invalid_argument("for_each_galois_key: batch must be at least 1");
  const Payload payload = open_payload(bytes, ObjectType::kGaloisKeys, ctx.params().fingerprint());
  ByteReader r(payload);
  const char* what = "Galois key set";
  const auto count = r.get<std::uint32_t>(what);
  // First the framing, serially: each key's element and where its stored bytes lie (their
  // size follows from the key's level). Then the keys are decoded in parallel: copying,
  // checking and expanding them was one thread's work for 4 of the 5 s CryptoFaceNet4's
  // keys took to load, most of it faulting in (zeroing) the pages of the copies.
  struct Stored {
    std::uint64_t element;
    std::span<const std::uint8_t> framed;  // the element (u64), then the key
  };
  std::vector<Stored> stored;
  std::set<std::uint64_t> seen;
  for (std::uint32_t k = 0; k < count; ++k) {
    const std::uint8_t* framed = r.position();
    const auto g = r.get<std::uint64_t>(what);
    if ((g & 1) == 0 || g >= 2 * ctx.n() || g == 1 || !seen.insert(g).second)
      throw SerializationError("Galois key set: invalid or repeated Galois element " + std::to_string(g));
    const std::size_t level = get_limbs_for_level(r, ctx, what) - 1;
    r.get_view(stored_switching_key_size(ctx, level) - sizeof(std::uint32_t), what);  // the level is read
    stored.push_back({g, {framed, r.position()}});
  }
  r.expect_end(what);
  const bool release = backing && payload.in_place();
  std::vector<SwitchingKey> keys;
  for (std::size_t first = 0; first < stored.size(); first += batch) {
    keys.assign(std::min(batch, stored.size() - first), SwitchingKey{});
    ring::parallel_for(keys.size(), [&](std::size_t i) {
      const Stored& s = stored[first + i];
      ByteReader key_reader(s.framed.subspan(sizeof(std::uint64_t)));
      keys[i] = get_switching_key_b(key_reader, ctx, what);
      key_reader.expect_end(what);
      // Decoded: the stored pages are released, so loading peaks near the expanded keys
      // alone, not the expanded keys plus the file (4.8 GB for CryptoFaceNet4).
      if (release) backing->release(s.framed);
      expand_a(ctx, keys[i]);
    });
    for (std::size_t i = 0; i < keys.size(); ++i) sink(stored[first + i].element, std::move(keys[i]));
  }
}

GaloisKeys load_galois_keys(const Context& ctx, std::span<const std::uint8_t> bytes, const Backing* backing) {
  GaloisKeys gk;
  for_each_galois_key(ctx, bytes, backing, std::numeric_limits<std::size_t>::max(),
                      [&](std::uint64_t g, SwitchingKey&& key) { gk.keys.emplace(g, std::move(key)); });
  return gk;
}

FileWriter::FileWriter(const std::string& path, Trailer trailer) : path_(path), partial_(path + ".partial") {
  fd_ = ::open(partial_.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd_ < 0) throw FileWriteError(errno, "cannot open " + partial_ + " for writing");
  chunk_.reserve(kChunkBytes);
  if (trailer == Trailer::kChecksum) checksum_ = std::make_unique<Checksum>();
}

FileWriter::~FileWriter() {
  if (fd_ >= 0) ::close(fd_);
  if (!committed_) std::remove(partial_.c_str());  // an abandoned write leaves nothing behind
}

void FileWriter::write_all(std::span<const std::uint8_t> bytes) {
  std::size_t done = 0;
  while (done < bytes.size()) {
    const ssize_t n = ::write(fd_, bytes.data() + done, bytes.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) throw FileWriteError(n < 0 ? errno : EIO, "write to " + partial_ + " failed");
    done += static_cast<std::size_t>(n);
  }
}

void FileWriter::flush_chunk() {
  write_all(chunk_);
  chunk_.clear();
}

void FileWriter::write_raw(std::span<const std::uint8_t> bytes) {
  while (!bytes.empty()) {
    if (chunk_.empty() && bytes.size() >= kChunkBytes) {
      // Whole chunks at a chunk-aligned offset (an empty buffer means every byte before
      // went out in whole chunks): straight from the caller's bytes, without a copy.
      const std::size_t whole = bytes.size() / kChunkBytes * kChunkBytes;
      write_all(bytes.first(whole));
      bytes = bytes.subspan(whole);
      continue;
    }
    const std::size_t take = std::min(bytes.size(), kChunkBytes - chunk_.size());
    chunk_.insert(chunk_.end(), bytes.begin(), bytes.begin() + static_cast<std::ptrdiff_t>(take));
    bytes = bytes.subspan(take);
    if (chunk_.size() == kChunkBytes) flush_chunk();
  }
}

void FileWriter::write(std::span<const std::uint8_t> bytes) {
  if (checksum_) checksum_->update(bytes);
  write_raw(bytes);
}

void FileWriter::commit() {
  if (checksum_) write_raw(make_trailer(checksum_->digest()));
  flush_chunk();
  const int fd = fd_;
  fd_ = -1;
  if (::close(fd) != 0) throw FileWriteError(errno, "write to " + partial_ + " failed");
  // Rename last so that a reader never sees a half-written file.
  if (std::rename(partial_.c_str(), path_.c_str()) != 0)
    throw FileWriteError(errno, "cannot rename " + partial_ + " to " + path_);
  committed_ = true;
}

namespace {

void write_whole_file(const std::string& path, std::span<const std::uint8_t> bytes, FileWriter::Trailer trailer) {
  FileWriter f(path, trailer);
  f.write(bytes);
  f.commit();
}

Bytes read_whole_file(const std::string& path) {
  std::ifstream f(path, std::ios::binary | std::ios::ate);
  if (!f) throw SerializationError("cannot open " + path);
  const auto size = f.tellg();
  if (size < 0) throw SerializationError("cannot read " + path);
  Bytes out(static_cast<std::size_t>(size));
  f.seekg(0);
  f.read(reinterpret_cast<char*>(out.data()), size);
  if (!f) throw SerializationError("read of " + path + " failed");
  return out;
}

}  // namespace

void write_file(const std::string& path, std::span<const std::uint8_t> bytes) {
  write_whole_file(path, bytes, FileWriter::Trailer::kChecksum);
}

Bytes read_file(const std::string& path) {
  Bytes bytes = read_whole_file(path);
  bytes.resize(verify_trailer(bytes, path).size());
  return bytes;
}

void write_raw_file(const std::string& path, std::span<const std::uint8_t> bytes) {
  write_whole_file(path, bytes, FileWriter::Trailer::kNone);
}

void write_text_file(const std::string& path, std::string_view text) {
  write_raw_file(path, {reinterpret_cast<const std::uint8_t*>(text.data()), text.size()});
}

std::string read_text_file(const std::string& path) {
  const Bytes bytes = read_whole_file(path);
  return {bytes.begin(), bytes.end()};
}

}  // namespace pfhe::ckks
