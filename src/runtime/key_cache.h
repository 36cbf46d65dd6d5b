// A server's cache of one client's evaluation keys, expanded (docs/FORMAT.md "Key cache").
// The key file a client uploads stores each switching key's b polynomials and the seed
// of its a polynomials, half the size; loading it means checking every word and
// regenerating the a halves, ~15 s for CryptoFaceNet4's 4.8 GB, most of it faulting in and
// zeroing the 9.6 GB of expanded keys. The cache stores the keys as they are in memory,
// every polynomial page-aligned, so a server maps it and evaluates with the mapped words
// in place (ring::Poly::borrowed): a key set is ready in the time its sections take to
// verify, its pages are the page cache's (shared, reclaimable under memory pressure), and
// a restarted server serves registered clients at once.
//
// Integrity without the whole-file trailer: a single XXH3 stream over 9.6 GB is one
// thread's work, so each key is a section with its own digest, and an index (entries with
// offsets, sizes and digests) is covered by one more digest in the footer. Sections are
// verified in parallel with pread (memory speed for cached pages, nothing faulted into
// the mapping), every word checked below its prime on the way.
#pragma once
#include <cstdint>
#include <string>

#include "ckks/context.h"
#include "nn/half_ring.h"
#include "runtime/key_files.h"

namespace pfhe::runtime {

// Expands the evaluation-key file at `keys_path` (checked as read_evaluation_keys checks
// it) into a key cache at `cache_path` (written under a temporary name, then renamed), a
// few keys in memory at a time. Returns the key-set tag.
// `encapsulation`: the context of a bootstrapping model's encapsulation keys (null: none).
std::uint64_t write_key_cache(const std::string& keys_path, const std::string& cache_path, const ckks::Context& ctx,
                              const nn::HalfRing* half_ring, const ckks::Context* encapsulation = nullptr);

// The keys of a cache, their polynomials borrowing its mapping's pages
// (EvaluationKeys::storage keeps it mapped). Before it is mapped, the index, every
// section's digest and every word are checked. Refuses a cache made for other parameters
// or another ring switch. Errors (ckks::SerializationError) name the path.
EvaluationKeys map_key_cache(const std::string& cache_path, const ckks::Context& ctx, const nn::HalfRing* half_ring,
                             const ckks::Context* encapsulation = nullptr);

// A key file (read_evaluation_keys) or a key cache (map_key_cache), told apart by their
// first bytes: what a server given either loads.
EvaluationKeys load_evaluation_keys(const std::string& path, const ckks::Context& ctx, const nn::HalfRing* half_ring,
                                    const ckks::Context* encapsulation = nullptr);

}  // namespace pfhe::runtime
