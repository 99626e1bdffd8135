// The folders a service may read, each opened once as a directory descriptor
// (detail::ConfinedFiles): a request path is resolved beneath its root, checked there as the
// reader will open it (a folder's entries, a shard index's shards, config.json beside a file),
// within a budget of work, and a job reads every file through the same descriptors, never by
// name again. A Hugging Face id resolves only in the roots, each taken as a hub cache. A refusal
// names the request's path only: never where a link points, never whether an outside path
// exists.
#pragma once

#include <chrono>
#include <cstdint>
#include <string>
#include <vector>

#include "io/confined_files.hpp"

namespace indim::service {

/// The work one request may make the service do to check its paths: folder entries looked at,
/// index bytes read, and a deadline. Beyond any, the request is refused (413) naming the limit.
struct InspectBudget {
  static constexpr size_t kEntries = 100000;
  static constexpr uint64_t kBytes = 64ull << 20;
  static constexpr std::chrono::seconds kTime{10};
  size_t entries = kEntries;
  uint64_t bytes = kBytes;
  std::chrono::steady_clock::time_point deadline = std::chrono::steady_clock::now() + kTime;
};

class RootSet {
 public:
  /// Each root must be an existing directory; throws indim::UsageError naming one that is not.
  explicit RootSet(const std::vector<std::string>& roots);

  /// What analyze is given for a request's `path`: the path under its root (a relative one is
  /// inside the first root), or a hub id as it is. Opens at most the path itself. Throws
  /// ApiError 400 for a path with a NUL byte or a name over 255 bytes, 403 for one outside
  /// every root.
  std::string analyze_arg(const std::string& path) const;

  /// A request path resolved beneath its root: the path, and the identity of what it names.
  struct Located {
    std::string path;
    uint64_t device = 0, inode = 0;
    bool directory = false;
    bool same_as(const Located& o) const { return device == o.device && inode == o.inode; }
  };
  /// Resolves `path` (a hub id through its refs and snapshot). Throws ApiError 400 (missing,
  /// malformed), 403 (it or its resolution leaves the roots).
  Located locate(const std::string& path) const;
  /// Checks what the reader will open through `where` (a folder's entries, a shard index's
  /// shards, config.json beside a file) within `budget`. Throws ApiError 403 naming `path` for
  /// one that leaves the roots, 400 for a file name that is not UTF-8, 413 past the budget.
  void inspect(const std::string& path, const Located& where, InspectBudget& budget) const;

  /// The roots, canonical: also the hub caches where request ids resolve.
  const std::vector<std::string>& roots() const { return files_.roots(); }
  /// Every job's files are opened through this.
  const detail::ConfinedFiles& files() const { return files_; }

 private:
  bool is_hub_id(const std::string& path) const;
  void inspect_entry(const std::string& path, const std::string& dir, const std::string& name,
                     InspectBudget& budget) const;
  void inspect_index(const std::string& path, const std::string& index,
                     InspectBudget& budget) const;
  detail::ConfinedFiles files_;
};

}  // namespace indim::service
