#include "runtime/bundle.h"

#include <sys/stat.h>

#include <cstring>

#include "ckks/encryptor.h"
#include "ckks/serialization.h"
#include "ring/prng.h"
#include "runtime/mapped_file.h"

namespace pfhe::runtime {

namespace {
constexpr char kMagic[4] = {'P', 'F', 'H', 'B'};
constexpr std::uint32_t kVersion = 1;
constexpr std::size_t kMaxObjects = 1 << 16;

// Runs a loader on a file's bundle; loader errors name the file.
template <typename F>
auto load_from(const std::string& path, F&& f) {
  return load_mapped(path, [&](std::span<const std::uint8_t> bytes) { return f(load_bundle(bytes)); });
}

std::string hex(std::uint64_t v) {
  char buf[17];
  std::snprintf(buf, sizeof buf, "%016llx", static_cast<unsigned long long>(v));
  return buf;
}
}  // namespace

namespace {
ckks::Bytes bundle_header(std::uint64_t key_set, std::size_t count) {
  ckks::ByteWriter w;
  w.put_bytes(reinterpret_cast<const std::uint8_t*>(kMagic), 4);
  w.put<std::uint32_t>(kVersion);
  w.put<std::uint64_t>(key_set);
  w.put<std::uint64_t>(count);
  return std::move(w.bytes());
}
}  // namespace

ckks::Bytes save_bundle(const Bundle& bundle) {
  ckks::ByteWriter w;
  std::size_t total = 0;
  for (const auto& o : bundle.objects) total += o.size() + 8;
  w.reserve_more(total + 24);
  const ckks::Bytes header = bundle_header(bundle.key_set, bundle.objects.size());
  w.put_bytes(header.data(), header.size());
  for (const auto& o : bundle.objects) w.put_blob(o);
  return std::move(w.bytes());
}

namespace {
void write_length(ckks::FileWriter& f, std::uint64_t size) {
  ckks::ByteWriter length;
  length.put<std::uint64_t>(size);
  f.write(length.bytes());
}
}  // namespace

void write_bundle_file(const std::string& path, std::uint64_t key_set, std::size_t count,
                       const std::function<ckks::Bytes(std::size_t)>& make_object) {
  ckks::FileWriter f(path);
  f.write(bundle_header(key_set, count));
  for (std::size_t i = 0; i < count; ++i) {
    const ckks::Bytes object = make_object(i);
    write_length(f, object.size());
    f.write(object);
  }
  f.commit();
}

BundleView load_bundle(std::span<const std::uint8_t> bytes) {
  const char* what = "bundle";
  ckks::ByteReader r(bytes);
  r.expect_magic_and_version(kMagic, kVersion, what);
  BundleView b;
  b.key_set = r.get<std::uint64_t>(what);
  const std::size_t count = r.get_count(what, kMaxObjects);
  for (std::size_t i = 0; i < count; ++i) b.objects.push_back(r.get_blob(what));
  r.expect_end(what);
  return b;
}

std::uint64_t new_key_set_tag() {
  for (;;) {
    const ring::Seed s = ring::random_seed();
    std::uint64_t tag;
    std::memcpy(&tag, s.data(), sizeof tag);
    if (tag != 0) return tag;
  }
}

void check_same_key_set(std::uint64_t a, const std::string& what_a, std::uint64_t b, const std::string& what_b) {
  if (a != 0 && b != 0 && a != b)
    throw std::invalid_argument(what_a + " (key set " + hex(a) + ") and " + what_b + " (key set " + hex(b) +
                                ") belong to different key sets");
}

void write_ciphertexts(const std::string& path, const ckks::Context& ctx, const CiphertextFile& file) {
  Bundle b{file.key_set, {}};
  for (const auto& c : file.ciphertexts) b.objects.push_back(ckks::save(ctx, c, {.compress = true}));
  ckks::write_file(path, save_bundle(b));
}

BundleView view_of(const Bundle& bundle) {
  BundleView v{bundle.key_set, {}};
  for (const auto& o : bundle.objects) v.objects.emplace_back(o);
  return v;
}

CiphertextFile load_ciphertexts(const BundleView& bundle, const ckks::Context& ctx) {
  CiphertextFile out{bundle.key_set, {}};
  for (const auto& o : bundle.objects) {
    if (ckks::peek_type(o) == ckks::ObjectType::kSeededCiphertext)
      out.ciphertexts.push_back(ckks::expand_seeded(ctx, ckks::load_seeded_ciphertext(ctx, o)));
    else
      out.ciphertexts.push_back(ckks::load_ciphertext(ctx, o));
  }
  if (out.ciphertexts.empty()) throw ckks::SerializationError("no ciphertexts");
  return out;
}

CiphertextFile read_ciphertexts(const std::string& path, const ckks::Context& ctx) {
  return load_from(path, [&](const BundleView& b) { return load_ciphertexts(b, ctx); });
}

void write_evaluation_keys(const std::string& path, const ckks::Context& ctx, const EvaluationKeys& keys) {
  write_bundle_file(path, keys.key_set, 2, [&](std::size_t i) {
    return i == 0 ? ckks::save(ctx, keys.relin) : ckks::save(ctx, keys.galois);
  });
}

void write_evaluation_keys(const std::string& path, const ckks::Context& ctx, std::uint64_t key_set,
                           const ckks::KeyGenerator& keygen, const std::map<long, std::size_t>& rotation_levels) {
  ckks::FileWriter f(path);
  f.write(bundle_header(key_set, 2));
  const ckks::Bytes relin = ckks::save(ctx, keygen.create_relin_key());
  write_length(f, relin.size());
  f.write(relin);
  const ckks::StreamedGaloisKeys galois{ctx, ckks::galois_element_levels(ctx, rotation_levels)};
  write_length(f, galois.stored_size());
  galois.write([&](std::uint64_t g, std::size_t level) { return keygen.create_galois_key(g, level); },
               [&](std::span<const std::uint8_t> bytes) { f.write(bytes); });
  f.commit();
}

EvaluationKeys read_evaluation_keys(const std::string& path, const ckks::Context& ctx) {
  return load_mapped_in_place(path, [&](std::span<const std::uint8_t> bytes,
                                        const std::shared_ptr<const ckks::Backing>& mapping) {
    const BundleView b = load_bundle(bytes);
    if (b.objects.size() != 2) throw ckks::SerializationError("evaluation keys: expected a relinearization key and Galois keys");
    // The stored keys' pages are released as they are parsed: loading then peaks near the
    // expanded keys alone, not the expanded keys plus the 4.8 GB file of CryptoFaceNet's.
    return EvaluationKeys{b.key_set, ckks::load_relin_key(ctx, b.objects[0]),
                          ckks::load_galois_keys(ctx, b.objects[1], mapping.get())};
  });
}

void write_secret_key(const std::string& path, const ckks::Context& ctx, const SecretKeyFile& key) {
  const ckks::Bytes bytes = save_bundle({key.key_set, {ckks::save(ctx, key.key)}});
  // Created owner-only from the start (no window in which the file is world-readable).
  const mode_t old = ::umask(077);
  try {
    ckks::write_file(path, bytes);
  } catch (...) {
    ::umask(old);
    throw;
  }
  ::umask(old);
}

SecretKeyFile read_secret_key(const std::string& path, const ckks::Context& ctx) {
  return load_from(path, [&](const BundleView& b) {
    if (b.objects.size() != 1) throw ckks::SerializationError("secret key file: expected one secret key");
    return SecretKeyFile{b.key_set, ckks::load_secret_key(ctx, b.objects[0])};
  });
}

}  // namespace pfhe::runtime
