// Output files written under a temporary name and renamed into place, so that a failure never
// leaves a half-written output behind.
#pragma once

#include <cstdio>
#include <string>
#include <string_view>

namespace indim::detail {

class AtomicFile {
 public:
  /// Opens "<path>.tmp.<pid>" for writing. Throws indim::Error on failure.
  explicit AtomicFile(std::string path);
  /// Removes the temporary file unless commit() succeeded.
  ~AtomicFile();
  AtomicFile(const AtomicFile&) = delete;
  AtomicFile& operator=(const AtomicFile&) = delete;

  void write(const void* data, size_t n);
  void write(std::string_view s) { write(s.data(), s.size()); }
  /// Flushes, syncs and renames onto the final path.
  void commit();

 private:
  std::string path_, tmp_;
  std::FILE* f_ = nullptr;
  bool done_ = false;
};

/// Writes `content` to `path` atomically.
void write_file_atomic(const std::string& path, std::string_view content);

}  // namespace indim::detail
