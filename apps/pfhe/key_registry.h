// The evaluation-key sets a service's clients registered (`pfhe serve`, docs/CLI.md
// "Service"). Each is checked against the model when it arrives and kept on disk as
// keys/<tag>.keys (written under a temporary name, then renamed, so a crash never leaves
// a half file under a key-set name). In memory, a bounded cache holds the most recently
// used ones: a set is loaded when a job needs it and the least recently used one beyond
// `max_loaded` is dropped (a job still running with it keeps it until it ends), so memory
// is bounded by the model, `max_loaded` + the running jobs' key sets, not by how many
// clients registered. A restart loads no keys: it lists the files, so it is ready at once.
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

  // Checks the uploaded file, keeps it and its loaded key set; returns its key-set tag.
  std::uint64_t add(const std::filesystem::path& upload);
  bool registered(std::uint64_t tag) const;
  // The key set, loaded from its file if it is not in memory; throws if it is not
  // registered or its file no longer loads.
  std::shared_ptr<const runtime::KeySet> get(std::uint64_t tag);
  KeyCacheMetrics metrics() const;
  // A new name for an upload in progress (removed at the next start if it is left).
  std::filesystem::path upload_path();

 private:
  std::filesystem::path file_of(std::uint64_t tag) const;
  void remember(std::uint64_t tag, std::shared_ptr<const runtime::KeySet> set);  // under mutex_

  const runtime::ServedModel& model_;
  std::filesystem::path dir_;
  std::size_t max_loaded_;
  mutable std::mutex mutex_;  // the maps and counters
  std::mutex load_mutex_;     // one load at a time: two would double the memory a load needs
  std::map<std::uint64_t, bool> registered_;
  std::list<std::pair<std::uint64_t, std::shared_ptr<const runtime::KeySet>>> loaded_;  // most recent first
  KeyCacheMetrics counters_;
  std::atomic<std::uint64_t> uploads_{0};
};

}  // namespace pfhe::app
