#include "key_registry.h"

#include <unistd.h>

#include <algorithm>
#include <cstdlib>

#include "ckks/checksum.h"
#include "runtime/key_cache.h"
#include "runtime/process_stats.h"

namespace pfhe::app {

namespace fs = std::filesystem;
using runtime::Clock;
using runtime::seconds_since;

namespace {
// A key-set tag as a file stem: 16 lower-case hex digits.
bool is_tag_stem(const std::string& stem) {
  return stem.size() == 16 && stem.find_first_not_of("0123456789abcdef") == std::string::npos;
}
}  // namespace

KeyRegistry::KeyRegistry(const runtime::ServedModel& model, fs::path dir, std::size_t max_loaded)
    : model_(model), dir_(std::move(dir)), max_loaded_(max_loaded) {
  if (max_loaded == 0) throw std::invalid_argument("at least one key set must stay loaded");
  fs::create_directories(dir_);
  for (const auto& entry : fs::directory_iterator(dir_)) {
    const fs::path& path = entry.path();
    const std::string stem = path.stem().string();
    if (path.filename().string().rfind(".upload-", 0) == 0) {
      fs::remove(path);  // an upload or expansion a previous run did not finish
    } else if ((path.extension() == ".cache" || path.extension() == ".keys") && is_tag_stem(stem)) {
      // Named by its tag when it was checked; mapped (and verified again) when first used.
      registered_[std::strtoull(stem.c_str(), nullptr, 16)] = true;
    }
  }
  // A key file whose expansion finished (the crash came before it was removed).
  for (const auto& [tag, unused] : registered_)
    if (fs::exists(cache_of(tag))) fs::remove(key_file_of(tag));
  counters_.registered = registered_.size();
}

fs::path KeyRegistry::cache_of(std::uint64_t tag) const { return dir_ / (ckks::checksum_hex(tag) + ".cache"); }
fs::path KeyRegistry::key_file_of(std::uint64_t tag) const { return dir_ / (ckks::checksum_hex(tag) + ".keys"); }

fs::path KeyRegistry::upload_path() {
  return dir_ / (".upload-" + std::to_string(::getpid()) + "-" + std::to_string(uploads_++));
}

void KeyRegistry::remember(std::uint64_t tag, std::shared_ptr<const runtime::KeySet> set) {
  loaded_.remove_if([&](const auto& entry) { return entry.first == tag; });
  loaded_.emplace_front(tag, std::move(set));
  while (loaded_.size() > max_loaded_) loaded_.pop_back();  // a running job keeps its own reference
  counters_.loaded = loaded_.size();
}

std::shared_ptr<const runtime::KeySet> KeyRegistry::open(const fs::path& cache) {
  return std::make_shared<const runtime::KeySet>(
      model_,
      runtime::map_key_cache(cache.string(), model_.context(), model_.half_ring().get(), model_.encapsulation_context()),
      cache.string());
}

std::shared_ptr<const runtime::KeySet> KeyRegistry::expand(const fs::path& keys, const fs::path& cache) {
  try {
    runtime::write_key_cache(keys.string(), cache.string(), model_.context(), model_.half_ring().get(),
                             model_.encapsulation_context());
    return open(cache);
  } catch (...) {
    fs::remove(cache);
    throw;
  }
}

std::uint64_t KeyRegistry::add(const fs::path& upload) {
  const fs::path cache = upload_path();
  std::shared_ptr<const runtime::KeySet> set;
  {
    const std::lock_guard load(load_mutex_);
    try {
      set = expand(upload, cache);
    } catch (...) {
      fs::remove(upload);
      throw;
    }
  }
  fs::remove(upload);
  const std::uint64_t tag = set->tag();
  const std::lock_guard lock(mutex_);
  if (registered_.count(tag)) {
    fs::remove(cache);  // the same keys again: nothing changes (the set stays mapped until dropped)
  } else {
    fs::rename(cache, cache_of(tag));
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
  std::shared_ptr<const runtime::KeySet> set;
  if (fs::exists(cache_of(tag))) {
    set = open(cache_of(tag));
  } else {  // a key file from before key caches, or an operator's: expanded once
    const fs::path cache = upload_path();
    set = expand(key_file_of(tag), cache);
    if (set->tag() == tag) {
      fs::rename(cache, cache_of(tag));
      fs::remove(key_file_of(tag));
    } else {
      fs::remove(cache);
    }
  }
  if (set->tag() != tag)
    throw std::runtime_error("the keys registered as " + ckks::checksum_hex(tag) + " hold key set " + ckks::checksum_hex(set->tag()));
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
