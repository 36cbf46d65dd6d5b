#include "runtime/key_cache.h"

#include <omp.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <set>
#include <vector>

#include "ckks/byte_stream.h"
#include "ckks/checksum.h"
#include "ckks/ring_switch.h"
#include "ckks/serialization.h"
#include "ring/parallel.h"
#include "runtime/bundle.h"
#include "runtime/mapped_file.h"

namespace pfhe::runtime {

namespace {

constexpr std::array<char, 4> kMagic{'P', 'F', 'H', 'X'};
constexpr std::array<char, 8> kFooterMagic{'P', 'F', 'H', 'X', '-', 'I', 'D', 'X'};
// 2: a fourth parameter fingerprint (encapsulation) and the two encapsulation keys.
constexpr std::uint32_t kVersion = 2;
constexpr std::size_t kAlign = 4096;  // the header's size and every section's alignment
constexpr std::size_t kEntrySize = 72, kFooterSize = 32;
constexpr std::size_t kMaxEntries = std::size_t{1} << 20;

// Which parameter set a key belongs to, and what it is.
enum class KeyRing : std::uint8_t { kBig = 0, kHalf = 1, kSwitch = 2, kEncapsulation = 3 };
// kToSparse lives in the encapsulation ring, kToDense in the big one (ckks/bootstrapping.h).
enum class KeyKind : std::uint8_t { kRelin = 0, kGalois = 1, kRingSwitch = 2, kToSparse = 3, kToDense = 4 };

struct Entry {
  KeyRing ring = KeyRing::kBig;
  KeyKind kind = KeyKind::kRelin;
  std::uint32_t level = 0;
  std::uint64_t element = 0;  // Galois keys only
  std::uint64_t offset = 0, size = 0, digest = 0;
  ring::Seed seed{};
};

std::string describe(const Entry& e) {
  const char* ring = e.ring == KeyRing::kHalf ? " of the half ring" : "";
  switch (e.kind) {
    case KeyKind::kRelin: return std::string("relinearization key") + ring;
    case KeyKind::kGalois: return "Galois key " + std::to_string(e.element) + ring;
    case KeyKind::kRingSwitch: return "ring-switch key";
    case KeyKind::kToSparse: return "encapsulation key to the sparse secret";
    case KeyKind::kToDense: return "encapsulation key back to the main secret";
  }
  return "key";
}

// The parameter sets of a key set: the big ring's, with a ring switch the half ring's and
// the one its switching key lives in (ckks/ring_switch.h), with encapsulation its context.
struct Contexts {
  const ckks::Context* big = nullptr;
  const ckks::Context* half = nullptr;
  const ckks::Context* switching = nullptr;
  const ckks::Context* encapsulation = nullptr;
  Contexts(const ckks::Context& ctx, const nn::HalfRing* half_ring, const ckks::Context* encapsulation_ctx)
      : big(&ctx),
        half(half_ring ? &half_ring->context : nullptr),
        switching(half_ring ? &half_ring->switch_context : nullptr),
        encapsulation(encapsulation_ctx) {}
  const ckks::Context* of(KeyRing r) const {
    switch (r) {
      case KeyRing::kBig: return big;
      case KeyRing::kHalf: return half;
      case KeyRing::kSwitch: return switching;
      case KeyRing::kEncapsulation: return encapsulation;
    }
    return nullptr;
  }
  std::uint64_t fingerprint(const ckks::Context* c) const { return c ? c->params().fingerprint() : 0; }
};

std::size_t padded(std::size_t bytes) { return (bytes + kAlign - 1) / kAlign * kAlign; }

// The primes of a section's limbs, in stored order: per digit b's Q and P limbs, then a's.
std::vector<std::uint64_t> section_primes(const ckks::Context& ctx, std::size_t level) {
  std::vector<std::uint64_t> digit;
  for (std::size_t i = 0; i <= level; ++i) digit.push_back(ctx.ring_q().modulus(i).value());
  for (std::size_t i = 0; i < ctx.ring_p().size(); ++i) digit.push_back(ctx.ring_p().modulus(i).value());
  std::vector<std::uint64_t> all;
  for (std::size_t j = 0; j < ctx.params().digits_at(level); ++j)
    for (int half = 0; half < 2; ++half) all.insert(all.end(), digit.begin(), digit.end());
  return all;
}

// Per digit, b and a over q_0..q_level and the special primes, then padding.
std::size_t section_bytes(const ckks::Context& ctx, std::size_t level) {
  const std::size_t limbs = ctx.params().digits_at(level) * 2 * (level + 1 + ctx.ring_p().size());
  return padded(limbs * ctx.n() * sizeof(std::uint64_t));
}

std::array<std::uint8_t, kAlign> header_bytes(std::uint64_t tag, const Contexts& c) {
  ckks::ByteWriter w;
  w.put_bytes(reinterpret_cast<const std::uint8_t*>(kMagic.data()), kMagic.size());
  w.put<std::uint32_t>(kVersion);
  w.put<std::uint64_t>(tag);
  w.put<std::uint64_t>(c.fingerprint(c.big));
  w.put<std::uint64_t>(c.fingerprint(c.half));
  w.put<std::uint64_t>(c.fingerprint(c.switching));
  w.put<std::uint64_t>(c.fingerprint(c.encapsulation));
  std::array<std::uint8_t, kAlign> header{};
  std::copy(w.bytes().begin(), w.bytes().end(), header.begin());
  return header;
}

ckks::Bytes index_bytes(const std::vector<Entry>& entries) {
  ckks::ByteWriter w;
  for (const Entry& e : entries) {
    w.put<std::uint8_t>(static_cast<std::uint8_t>(e.ring));
    w.put<std::uint8_t>(static_cast<std::uint8_t>(e.kind));
    w.put<std::uint16_t>(0);
    w.put<std::uint32_t>(e.level);
    w.put<std::uint64_t>(e.element);
    w.put<std::uint64_t>(e.offset);
    w.put<std::uint64_t>(e.size);
    w.put<std::uint64_t>(e.digest);
    w.put_bytes(e.seed.data(), e.seed.size());
  }
  return w.bytes();
}

// The footer's digest: over the header page, the index and the footer's count and offset.
std::uint64_t index_digest(std::span<const std::uint8_t> header, std::span<const std::uint8_t> index,
                           std::span<const std::uint8_t> footer_fields) {
  ckks::Checksum sum;
  sum.update(header);
  sum.update(index);
  sum.update(footer_fields);
  return sum.digest();
}

class CacheWriter {
 public:
  CacheWriter(const std::string& path, std::uint64_t tag, const Contexts& contexts)
      : file_(path, ckks::FileWriter::Trailer::kNone), contexts_(contexts), header_(header_bytes(tag, contexts)) {
    file_.write(header_);
  }

