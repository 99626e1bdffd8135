// A read-only memory-mapped file: non-copyable, unmapped on destruction.
#pragma once

#include <cstdint>
#include <string>

namespace indim::detail {

class MappedFile {
 public:
  /// Maps `path` read-only. Throws indim::BadInput when it cannot be opened or is not a file.
  explicit MappedFile(const std::string& path);
  ~MappedFile();
  MappedFile(const MappedFile&) = delete;
  MappedFile& operator=(const MappedFile&) = delete;

  const uint8_t* data() const { return data_; }
  uint64_t size() const { return size_; }
  /// Tells the kernel the range [offset, offset+len) is no longer needed by this process.
  void release(uint64_t offset, uint64_t len) const;
  /// Starts asynchronous readahead of [offset, offset+len).
  void prefetch(uint64_t offset, uint64_t len) const;

 private:
  const uint8_t* data_ = nullptr;
  uint64_t size_ = 0;
};

}  // namespace indim::detail
