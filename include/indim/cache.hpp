// On-disk cache of base decompositions, so that analysing many fine-tunes of one base pays for
// the base once, across invocations too.
#pragma once

#include <cstdint>
#include <list>
#include <map>
#include <memory>
#include <mutex>
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
  /// @brief Whether an entry under `key` exists (a regular file; not read or checked: load()
  /// may still find it damaged).
  bool has(const std::string& key) const;
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

/// @brief Base decompositions kept in host memory between runs of one process (the service's
/// jobs), in front of the on-disk cache and under the same keys: a run on a base another run
/// just used reads nothing from the cache directory. Least recently used entries go first once
/// the held vectors pass `max_bytes`. Thread-safe.
class DecompositionMemory {
 public:
  explicit DecompositionMemory(uint64_t max_bytes) : max_bytes_(max_bytes) {}

  /// @brief The decomposition under `key`, or nullptr; a hit marks it recently used.
  std::shared_ptr<const Decomposition> get(const std::string& key);
  /// @brief Whether `key` is held, without counting a hit or marking it used.
  bool has(const std::string& key) const;
  /// @brief Keeps `d` under `key` (a decomposition larger than the bound is not kept).
  void put(const std::string& key, std::shared_ptr<const Decomposition> d);

  /// @brief Where each base decomposition of the runs using this memory came from.
  struct Stats {
    uint64_t memory_hits = 0, disk_hits = 0, misses = 0;
    uint64_t bytes = 0, entries = 0;
  };
  Stats stats() const;
  /// @brief Counts a base decomposition read from the disk cache, or computed.
  void count_disk_hit();
  void count_miss();

  /// @brief The bytes a decomposition holds (values and vectors).
  static uint64_t bytes_of(const Decomposition& d);

 private:
  struct Entry {
    std::shared_ptr<const Decomposition> d;
    uint64_t bytes = 0;
    std::list<std::string>::iterator age;
  };
  mutable std::mutex mu_;
  uint64_t max_bytes_;
  std::map<std::string, Entry> entries_;
  std::list<std::string> order_;  ///< most recently used first
  Stats stats_;
};

}  // namespace indim