  void add(KeyRing ring, KeyKind kind, std::uint64_t element, const ckks::SwitchingKey& key) {
    const ckks::Context& ctx = *contexts_.of(ring);
    Entry e{ring, kind, static_cast<std::uint32_t>(key.max_level()), element, offset_, 0, 0, key.a_seed};
    if (key.b.size() != ctx.params().digits_at(e.level) || key.a.size() != key.b.size())
      throw std::logic_error("key cache: a switching key without its digits");
    ckks::Checksum sum;
    std::size_t written = 0;
    const auto put = [&](std::span<const std::uint8_t> bytes) {
      file_.write(bytes);
      sum.update(bytes);
      written += bytes.size();
    };
    const auto put_poly = [&](const ring::Poly& p) {
      put({reinterpret_cast<const std::uint8_t*>(p.words().data()), p.byte_size()});
    };
    for (std::size_t j = 0; j < key.b.size(); ++j)
      for (const ckks::QPPoly* qp : {&key.b[j], &key.a[j]}) {
        put_poly(qp->q);
        put_poly(qp->p);
      }
    e.size = padded(written);
    if (e.size != section_bytes(ctx, e.level)) throw std::logic_error("key cache: a key of unexpected shape");
    const std::vector<std::uint8_t> zeros(e.size - written, 0);
    put(zeros);
    e.digest = sum.digest();
    offset_ += e.size;
    entries_.push_back(e);
  }

