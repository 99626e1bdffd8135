// A read-only memory-mapped file: non-copyable, unmapped on destruction. A file truncated under
// its mapping raises SIGBUS on the next read of a vanished page; every MappedFile is registered
// with a SIGBUS handler that maps a zero page there instead and marks the file damaged, so the
// reader finishes and check_intact() turns the damage into indim::BadInput.
#pragma once

#include <cstdint>
#include <string>

#include "io/file_source.hpp"
#include "io/regular_file.hpp"

namespace indim::detail {

class MappedFile {
 public:
  /// Maps `path`, opened through `files`, read-only. Throws indim::BadInput when it cannot be
  /// opened or is not a file.
  explicit MappedFile(const std::string& path, const FileSource& files = plain_files());
  ~MappedFile();
  MappedFile(const MappedFile&) = delete;
  MappedFile& operator=(const MappedFile&) = delete;

  const uint8_t* data() const { return data_; }
  uint64_t size() const { return size_; }
  /// Tells the kernel the range [offset, offset+len) is no longer needed by this process.
  void release(uint64_t offset, uint64_t len) const;
  /// Starts asynchronous readahead of [offset, offset+len).
  void prefetch(uint64_t offset, uint64_t len) const;
  /// Throws indim::BadInput("<what>: ...") when the file's size or modification time changed
  /// since it was mapped, or a read found a page gone.
  void check_intact(const std::string& what) const;
  /// The modification time when it was mapped (ns since the epoch).
  int64_t modified_ns() const { return mtime_ns_; }

 private:
  Fd fd_;
  const uint8_t* data_ = nullptr;
  uint64_t size_ = 0;
  int64_t mtime_ns_ = 0;
  int slot_ = -1;  // in the SIGBUS registry; -1 when not registered
};

}  // namespace indim::detail
