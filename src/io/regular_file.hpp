// Opening untrusted paths: a FIFO or a device in place of a checkpoint or config would block
// open() or read() forever, and a directory would read as empty. Everything indim reads goes
// through these, which open without blocking and refuse anything but a regular file.
#pragma once

#include <cstdint>
#include <string>

namespace indim::detail {

enum class PathKind { Missing, File, Directory, Other };

/// What `path` is, following symbolic links. Missing for ENOENT/ENOTDIR; throws indim::BadInput
/// naming the path for any other failure (a symbolic link loop, no permission).
PathKind path_kind(const std::string& path);

/// An owned file descriptor.
class Fd {
 public:
  explicit Fd(int fd = -1) : fd_(fd) {}
  ~Fd();
  Fd(Fd&& o) noexcept : fd_(o.fd_) { o.fd_ = -1; }
  Fd& operator=(Fd&& o) noexcept;
  Fd(const Fd&) = delete;
  Fd& operator=(const Fd&) = delete;
  int get() const { return fd_; }
  /// Gives the descriptor up without closing it.
  int release() {
    const int fd = fd_;
    fd_ = -1;
    return fd;
  }

 private:
  int fd_;
};

/// Opens `path` read-only without blocking; throws indim::BadInput naming the path unless it is
/// a regular file. `size` receives its size.
Fd open_regular(const std::string& path, uint64_t* size = nullptr);

/// The whole of a regular file of at most `max_bytes` bytes. Throws indim::BadInput naming the
/// file when it is missing, not a regular file, or larger (saying the limit).
std::string read_regular_file(const std::string& path, uint64_t max_bytes);
/// The same of a file opened already, of `size` bytes, called `path` in messages.
std::string read_open_file(const Fd& f, const std::string& path, uint64_t size, uint64_t max_bytes);

/// Documented limits on the JSON files indim reads.
constexpr uint64_t kMaxShardIndexBytes = 64ull << 20;  ///< *.safetensors.index.json
constexpr uint64_t kMaxConfigBytes = 4ull << 20;       ///< config.json, adapter_config.json

}  // namespace indim::detail