  void commit() {
    const ckks::Bytes index = index_bytes(entries_);
    ckks::ByteWriter footer;
    footer.put<std::uint64_t>(entries_.size());
    footer.put<std::uint64_t>(offset_);
    footer.put<std::uint64_t>(index_digest(header_, index, footer.bytes()));
    footer.put_bytes(reinterpret_cast<const std::uint8_t*>(kFooterMagic.data()), kFooterMagic.size());
    file_.write(index);
    file_.write(footer.bytes());
    file_.commit();
  }

 private:
  ckks::FileWriter file_;
  Contexts contexts_;
  std::array<std::uint8_t, kAlign> header_;
  std::uint64_t offset_ = kAlign;
  std::vector<Entry> entries_;
};

// --- reading ---

void read_exactly(int fd, std::uint8_t* out, std::size_t bytes, std::uint64_t at) {
  while (bytes > 0) {
    const ssize_t n = ::pread(fd, out, bytes, static_cast<off_t>(at));
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) throw ckks::SerializationError(n < 0 ? std::string("read failed: ") + std::strerror(errno) : "truncated");
    out += n;
    at += static_cast<std::uint64_t>(n);
    bytes -= static_cast<std::size_t>(n);
  }
}

struct Index {
  std::uint64_t tag = 0;
  std::vector<Entry> entries;
};

void check_header(std::span<const std::uint8_t> header, const Contexts& c, Index& index) {
  ckks::ByteReader r(header);
  const char* what = "key cache header";
  std::array<char, 4> magic{};
  r.get_bytes(reinterpret_cast<std::uint8_t*>(magic.data()), magic.size(), what);
  if (magic != kMagic) throw ckks::SerializationError("not a pfhe key cache");
  const auto version = r.get<std::uint32_t>(what);
  if (version != kVersion)
    throw ckks::SerializationError("key cache version " + std::to_string(version) + ", this pfhe reads version " +
                                   std::to_string(kVersion) + ": register the keys again");
  index.tag = r.get<std::uint64_t>(what);
  const auto big = r.get<std::uint64_t>(what), half = r.get<std::uint64_t>(what), switching = r.get<std::uint64_t>(what);
  if (big != c.fingerprint(c.big)) throw ckks::SerializationError("key cache made for other parameters");
  if (half != c.fingerprint(c.half) || switching != c.fingerprint(c.switching))
    throw ckks::SerializationError(c.half ? "key cache without the half ring's keys the model needs, or for another ring switch"
                                          : "key cache with half-ring keys the model does not use");
  if (r.get<std::uint64_t>(what) != c.fingerprint(c.encapsulation))
    throw ckks::SerializationError(c.encapsulation ? "key cache without the bootstrapping (encapsulation) keys the model needs"
                                                   : std::string("key cache with bootstrapping keys the model does not use (") +
                                                         kServeBootstrappedFromArtefact + ")");
}

Entry get_entry(ckks::ByteReader& r) {
  const char* what = "key cache index";
  Entry e;
  const auto ring = r.get<std::uint8_t>(what), kind = r.get<std::uint8_t>(what);
  if (ring > 3 || kind > 4 || r.get<std::uint16_t>(what) != 0) throw ckks::SerializationError("key cache index: unknown key kind");
  e.ring = static_cast<KeyRing>(ring);
  e.kind = static_cast<KeyKind>(kind);
  e.level = r.get<std::uint32_t>(what);
  e.element = r.get<std::uint64_t>(what);
  e.offset = r.get<std::uint64_t>(what);
  e.size = r.get<std::uint64_t>(what);
  e.digest = r.get<std::uint64_t>(what);
  r.get_bytes(e.seed.data(), e.seed.size(), what);
  return e;
}

// An entry fits its parameter set, follows the one before it, and the set of entries is
// one key set: a relinearization key per ring, unique valid Galois elements, a ring-switch
// key exactly with a half ring, the two encapsulation keys exactly with encapsulation.
void check_entries(const std::vector<Entry>& entries, const Contexts& c, std::uint64_t index_offset) {
  std::uint64_t next = kAlign;
  std::set<std::pair<KeyRing, std::uint64_t>> galois;
  std::size_t relin[2] = {0, 0}, switching = 0, to_sparse = 0, to_dense = 0;
  for (const Entry& e : entries) {
    const ckks::Context* ctx = c.of(e.ring);
    const bool fits_ring = ctx && (e.kind == KeyKind::kRingSwitch) == (e.ring == KeyRing::kSwitch) &&
                           (e.kind == KeyKind::kToSparse) == (e.ring == KeyRing::kEncapsulation) &&
                           (e.kind != KeyKind::kToDense || e.ring == KeyRing::kBig);
    if (!fits_ring) throw ckks::SerializationError("key cache index: a key of a ring this model does not have");
    const std::string name = describe(e);
    const bool top_only = e.kind == KeyKind::kRingSwitch || e.kind == KeyKind::kToSparse || e.kind == KeyKind::kToDense;
    if (e.level > ctx->max_level() || (top_only && e.level != ctx->max_level()))
      throw ckks::SerializationError("key cache: " + name + " at an invalid level");
    if (e.offset != next || e.size != section_bytes(*ctx, e.level))
      throw ckks::SerializationError("key cache: " + name + " is not where or what size the index says");
    next += e.size;
    if (e.kind == KeyKind::kGalois) {
      if ((e.element & 1) == 0 || e.element == 1 || e.element >= 2 * ctx->n() || !galois.insert({e.ring, e.element}).second)
        throw ckks::SerializationError("key cache: invalid or repeated Galois element " + std::to_string(e.element));
    } else if (e.element != 0) {
      throw ckks::SerializationError("key cache: " + name + " with a Galois element");
    }
    if (e.kind == KeyKind::kRelin) ++relin[static_cast<int>(e.ring)];
    if (e.kind == KeyKind::kRingSwitch) ++switching;
    to_sparse += e.kind == KeyKind::kToSparse;
    to_dense += e.kind == KeyKind::kToDense;
  }
  if (relin[0] != 1 || relin[1] != (c.half ? 1u : 0u) || switching != (c.half ? 1u : 0u))
    throw ckks::SerializationError("key cache: not one relinearization key per ring and one ring-switch key with the half ring");
  if (to_sparse != (c.encapsulation ? 1u : 0u) || to_dense != to_sparse)
    throw ckks::SerializationError("key cache: not one pair of encapsulation keys exactly when the model uses them");
  if (next != index_offset) throw ckks::SerializationError("key cache: the keys do not end where the index begins");
}

Index read_index(int fd, std::size_t size, const Contexts& c) {
  if (size < kAlign + kFooterSize) throw ckks::SerializationError("not a pfhe key cache, or truncated");
  std::array<std::uint8_t, kAlign> header{};
  std::array<std::uint8_t, kFooterSize> footer{};
  read_exactly(fd, header.data(), header.size(), 0);
  read_exactly(fd, footer.data(), footer.size(), size - kFooterSize);
  if (!std::equal(kFooterMagic.begin(), kFooterMagic.end(), footer.end() - kFooterMagic.size()))
    throw ckks::SerializationError("not a pfhe key cache, or truncated");
  ckks::ByteReader f(footer);
  const auto count = f.get<std::uint64_t>("key cache footer"), index_offset = f.get<std::uint64_t>("key cache footer");
  const auto stored_digest = f.get<std::uint64_t>("key cache footer");
  if (count == 0 || count > kMaxEntries || index_offset < kAlign || index_offset % kAlign != 0 ||
      index_offset + count * kEntrySize + kFooterSize != size)
    throw ckks::SerializationError("key cache: the footer does not fit the file (truncated or corrupt)");
  ckks::Bytes index_data(count * kEntrySize);
  read_exactly(fd, index_data.data(), index_data.size(), index_offset);
  const std::uint64_t computed = index_digest(header, index_data, std::span(footer).first(16));
  if (computed != stored_digest)
    throw ckks::SerializationError("key cache index: checksum mismatch (stored " + ckks::checksum_hex(stored_digest) +
                                   ", computed " + ckks::checksum_hex(computed) + "): the data is corrupt");
  Index index;
  check_header(header, c, index);
  ckks::ByteReader r(index_data);
  for (std::uint64_t k = 0; k < count; ++k) index.entries.push_back(get_entry(r));
  check_entries(index.entries, c, index_offset);
  return index;
}

// Reads a section in pieces of whole limbs, hashing them and checking every word below its
// limb's prime.
void verify_section(int fd, const Entry& e, const ckks::Context& ctx) {
  const std::vector<std::uint64_t> primes = section_primes(ctx, e.level);
  const std::size_t n = ctx.n(), per_piece = std::max<std::size_t>(1, (std::size_t{4} << 20) / (n * 8));
  std::vector<std::uint64_t> piece(per_piece * n);
  ckks::Checksum sum;
  bool reduced = true;
  std::uint64_t at = e.offset;
  for (std::size_t limb = 0; limb < primes.size();) {
    const std::size_t limbs = std::min(per_piece, primes.size() - limb);
    const std::span<std::uint8_t> bytes(reinterpret_cast<std::uint8_t*>(piece.data()), limbs * n * 8);
    read_exactly(fd, bytes.data(), bytes.size(), at);
    sum.update(bytes);
    for (std::size_t l = 0; l < limbs; ++l) reduced &= ring::limb_is_reduced(piece.data() + l * n, n, primes[limb + l]);
    at += bytes.size();
    limb += limbs;
  }
  std::vector<std::uint8_t> padding(e.offset + e.size - at);
  read_exactly(fd, padding.data(), padding.size(), at);
  sum.update(padding);
  // The digest first: damage reads as damage even when it also left a word unreduced.
  if (sum.digest() != e.digest)
    throw ckks::SerializationError("key cache: " + describe(e) + ": checksum mismatch (stored " +
                                   ckks::checksum_hex(e.digest) + ", computed " + ckks::checksum_hex(sum.digest()) +
                                   "): the data is corrupt");
  if (!reduced) throw ckks::SerializationError("key cache: " + describe(e) + " has a word not below its prime");
}

ckks::SwitchingKey mapped_key(const std::uint8_t* section, const Entry& e, const ckks::Context& ctx) {
  ckks::SwitchingKey key;
  key.a_seed = e.seed;
  const auto* words = reinterpret_cast<const std::uint64_t*>(section);
  const std::size_t q_limbs = e.level + 1, p_limbs = ctx.ring_p().size();
  const auto next = [&](std::size_t limbs) {
    ring::Poly p = ring::Poly::borrowed(words, ctx.n(), limbs);
    words += limbs * ctx.n();
    return p;
  };
  for (std::size_t j = 0; j < ctx.params().digits_at(e.level); ++j) {
    ring::Poly bq = next(q_limbs), bp = next(p_limbs), aq = next(q_limbs), ap = next(p_limbs);
    key.b.push_back({std::move(bq), std::move(bp)});
    key.a.push_back({std::move(aq), std::move(ap)});
  }
  return key;
}

}  // namespace

