// The evaluation-key sets a service's clients registered (`pfhe serve`, docs/CLI.md
// "Service"). Each upload is expanded once, when it arrives, into a key cache
// (runtime/key_cache.h) kept as keys/<tag>.cache (written under a temporary name, then
// renamed, so a crash never leaves a half file under a key-set name), and checked against
// the model; the upload itself is not kept. A key set in use is that cache mapped in
// place: making it ready costs the verification of its sections, ~1 s for
// CryptoFaceNet4's 9.6 GB where parsing and expanding the upload took ~15 s, and its
// pages are the page cache's, so the kernel can reclaim those of idle key sets. A bounded
// number stay mapped: a set is mapped when a job needs it and the least recently used one
// beyond `max_loaded` is dropped (a job still running with it keeps it until it ends). A
// restart maps nothing: it lists the caches, so it is ready at once. A key file
// (keys/<tag>.keys, as `pfhe keygen` writes it) found in the directory, left by a pfhe
// before key caches or placed there by an operator, is expanded into its cache when first
// needed.
#pragma once
#include <atomic>
#include <cstdint>
#include <filesystem>
#include <list>
#include <map>
#include <memory>
#include <mutex>
#include <utility>

#include "runtime/client_server.h"

namespace pfhe::app {

struct KeyCacheMetrics {
  std::size_t registered = 0, loaded = 0, loads = 0;
  double load_seconds = 0;
};

class KeyRegistry {
 public:
  // `max_loaded` >= 1 key sets stay in memory.
  KeyRegistry(const runtime::ServedModel& model, std::filesystem::path dir, std::size_t max_loaded);

  // Expands and checks the uploaded key file (removed afterwards), keeps its cache and the
  // mapped key set; returns its key-set tag.
  std::uint64_t add(const std::filesystem::path& upload);
  bool registered(std::uint64_t tag) const;
  // The key set, mapped from its cache if it is not mapped; throws if it is not
  // registered or its cache no longer verifies.
  std::shared_ptr<const runtime::KeySet> get(std::uint64_t tag);
  KeyCacheMetrics metrics() const;
  // Where a registered key set's cache is (after get(tag) it exists).
  std::filesystem::path cache_path(std::uint64_t tag) const { return cache_of(tag); }
  // A new name for an upload in progress (removed at the next start if it is left).
  std::filesystem::path upload_path();

 private:
  std::filesystem::path cache_of(std::uint64_t tag) const;
  std::filesystem::path key_file_of(std::uint64_t tag) const;
  // The key set of the cache at `cache`; `keys` is expanded into it first when given. Under
  // load_mutex_.
  std::shared_ptr<const runtime::KeySet> open(const std::filesystem::path& cache);
  std::shared_ptr<const runtime::KeySet> expand(const std::filesystem::path& keys, const std::filesystem::path& cache);
  void remember(std::uint64_t tag, std::shared_ptr<const runtime::KeySet> set);  // under mutex_

  const runtime::ServedModel& model_;
  std::filesystem::path dir_;
  std::size_t max_loaded_;
  mutable std::mutex mutex_;  // the maps and counters
  std::mutex load_mutex_;     // one expansion or mapping at a time: they read the disk flat out
  std::map<std::uint64_t, bool> registered_;
  std::list<std::pair<std::uint64_t, std::shared_ptr<const runtime::KeySet>>> loaded_;  // most recent first
  KeyCacheMetrics counters_;
  std::atomic<std::uint64_t> uploads_{0};
};

}  // namespace pfhe::app
