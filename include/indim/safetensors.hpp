// safetensors reading (validated, memory-mapped, zero-copy) and writing.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "indim/dtype.hpp"

namespace indim {

/// @brief One tensor entry of a safetensors header. Offsets are relative to the byte buffer.
struct TensorInfo {
  std::string name;
  DType dtype = DType::F32;
  std::vector<uint64_t> shape;
  uint64_t begin = 0;
  uint64_t end = 0;
  uint64_t numel() const;
  uint64_t nbytes() const { return end - begin; }
};

/// @brief A shape as messages and listings print it: "[4096, 11008]".
std::string shape_text(const std::vector<uint64_t>& shape);

/// @brief A parsed and fully validated safetensors header.
struct SafetensorsHeader {
  uint64_t header_size = 0;         ///< N, the JSON length
  std::vector<TensorInfo> tensors;  ///< sorted by data offset
  std::map<std::string, std::string> metadata;
  std::vector<std::string> warnings;  ///< e.g. unknown fields in a tensor entry
  uint64_t data_start() const { return 8 + header_size; }
};

/// @brief Validates the whole file image `data[0, size)` in the reference reader's order and
/// returns its header. `path` is used in error messages only. Throws indim::BadInput.
SafetensorsHeader parse_safetensors(const uint8_t* data, uint64_t size, const std::string& path);

namespace detail {
class MappedFile;
class FileSource;
}  // namespace detail

/// @brief A validated, read-only, memory-mapped safetensors file.
class SafetensorsFile {
 public:
  /// @brief Maps and validates `path`, opened through `files` (nullptr: as the path says).
  /// Throws indim::BadInput naming the file and problem.
  static std::shared_ptr<SafetensorsFile> open(const std::string& path,
                                               const detail::FileSource* files = nullptr);

  const std::string& path() const { return path_; }
  uint64_t file_size() const;
  /// @brief Its modification time when it was opened (seconds since the epoch).
  int64_t mtime() const;
  const SafetensorsHeader& header() const { return header_; }
  const std::vector<TensorInfo>& tensors() const { return header_.tensors; }
  /// @brief The entry called `name`, or nullptr.
  const TensorInfo* find(const std::string& name) const;
  /// @brief Pointer to a tensor's bytes inside the mapping (not necessarily aligned).
  const uint8_t* data(const TensorInfo& t) const;
  /// @brief Drops the tensor's pages from this process's resident set (they stay in page cache).
  void release(const TensorInfo& t) const;
  /// @brief Asks the kernel to start reading the tensor's pages now (readahead), so that the
  /// read overlaps the work on the tensor before it.
  void prefetch(const TensorInfo& t) const;
  /// @brief Throws indim::BadInput naming the file and tensor when the file changed (size or
  /// modification time) since it was opened, or a read of its mapping found a page gone (the
  /// file was truncated under a running analysis). Reads of vanished pages see zeros instead of
  /// killing the process with SIGBUS; a caller checks after reading that nothing was damaged.
  void check_intact(const TensorInfo& t) const;

 private:
  SafetensorsFile() = default;
  std::string path_;
  std::shared_ptr<detail::MappedFile> map_;
  SafetensorsHeader header_;
  std::map<std::string, size_t> index_;
};

/// @brief A tensor to write: raw little-endian bytes in the given dtype.
struct TensorData {
  std::string name;
  DType dtype = DType::F32;
  std::vector<uint64_t> shape;
  std::vector<uint8_t> bytes;
};

/// @brief Writes a safetensors file (header padded with spaces to a multiple of 8) through a
/// temporary name and a rename. Throws indim::Error on I/O failure or inconsistent sizes.
void write_safetensors(const std::string& path, const std::vector<TensorData>& tensors,
                       const std::map<std::string, std::string>& metadata = {{"format", "pt"}});

/// @brief Encodes floats as `dtype` (F32, F64, F16 or BF16) little-endian bytes.
std::vector<uint8_t> encode_floats(const std::vector<float>& values, DType dtype);

}  // namespace indim
