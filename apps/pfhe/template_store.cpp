#include "template_store.h"

#include <algorithm>
#include <stdexcept>
#include <vector>

#include "ckks/checksum.h"

namespace pfhe::app {

namespace fs = std::filesystem;

TemplateStore::TemplateStore(fs::path dir) : dir_(std::move(dir)) {
  fs::create_directories(dir_);
  // A write cut off by a crash left only its partial file (ckks::FileWriter renames when complete).
  std::vector<fs::path> partial;
  for (const auto& entry : fs::recursive_directory_iterator(dir_))
    if (entry.path().extension() == ".partial") partial.push_back(entry.path());
  for (const fs::path& p : partial) fs::remove(p);
}

bool TemplateStore::is_name_text(const std::string& name) {
  return !name.empty() && std::all_of(name.begin(), name.end(), [](char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' || c == '-';
  });
}

bool TemplateStore::is_name(const std::string& name) { return name.size() <= 64 && is_name_text(name); }

fs::path TemplateStore::path(std::uint64_t key_set, const std::string& name) const {
  if (!is_name(name)) throw std::invalid_argument("a template name is 1 to 64 letters, digits, '_' and '-'");
  return dir_ / ckks::checksum_hex(key_set) / (name + ".ct");
}

bool TemplateStore::put(const ckks::Context& output, const runtime::CiphertextFile& embedding, const std::string& name) {
  if (embedding.ciphertexts.size() != 1)
    throw std::invalid_argument("a template is one encrypted embedding (one ciphertext)");
  const fs::path p = path(embedding.key_set, name);
  const std::lock_guard lock(mutex_);
  fs::create_directories(p.parent_path());
  const bool replaced = fs::exists(p);
  runtime::write_ciphertexts(p.string(), output, embedding);
  return replaced;
}

std::optional<runtime::CiphertextFile> TemplateStore::get(const ckks::Context& output, std::uint64_t key_set,
                                                          const std::string& name) const {
  const fs::path p = path(key_set, name);
  if (!fs::exists(p)) return std::nullopt;
  return runtime::read_ciphertexts(p.string(), output);
}

bool TemplateStore::remove(std::uint64_t key_set, const std::string& name) {
  const fs::path p = path(key_set, name);
  const std::lock_guard lock(mutex_);
  return fs::remove(p);
}

std::size_t TemplateStore::count() const {
  const std::lock_guard lock(mutex_);
  std::size_t n = 0;
  for (const auto& entry : fs::recursive_directory_iterator(dir_))
    if (entry.path().extension() == ".ct") ++n;
  return n;
}

}  // namespace pfhe::app
