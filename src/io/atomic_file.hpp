// Output files written under a temporary name and renamed into place, so that a failure never
// leaves a half-written output behind.
#pragma once

#include <cstdio>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace indim::detail {

class AtomicFile {
 public:
  /// Opens "<path>.tmp.<host>.<pid>.<n>.<random>" for writing: unique across processes, also of
  /// other hosts writing one shared folder. Throws indim::Error on failure.
  explicit AtomicFile(std::string path);
  /// Removes the temporary file unless publish() succeeded.
  ~AtomicFile();
  AtomicFile(const AtomicFile&) = delete;
  AtomicFile& operator=(const AtomicFile&) = delete;

  void write(const void* data, size_t n);
  void write(std::string_view s) { write(s.data(), s.size()); }
  /// Flushes, syncs and closes the temporary file; the final path is untouched.
  void finish();
  /// Renames the finished temporary file onto the final path.
  void publish();
  /// finish() then publish().
  void commit();

 private:
  std::string path_, tmp_;
  std::FILE* f_ = nullptr;
  bool done_ = false;
};

/// Writes `content` to `path` atomically.
void write_file_atomic(const std::string& path, std::string_view content);

/// Writes every (path, content) to its temporary name first and renames them into place only
/// when all are written, in the order given: a failure leaves every old file as it was.
void write_files_atomic(const std::vector<std::pair<std::string, std::string>>& files);

}  // namespace indim::detail
