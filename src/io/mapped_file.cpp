#include "io/mapped_file.hpp"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "indim/error.hpp"

namespace indim::detail {

namespace {
// Closes the descriptor on every path out of the constructor.
struct Fd {
  int fd;
  ~Fd() {
    if (fd >= 0) ::close(fd);
  }
};
}  // namespace

MappedFile::MappedFile(const std::string& path) {
  Fd f{::open(path.c_str(), O_RDONLY | O_CLOEXEC)};
  if (f.fd < 0) throw BadInput(path + ": cannot open: " + std::strerror(errno));
  struct stat st {};
  if (::fstat(f.fd, &st) != 0) throw BadInput(path + ": cannot stat: " + std::strerror(errno));
  if (!S_ISREG(st.st_mode)) throw BadInput(path + ": not a regular file");
  size_ = static_cast<uint64_t>(st.st_size);
  if (size_ == 0) return;  // mmap of 0 bytes fails; an empty file is caught by the parser
  void* p = ::mmap(nullptr, size_, PROT_READ, MAP_PRIVATE, f.fd, 0);
  if (p == MAP_FAILED) throw BadInput(path + ": cannot map: " + std::strerror(errno));
  data_ = static_cast<const uint8_t*>(p);
  ::madvise(p, size_, MADV_SEQUENTIAL);
}

MappedFile::~MappedFile() {
  if (data_ != nullptr) ::munmap(const_cast<uint8_t*>(data_), size_);
}

void MappedFile::release(uint64_t offset, uint64_t len) const {
  if (data_ == nullptr || len == 0) return;
  const uint64_t page = static_cast<uint64_t>(::sysconf(_SC_PAGESIZE));
  // Only whole pages inside the range: neighbours may still be in use.
  uint64_t first = (offset + page - 1) / page * page;
  uint64_t last = (offset + len) / page * page;
  if (last > first) ::madvise(const_cast<uint8_t*>(data_) + first, last - first, MADV_DONTNEED);
}

void MappedFile::prefetch(uint64_t offset, uint64_t len) const {
  if (data_ == nullptr || len == 0 || offset >= size_) return;
  const uint64_t page = static_cast<uint64_t>(::sysconf(_SC_PAGESIZE));
  const uint64_t first = offset / page * page;
  const uint64_t end = std::min(size_, offset + len);
  ::madvise(const_cast<uint8_t*>(data_) + first, end - first, MADV_WILLNEED);
}

}  // namespace indim::detail