std::uint64_t write_key_cache(const std::string& keys_path, const std::string& cache_path, const ckks::Context& ctx,
                              const nn::HalfRing* half_ring, const ckks::Context* encapsulation) {
  const Contexts contexts(ctx, half_ring, encapsulation);
  return load_mapped_in_place(keys_path, [&](std::span<const std::uint8_t> bytes,
                                             const std::shared_ptr<const ckks::Backing>& mapping) {
    const BundleView b = load_bundle(bytes);
    const std::size_t ring_keys = check_evaluation_key_objects(b, half_ring, encapsulation);
    CacheWriter cache(cache_path, b.key_set, contexts);
    // Two keys per thread in memory at a time: CryptoFaceNet4's keys are ~70 MB each.
    const std::size_t batch = 2 * static_cast<std::size_t>(std::max(1, omp_get_max_threads()));
    const auto add_ring = [&](KeyRing ring, const ckks::Context& c, std::span<const std::uint8_t> relin,
                              std::span<const std::uint8_t> galois) {
      cache.add(ring, KeyKind::kRelin, 0, ckks::load_relin_key(c, relin).key);
      ckks::for_each_galois_key(c, galois, mapping.get(), batch, [&](std::uint64_t g, ckks::SwitchingKey&& key) {
        cache.add(ring, KeyKind::kGalois, g, key);
      });
    };
    add_ring(KeyRing::kBig, ctx, b.objects[0], b.objects[1]);
    if (half_ring) {
      add_ring(KeyRing::kHalf, half_ring->context, b.objects[2], b.objects[3]);
      cache.add(KeyRing::kSwitch, KeyKind::kRingSwitch, 0,
                ckks::load_switching_key(half_ring->switch_context, b.objects[4]));
    }
    if (encapsulation) {
      cache.add(KeyRing::kEncapsulation, KeyKind::kToSparse, 0, ckks::load_switching_key(*encapsulation, b.objects[ring_keys]));
      cache.add(KeyRing::kBig, KeyKind::kToDense, 0, ckks::load_switching_key(ctx, b.objects[ring_keys + 1]));
    }
    cache.commit();
    return b.key_set;
  });
}

