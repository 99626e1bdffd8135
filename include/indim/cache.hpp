// On-disk cache of base decompositions, so that analysing many fine-tunes of one base pays for
// the base once, across invocations too.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "indim/backend.hpp"

namespace indim {

/// @brief A directory of `<key>.isvd` files. Keys hash the tensor's bytes (XXH3-128) with
/// everything else the decomposition depends on (shape, dtype, side, backend, algorithm,
/// precision, layout, part). Files are written under a temporary name and renamed, carry an
/// XXH3-64 checksum, and a file that fails its checks is removed and recomputed. The total size
/// is kept under `max_bytes` by removing the least recently used files. Every fault of the cache
/// (unwritable directory, unreadable entry) degrades to recomputing, never to a failed run.
class DecompositionCache {
 public:
  DecompositionCache(std::string dir, uint64_t max_bytes);

  /// @brief $XDG_CACHE_HOME/indim, else $HOME/.cache/indim.
  static std::string default_dir();
  /// @brief Parses sizes like "20G", "512M", "1048576". Throws indim::UsageError naming `flag`.
  static uint64_t parse_size(const std::string& text, const std::string& flag = "--cache-max");

  const std::string& dir() const { return dir_; }
  /// @brief The key of `n` bytes decomposed under `context`.
  static std::string key(const uint8_t* bytes, uint64_t n, const std::string& context);
  /// @brief The cached decomposition, or nullopt. An entry that is damaged, inconsistent or not
  /// a regular file is a miss (`warning` says so; a damaged file is removed, and any entry is
  /// replaced by the next store). A hit marks the file recently used.
  std::optional<Decomposition> load(const std::string& key, std::string* warning) const;
  /// @brief Stores atomically, then evicts down to the size bound. `label` names the tensor in
  /// `indim cache ls`. A cache is an optimisation: a failed write returns false with `warning`
  /// set, and never throws for I/O.
  bool store(const std::string& key, const Decomposition& d, const std::string& label,
             std::string* warning = nullptr) const;
  /// @brief Why the directory cannot serve as a cache (not creatable, not writable), or "".
  /// An unusable cache loads nothing and stores nothing.
  const std::string& unusable() const { return unusable_; }

  struct Entry {
    std::string key;
    std::string label;
    uint64_t bytes = 0;
    int64_t mtime = 0;  ///< last use, nanoseconds since the epoch
  };
  /// @brief Entries, most recently used first.
  std::vector<Entry> list() const;
  /// @brief Removes every entry; returns how many.
  int clear() const;

 private:
  std::string path_of(const std::string& key) const;
  void evict(const std::string& keep) const;
  std::string dir_;
  uint64_t max_bytes_;
  std::string unusable_;
};

}  // namespace indim
