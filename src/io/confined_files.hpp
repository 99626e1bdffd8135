// Files opened only beneath root folders, by descriptor: each root is opened once as a directory
// descriptor, and every path is opened relative to it with openat2(RESOLVE_BENEATH |
// RESOLVE_NO_MAGICLINKS), or, where the kernel has no openat2 (or for an absolute symbolic link,
// which openat2 refuses beneath a root), by a walk of one component at a time with O_NOFOLLOW
// that reads each link itself and refuses any that leaves the root. A link that stays inside
// works; nothing outside is ever opened, and a refusal never says where a link points or whether
// an outside path exists. The service reads every job's inputs through one of these.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "io/file_source.hpp"

namespace indim::detail {

class ConfinedFiles final : public FileSource {
 public:
  /// Opens each root (canonical absolute paths) as a directory descriptor. Throws
  /// indim::UsageError naming one that is not a directory.
  explicit ConfinedFiles(const std::vector<std::string>& roots);

  /// A relative path names nothing here (Missing); an absolute one outside every root, or one
  /// whose resolution leaves its root, is indim::BadInput (forbidden).
  PathKind kind(const std::string& path) const override;
  Fd open_file(const std::string& path, uint64_t* size = nullptr) const override;
  std::vector<std::string> list(const std::string& dir, size_t max) const override;

  /// What a path resolves to beneath its root: its kind and its identity (device and inode),
  /// so that two names of one file are known as one. Throws as open_file.
  struct Identity {
    PathKind kind = PathKind::Missing;
    uint64_t device = 0, inode = 0;
  };
  Identity identify(const std::string& path) const;

  /// The root `path` lies under (lexically), or -1.
  int root_of(const std::string& path) const;
  const std::vector<std::string>& roots() const { return roots_; }

  /// Resolves by the component walk only (the fallback for kernels without openat2; tests).
  void walk_only(bool on) { walk_only_ = on; }

 private:
  Fd open_beneath(const std::string& path, int flags) const;
  std::vector<std::string> roots_;  ///< canonical, without a trailing slash ("/" stays "/")
  std::vector<Fd> fds_;             ///< O_PATH | O_DIRECTORY
  bool walk_only_ = false;
};

}  // namespace indim::detail
