#include "runtime/bundle.h"

#include <cstring>

#include "ckks/checksum.h"
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
// Fixed-size fields copied into place, as ByteWriter::put writes them (ByteWriter's
// growing vector here made GCC 12 report a false -Wstringop-overflow).
ckks::Bytes bundle_header(std::uint64_t key_set, std::size_t count) {
  ckks::Bytes out(24);
  const std::uint32_t version = kVersion;
  const std::uint64_t objects = count;
  std::memcpy(out.data(), kMagic, 4);
  std::memcpy(out.data() + 4, &version, 4);
  std::memcpy(out.data() + 8, &key_set, 8);
  std::memcpy(out.data() + 16, &objects, 8);
  return out;
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

StreamedObject streamed(ckks::Bytes bytes) {
  auto shared = std::make_shared<const ckks::Bytes>(std::move(bytes));
  return {shared->size(), [shared](const ByteSink& sink) { sink(*shared); }};
}

void write_bundle_file(const std::string& path, std::uint64_t key_set, const std::vector<StreamedObject>& objects) {
  BundleFileWriter w(path, key_set, objects.size());
  for (const StreamedObject& o : objects) w.add(o);
  w.commit();
}

BundleFileWriter::BundleFileWriter(const std::string& path, std::uint64_t key_set, std::size_t count)
    : file_(path), count_(count) {
  file_.write(bundle_header(key_set, count));
}

void BundleFileWriter::add(const StreamedObject& object) {
  if (added_ == count_) throw std::logic_error("bundle: more objects than declared");
  write_length(file_, object.size);
  std::uint64_t written = 0;
  object.write([&](std::span<const std::uint8_t> piece) {
    written += piece.size();
    file_.write(piece);
  });
  if (written != object.size) throw std::logic_error("bundle: an object's bytes differ from its declared size");
  ++added_;
}

void BundleFileWriter::commit() {
  if (added_ != count_) throw std::logic_error("bundle: fewer objects than declared");
  file_.commit();
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

ckks::Bytes stored_ciphertext(const ckks::Context& ctx, const ckks::Ciphertext& c) {
  return ckks::save(ctx, c, {.compress = true});
}

ckks::Bytes ciphertext_file_bytes(const ckks::Context& ctx, const CiphertextFile& file) {
  Bundle b{file.key_set, {}};
  for (const auto& c : file.ciphertexts) b.objects.push_back(stored_ciphertext(ctx, c));
  ckks::Bytes bytes = save_bundle(b);
  ckks::append_trailer(bytes);
  return bytes;
}

void write_ciphertexts(const std::string& path, const ckks::Context& ctx, const CiphertextFile& file) {
  ckks::write_raw_file(path, ciphertext_file_bytes(ctx, file));
}

CiphertextFile parse_ciphertext_file(std::span<const std::uint8_t> bytes, const ckks::Context& ctx,
                                     const std::string& what) {
  try {
    return load_ciphertexts(load_bundle(ckks::verify_trailer(bytes, what)), ctx);
  } catch (const ckks::SerializationError& e) {
    const std::string message = e.what();
    throw ckks::SerializationError(message.rfind(what, 0) == 0 ? message : what + ": " + message);
  }
}

BundleView view_of(const Bundle& bundle) {
  BundleView v{bundle.key_set, {}};
  for (const auto& o : bundle.objects) v.objects.emplace_back(o);
  return v;
}

namespace {
// One ciphertext object of a bundle, validated; a seeded one expanded.
ckks::Ciphertext load_one(std::span<const std::uint8_t> object, const ckks::Context& ctx) {
  if (ckks::peek_type(object) == ckks::ObjectType::kSeededCiphertext)
    return ckks::expand_seeded(ctx, ckks::load_seeded_ciphertext(ctx, object));
  return ckks::load_ciphertext(ctx, object);
}
}  // namespace

CiphertextFile load_ciphertexts(const BundleView& bundle, const ckks::Context& ctx) {
  CiphertextFile out{bundle.key_set, {}};
  for (const auto& o : bundle.objects) out.ciphertexts.push_back(load_one(o, ctx));
  if (out.ciphertexts.empty()) throw ckks::SerializationError("no ciphertexts");
  return out;
}

CiphertextFile read_ciphertexts(const std::string& path, const ckks::Context& ctx) {
  return load_from(path, [&](const BundleView& b) { return load_ciphertexts(b, ctx); });
}

void for_each_ciphertext(const std::string& path, const ckks::Context& ctx,
                         const std::function<void(std::uint64_t key_set, ckks::Ciphertext&&)>& visit) {
  load_from(path, [&](const BundleView& b) {
    if (b.objects.empty()) throw ckks::SerializationError("no ciphertexts");
    for (const auto& o : b.objects) visit(b.key_set, load_one(o, ctx));
    return 0;
  });
}

}  // namespace pfhe::runtime
