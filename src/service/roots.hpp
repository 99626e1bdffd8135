// The folders a service may read: every path in a request, and every file read through it
// (a folder's entries, a shard index's shards), must resolve under one of them after symbolic
// links and "..", or the request is refused (403). A Hugging Face id resolves only in the roots,
// each taken as a hub cache.
#pragma once

#include <string>
#include <vector>

namespace indim::service {

class RootSet {
 public:
  /// Each root must be an existing directory; throws indim::UsageError naming one that is not.
  explicit RootSet(const std::vector<std::string>& roots);

  /// The path a request's `path` names: a relative path is taken inside the first root. Throws
  /// ApiError 403 naming the path when it, or a file read through it, resolves outside every
  /// root, and 400 when it does not exist.
  std::string confine(const std::string& path) const;
  /// What analyze is given for a request's `path`: the confined path, or a hub id
  /// (ORG/NAME[@REV], resolved in the roots as hub caches) as it is, once its snapshot is
  /// confined.
  std::string analyze_arg(const std::string& path) const;

  /// The roots, canonical: also the hub caches where request ids resolve.
  const std::vector<std::string>& roots() const { return shown_; }

 private:
  bool inside(const std::string& resolved) const;
  bool is_hub_id(const std::string& path) const;
  void check_file(const std::string& shown, const std::string& file) const;
  void check_index(const std::string& shown, const std::string& index) const;
  std::vector<std::string> roots_;  ///< canonical, without a trailing slash ("/" is "")
  std::vector<std::string> shown_;  ///< canonical
};

}  // namespace indim::service
