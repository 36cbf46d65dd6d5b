// Encrypted templates a `pfhe serve` keeps for matching (docs/CLI.md, "Service"): one
// file per key set and name, `DIR/<key set>/<name>.ct`, a checked ciphertext file of one
// encrypted embedding. A template belongs to the key set it was encrypted under and is
// only ever matched against that key set's probes: names are per key set, so clients
// cannot see or overwrite each other's.
#pragma once
#include <cstdint>
#include <filesystem>
#include <mutex>
#include <optional>
#include <string>

#include "runtime/bundle.h"

namespace pfhe::app {

class TemplateStore {
 public:
  explicit TemplateStore(std::filesystem::path dir);
  // A template's name, in a server's store and in `pfhe enroll`'s directory alike: letters,
  // digits, '_' and '-', at least one.
  static bool is_name_text(const std::string& name);
  // That, and at most 64 characters (what the service's routes accept).
  static bool is_name(const std::string& name);
  // Stores a checked template (one ciphertext) under its key set, written whole (a crash
  // leaves the previous template or none). True when it replaced one.
  bool put(const ckks::Context& output, const runtime::CiphertextFile& embedding, const std::string& name);
  // The template, verified as it is read; nullopt when there is none.
  std::optional<runtime::CiphertextFile> get(const ckks::Context& output, std::uint64_t key_set,
                                             const std::string& name) const;
  // False when there was none.
  bool remove(std::uint64_t key_set, const std::string& name);
  std::size_t count() const;

 private:
  std::filesystem::path path(std::uint64_t key_set, const std::string& name) const;
  std::filesystem::path dir_;
  mutable std::mutex mutex_;  // one writer per file at a time (the writer's partial file is per name)
};

}  // namespace pfhe::app
