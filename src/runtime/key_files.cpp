#include "runtime/key_files.h"

#include <sys/stat.h>

#include <stdexcept>

#include "ckks/ring_switch.h"
#include "ckks/serialization.h"
#include "runtime/bundle.h"
#include "runtime/mapped_file.h"

namespace pfhe::runtime {

void check_secret_keys(const nn::HalfRing* half_ring, const SecretKeyFile& key) {
  if ((half_ring != nullptr) != key.half_key.has_value())
    throw std::invalid_argument(half_ring ? "the model switches to the half ring: its secret key is missing"
                                          : "the model does not switch rings: unexpected half-ring secret key");
}

namespace {

std::string count_problem(const char* what, std::size_t found, std::size_t big_only, std::size_t with_half,
                          const nn::HalfRing* half_ring) {
  std::string s = std::string(what) + ": " + std::to_string(found) + " objects, expected " +
                  std::to_string(half_ring ? with_half : big_only);
  if (found == (half_ring ? big_only : with_half))
    s += half_ring ? " (made for a model that does not switch to the half ring?)"
                   : " (made for a model that switches to the half ring?)";
  return s;
}
}  // namespace

SecretKeyFile new_secret_keys(const ckks::Context& ctx, const nn::HalfRing* half_ring) {
  SecretKeyFile f{new_key_set_tag(), ckks::KeyGenerator(ctx).secret_key(), std::nullopt};
  if (half_ring) f.half_key = ckks::KeyGenerator(half_ring->context).secret_key();
  return f;
}

void write_secret_key(const std::string& path, const ckks::Context& ctx, const nn::HalfRing* half_ring,
                      const SecretKeyFile& key) {
  check_secret_keys(half_ring, key);
  Bundle b{key.key_set, {ckks::save(ctx, key.key)}};
  if (half_ring) b.objects.push_back(ckks::save(half_ring->context, *key.half_key));
  const ckks::Bytes bytes = save_bundle(b);
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

SecretKeyFile read_secret_key(const std::string& path, const ckks::Context& ctx, const nn::HalfRing* half_ring) {
  return load_mapped(path, [&](std::span<const std::uint8_t> bytes) {
    const BundleView b = load_bundle(bytes);
    if (b.objects.size() != (half_ring ? 2u : 1u))
      throw ckks::SerializationError(count_problem("secret key file", b.objects.size(), 1, 2, half_ring));
    SecretKeyFile f{b.key_set, ckks::load_secret_key(ctx, b.objects[0]), std::nullopt};
    if (half_ring) f.half_key = ckks::load_secret_key(half_ring->context, b.objects[1]);
    return f;
  });
}

namespace {
// The key that moves a ciphertext from the big secret to the half ring's (ckks/ring_switch.h).
ckks::SwitchingKey ring_switch_key(const nn::HalfRing& half_ring, const SecretKeyFile& secret) {
  return ckks::create_ring_switch_key(half_ring.switch_context, secret.key, half_ring.context, *secret.half_key);
}
}  // namespace

namespace {
// The conjugation key a request asks for (bootstrapping): its Galois element and level.
std::optional<std::pair<std::uint64_t, std::size_t>> conjugation_key(const ckks::Context& ctx, const KeyRequest& request) {
  if (!request.conjugation_level) return std::nullopt;
  if (*request.conjugation_level > ctx.max_level()) throw std::invalid_argument("conjugation key above the top level");
  return std::pair{ckks::galois_element_conjugate(ctx.n()), *request.conjugation_level};
}

// The Galois elements of a request's big ring: its rotations and, with bootstrapping, conjugation.
std::map<std::uint64_t, std::size_t> big_ring_elements(const ckks::Context& ctx, const KeyRequest& request) {
  auto elements = ckks::galois_element_levels(ctx, request.big);
  if (const auto conjugate = conjugation_key(ctx, request)) elements.insert(*conjugate);
  return elements;
}
}  // namespace

std::unique_ptr<ckks::Context> encapsulation_context(const ckks::Context& ctx, const KeyRequest& request) {
  if (request.ephemeral_weight == 0) return nullptr;
  return std::make_unique<ckks::Context>(ckks::encapsulation_parameters(ctx.params()));
}

EvaluationKeys make_evaluation_keys(const ckks::Context& ctx, const nn::HalfRing* half_ring, const SecretKeyFile& secret,
                                    const KeyRequest& rotations) {
  check_secret_keys(half_ring, secret);
  const ckks::KeyGenerator kg(ctx, secret.key);
  EvaluationKeys keys{secret.key_set, kg.create_relin_key(), kg.create_galois_keys(rotations.big),
                      std::nullopt, std::nullopt, nullptr};
  if (const auto conjugate = conjugation_key(ctx, rotations))
    keys.galois.keys.emplace(conjugate->first, kg.create_galois_key(conjugate->first, conjugate->second));
  if (const auto low = encapsulation_context(ctx, rotations))
    keys.encapsulation = ckks::create_encapsulation_keys(kg, *low, rotations.ephemeral_weight);
  if (half_ring) {
    const ckks::KeyGenerator half(half_ring->context, *secret.half_key);
    keys.half = HalfRingKeys{
        half.create_relin_key(), half.create_galois_keys(rotations.half),
        ring_switch_key(*half_ring, secret)};
  }
  return keys;
}

namespace {
// One ring's relinearization key and Galois keys as two streamed bundle objects.
void add_ring_keys(std::vector<StreamedObject>& objects, const ckks::Context& ctx, const ckks::KeyGenerator& kg,
                   std::map<std::uint64_t, std::size_t> elements) {
  objects.push_back(streamed(ckks::save(ctx, kg.create_relin_key())));
  auto galois = std::make_shared<ckks::StreamedGaloisKeys>(ckks::StreamedGaloisKeys{ctx, std::move(elements)});
  objects.push_back({galois->stored_size(), [galois, &kg](const ByteSink& sink) {
                       galois->write([&](std::uint64_t g, std::size_t level) { return kg.create_galois_key(g, level); },
                                     sink);
                     }});
}
void add_encapsulation_keys(std::vector<StreamedObject>& objects, const ckks::Context& ctx,
                            const ckks::Context& encapsulation, const ckks::EncapsulationKeys& keys) {
  objects.push_back(streamed(ckks::save_switching_key(encapsulation, keys.to_sparse)));
  objects.push_back(streamed(ckks::save_switching_key(ctx, keys.to_dense)));
}
}  // namespace

void write_evaluation_keys(const std::string& path, const ckks::Context& ctx, const nn::HalfRing* half_ring,
                           const SecretKeyFile& secret, const KeyRequest& rotations) {
  check_secret_keys(half_ring, secret);
  const ckks::KeyGenerator kg(ctx, secret.key);
  std::vector<StreamedObject> objects;
  add_ring_keys(objects, ctx, kg, big_ring_elements(ctx, rotations));
  std::optional<ckks::KeyGenerator> half;
  if (half_ring) {
    half.emplace(half_ring->context, *secret.half_key);
    add_ring_keys(objects, half_ring->context, *half, ckks::galois_element_levels(half_ring->context, rotations.half));
    objects.push_back(streamed(ckks::save_switching_key(half_ring->switch_context, ring_switch_key(*half_ring, secret))));
  }
  const auto low = encapsulation_context(ctx, rotations);
  if (low) add_encapsulation_keys(objects, ctx, *low, ckks::create_encapsulation_keys(kg, *low, rotations.ephemeral_weight));
  write_bundle_file(path, secret.key_set, objects);
}

void write_evaluation_keys(const std::string& path, const ckks::Context& ctx, const nn::HalfRing* half_ring,
                           const EvaluationKeys& keys) {
  if ((half_ring != nullptr) != keys.half.has_value())
    throw std::invalid_argument(half_ring ? "the evaluation keys lack the half ring's keys the model needs"
                                          : "the evaluation keys have half-ring keys the model does not use");
  std::vector<StreamedObject> objects{streamed(ckks::save(ctx, keys.relin)), streamed(ckks::save(ctx, keys.galois))};
  if (half_ring) {
    objects.push_back(streamed(ckks::save(half_ring->context, keys.half->relin)));
    objects.push_back(streamed(ckks::save(half_ring->context, keys.half->galois)));
    objects.push_back(streamed(ckks::save_switching_key(half_ring->switch_context, keys.half->switch_key)));
  }
  if (keys.encapsulation)
    add_encapsulation_keys(objects, ctx, ckks::Context(ckks::encapsulation_parameters(ctx.params())),
                           *keys.encapsulation);
  write_bundle_file(path, keys.key_set, objects);
}

std::size_t check_evaluation_key_objects(const BundleView& file, const nn::HalfRing* half_ring,
                                         const ckks::Context* encapsulation) {
  for (const auto& object : file.objects)
    if (ckks::peek_type(object) == ckks::ObjectType::kSecretKey)
      throw ckks::SerializationError("a secret key, not evaluation keys: the secret key stays with the client "
                                     "(send the file keygen wrote as --eval-keys)");
  const std::size_t found = file.objects.size();
  const std::size_t ring_keys = half_ring ? 5u : 2u, encapsulation_keys = encapsulation ? 2u : 0u;
  if (found == ring_keys + encapsulation_keys) return ring_keys;
  if (found == ring_keys + 2 - encapsulation_keys)
    throw ckks::SerializationError(
        encapsulation ? std::string("evaluation keys: without the bootstrapping (encapsulation) keys the model needs "
                                    "(keys of another model?)")
                      : std::string("evaluation keys: with bootstrapping keys the model does not use (keys of another "
                                    "model? ") + kServeBootstrappedFromArtefact + ")");
  throw ckks::SerializationError(
      count_problem("evaluation keys", found, 2 + encapsulation_keys, 5 + encapsulation_keys, half_ring));
}

EvaluationKeys read_evaluation_keys(const std::string& path, const ckks::Context& ctx, const nn::HalfRing* half_ring,
                                    const ckks::Context* encapsulation) {
  return load_mapped_in_place(path, [&](std::span<const std::uint8_t> bytes,
                                        const std::shared_ptr<const ckks::Backing>& mapping) {
    const BundleView b = load_bundle(bytes);
    const std::size_t ring_keys = check_evaluation_key_objects(b, half_ring, encapsulation);
    // The stored keys' pages are released as they are parsed: loading then peaks near the
    // expanded keys alone, not the expanded keys plus the 4.8 GB file of CryptoFaceNet's.
    EvaluationKeys keys{b.key_set, ckks::load_relin_key(ctx, b.objects[0]),
                        ckks::load_galois_keys(ctx, b.objects[1], mapping.get()), std::nullopt, std::nullopt, nullptr};
    if (half_ring)
      keys.half = HalfRingKeys{ckks::load_relin_key(half_ring->context, b.objects[2]),
                               ckks::load_galois_keys(half_ring->context, b.objects[3], mapping.get()),
                               ckks::load_switching_key(half_ring->switch_context, b.objects[4])};
    if (encapsulation)
      keys.encapsulation = ckks::EncapsulationKeys{ckks::load_switching_key(*encapsulation, b.objects[ring_keys]),
                                                   ckks::load_switching_key(ctx, b.objects[ring_keys + 1])};
    return keys;
  });
}

}  // namespace pfhe::runtime