EvaluationKeys map_key_cache(const std::string& cache_path, const ckks::Context& ctx, const nn::HalfRing* half_ring,
                             const ckks::Context* encapsulation) {
  const Contexts contexts(ctx, half_ring, encapsulation);
  Index index;
  const auto verify = [&](int fd, std::size_t size) {
    try {
      index = read_index(fd, size, contexts);
      ring::parallel_for(index.entries.size(), [&](std::size_t k) {
        const Entry& e = index.entries[k];
        verify_section(fd, e, *contexts.of(e.ring));
      });
    } catch (const ckks::SerializationError& e) {
      throw ckks::SerializationError(cache_path + ": " + e.what());
    }
  };
  const auto file = std::make_shared<const MappedFile>(cache_path, verify);
  EvaluationKeys keys;
  keys.key_set = index.tag;
  if (half_ring) keys.half.emplace();
  if (encapsulation) keys.encapsulation.emplace();
  for (const Entry& e : index.entries) {
    const ckks::Context& c = *contexts.of(e.ring);
    ckks::SwitchingKey key = mapped_key(file->bytes().data() + e.offset, e, c);
    const bool big = e.ring == KeyRing::kBig;
    switch (e.kind) {
      case KeyKind::kRelin: (big ? keys.relin : keys.half->relin).key = std::move(key); break;
      case KeyKind::kGalois: (big ? keys.galois : keys.half->galois).keys.emplace(e.element, std::move(key)); break;
      case KeyKind::kRingSwitch: keys.half->switch_key = std::move(key); break;
      case KeyKind::kToSparse: keys.encapsulation->to_sparse = std::move(key); break;
      case KeyKind::kToDense: keys.encapsulation->to_dense = std::move(key); break;
    }
  }
  keys.storage = file;
  return keys;
}

EvaluationKeys load_evaluation_keys(const std::string& path, const ckks::Context& ctx, const nn::HalfRing* half_ring,
                                    const ckks::Context* encapsulation) {
  std::array<char, kMagic.size()> magic{};
  std::ifstream(path, std::ios::binary).read(magic.data(), magic.size());
  return magic == kMagic ? map_key_cache(path, ctx, half_ring, encapsulation)
                         : read_evaluation_keys(path, ctx, half_ring, encapsulation);
}

}  // namespace pfhe::runtime
