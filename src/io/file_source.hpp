// Where a run opens its input files from. The readers (checkpoint, shard index, adapter, hub
// cache, config.json) open every file, list every folder and ask what every path is through a
// FileSource: the plain one takes paths as given; a confined one (confined_files.hpp) opens
// each beneath a root's directory descriptor, so that what a service checked is what it reads.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "io/regular_file.hpp"

namespace indim::detail {

class FileSource {
 public:
  virtual ~FileSource() = default;
  /// What `path` is, following symbolic links. Missing for ENOENT/ENOTDIR; throws
  /// indim::BadInput naming the path for any other failure.
  virtual PathKind kind(const std::string& path) const = 0;
  /// Opens a regular file read-only without blocking; throws indim::BadInput naming the path
  /// unless it is one. `size` receives its size.
  virtual Fd open_file(const std::string& path, uint64_t* size = nullptr) const = 0;
  /// The names in directory `dir` (not "." and ".."), at most `max`, unsorted. Throws
  /// indim::BadInput naming the directory when it cannot be listed.
  virtual std::vector<std::string> list(const std::string& dir, size_t max) const = 0;
};

/// Paths as given (what `indim analyze` and the library do).
const FileSource& plain_files();

/// `files`, or plain_files() for nullptr.
inline const FileSource& files_or_plain(const FileSource* files) {
  return files != nullptr ? *files : plain_files();
}

/// The whole of a regular file of at most `max_bytes`, opened through `files`. Throws
/// indim::BadInput as read_regular_file does.
std::string read_file(const FileSource& files, const std::string& path, uint64_t max_bytes);

/// The names of an open directory, at most `max`. Throws indim::BadInput naming `shown`.
std::vector<std::string> list_directory(Fd dir, const std::string& shown, size_t max);

}  // namespace indim::detail
