#include "key_registry.h"

#include <unistd.h>

#include <algorithm>
#include <cstdlib>

#include "ckks/checksum.h"
#include "runtime/process_stats.h"

namespace pfhe::app {

namespace fs = std::filesystem;
using runtime::Clock;
using runtime::seconds_since;

KeyRegistry::KeyRegistry(const runtime::ServedModel& model, fs::path dir, std::size_t max_loaded)
    : model_(model), dir_(std::move(dir)), max_loaded_(max_loaded) {
  if (max_loaded == 0) throw std::invalid_argument("at least one key set must stay loaded");
  fs::create_directories(dir_);
  for (const auto& entry : fs::directory_iterator(dir_)) {
    const fs::path& path = entry.path();
    const std::string stem = path.stem().string();
    if (path.filename().string().rfind(".upload-", 0) == 0) {
      fs::remove(path);  // an upload a previous run did not finish
    } else if (path.extension() == ".keys" && stem.size() == 16 &&
               stem.find_first_not_of("0123456789abcdef") == std::string::npos) {
      // Named by its tag when it was checked; loaded (and checked again) when first used.
      registered_[std::strtoull(stem.c_str(), nullptr, 16)] = true;
    }
  }
  counters_.registered = registered_.size();
}

fs::path KeyRegistry::file_of(std::uint64_t tag) const { return dir_ / (ckks::checksum_hex(tag) + ".keys"); }

fs::path KeyRegistry::upload_path() {
  return dir_ / (".upload-" + std::to_string(::getpid()) + "-" + std::to_string(uploads_++));
}

void KeyRegistry::remember(std::uint64_t tag, std::shared_ptr<const runtime::KeySet> set) {
  loaded_.remove_if([&](const auto& entry) { return entry.first == tag; });
  loaded_.emplace_front(tag, std::move(set));
  while (loaded_.size() > max_loaded_) loaded_.pop_back();  // a running job keeps its own reference
  counters_.loaded = loaded_.size();
}

std::uint64_t KeyRegistry::add(const fs::path& upload) {
  std::shared_ptr<const runtime::KeySet> set;
  {
    const std::lock_guard load(load_mutex_);
    try {
      set = std::make_shared<const runtime::KeySet>(model_, upload.string());
    } catch (...) {
      fs::remove(upload);
      throw;
    }
  }
  const std::uint64_t tag = set->tag();
  const std::lock_guard lock(mutex_);
  if (registered_.count(tag)) {
    fs::remove(upload);  // the same keys again: nothing changes
  } else {
    fs::rename(upload, file_of(tag));
    registered_[tag] = true;
    counters_.registered = registered_.size();
  }
  remember(tag, std::move(set));
  return tag;
}

bool KeyRegistry::registered(std::uint64_t tag) const {
  const std::lock_guard lock(mutex_);
  return registered_.count(tag) != 0;
}

std::shared_ptr<const runtime::KeySet> KeyRegistry::get(std::uint64_t tag) {
  const auto cached = [&]() -> std::shared_ptr<const runtime::KeySet> {
    const std::lock_guard lock(mutex_);
    if (!registered_.count(tag))
      throw std::invalid_argument("key set " + ckks::checksum_hex(tag) + " is not registered");
    const auto it = std::find_if(loaded_.begin(), loaded_.end(), [&](const auto& e) { return e.first == tag; });
    if (it == loaded_.end()) return nullptr;
    loaded_.splice(loaded_.begin(), loaded_, it);  // most recently used
    return it->second;
  };
  if (auto set = cached()) return set;
  const std::lock_guard load(load_mutex_);
  if (auto set = cached()) return set;  // loaded by another job while this one waited
  const auto start = Clock::now();
  auto set = std::make_shared<const runtime::KeySet>(model_, file_of(tag).string());
  if (set->tag() != tag) throw std::runtime_error(file_of(tag).string() + ": holds key set " + ckks::checksum_hex(set->tag()));
  const std::lock_guard lock(mutex_);
  ++counters_.loads;
  counters_.load_seconds += seconds_since(start);
  remember(tag, set);
  return set;
}

KeyCacheMetrics KeyRegistry::metrics() const {
  const std::lock_guard lock(mutex_);
  return counters_;
}

}  // namespace pfhe::app
