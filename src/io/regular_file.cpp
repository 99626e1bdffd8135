#include "io/regular_file.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "indim/error.hpp"

namespace indim::detail {

namespace {

std::string kind_of(mode_t m) {
  if (S_ISDIR(m)) return "a directory";
  if (S_ISFIFO(m)) return "a FIFO";
  if (S_ISCHR(m)) return "a character device";
  if (S_ISBLK(m)) return "a block device";
  if (S_ISSOCK(m)) return "a socket";
  return "not a regular file";
}

[[noreturn]] void fail(const std::string& path, const std::string& what, int err) {
  if (err == ELOOP)
    throw BadInput(path + ": " + what + ": a loop of symbolic links", InputProblem::NotAFile);
  if (err == ENOENT) throw BadInput(path + ": no such file or directory", InputProblem::NotFound);
  throw BadInput(path + ": " + what + ": " + std::strerror(err));
}

}  // namespace

PathKind path_kind(const std::string& path) {
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0) {
    if (errno == ENOENT || errno == ENOTDIR) return PathKind::Missing;
    fail(path, "cannot stat", errno);
  }
  if (S_ISREG(st.st_mode)) return PathKind::File;
  if (S_ISDIR(st.st_mode)) return PathKind::Directory;
  return PathKind::Other;
}

Fd::~Fd() {
  if (fd_ >= 0) ::close(fd_);
}

Fd& Fd::operator=(Fd&& o) noexcept {
  if (this != &o) {
    if (fd_ >= 0) ::close(fd_);
    fd_ = o.fd_;
    o.fd_ = -1;
  }
  return *this;
}

Fd open_regular(const std::string& path, uint64_t* size) {
  // O_NONBLOCK: opening a FIFO with no writer returns at once instead of waiting for one.
  Fd f(::open(path.c_str(), O_RDONLY | O_NONBLOCK | O_CLOEXEC | O_NOCTTY));
  if (f.get() < 0) fail(path, "cannot open", errno);
  struct stat st {};
  if (::fstat(f.get(), &st) != 0) fail(path, "cannot stat", errno);
  if (!S_ISREG(st.st_mode))
    throw BadInput(path + ": is " + kind_of(st.st_mode) + ", not a file", InputProblem::NotAFile);
  if (size != nullptr) *size = static_cast<uint64_t>(st.st_size);
  return f;
}

std::string read_regular_file(const std::string& path, uint64_t max_bytes) {
  uint64_t size = 0;
  const Fd f = open_regular(path, &size);
  return read_open_file(f, path, size, max_bytes);
}

std::string read_open_file(const Fd& f, const std::string& path, uint64_t size,
                           uint64_t max_bytes) {
  if (size > max_bytes)
    throw BadInput(InputProblem::TooLarge, path + ": " + std::to_string(size) +
                                               " bytes, over the limit of " +
                                               std::to_string(max_bytes) + " bytes for this file");
  std::string out(size, '\0');
  uint64_t got = 0;
  while (got < size) {
    const ssize_t n = ::read(f.get(), out.data() + got, size - got);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) fail(path, "cannot read", errno);
    if (n == 0) break;  // shrank while being read: the parser reports what is missing
    got += static_cast<uint64_t>(n);
  }
  out.resize(got);
  return out;
}

}  // namespace indim::detail
