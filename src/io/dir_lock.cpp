#include "io/dir_lock.hpp"

#include <fcntl.h>
#include <sys/file.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <ctime>
#include <filesystem>

#include "indim/error.hpp"

namespace indim::detail {

namespace {

std::string holder_of(int fd) {
  char buf[512] = {};
  const ssize_t n = ::pread(fd, buf, sizeof buf - 1, 0);
  std::string s = n > 0 ? std::string(buf, static_cast<size_t>(n)) : std::string();
  while (!s.empty() && (s.back() == '\n' || s.back() == '\0')) s.pop_back();
  return s.empty() ? "another indim process" : s;
}

}  // namespace

DirLock::DirLock(const std::string& dir, const std::string& what) {
  const std::string path = (std::filesystem::path(dir) / kFileName).string();
  fd_ = Fd(::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK, 0644));
  if (fd_.get() < 0) throw Error(path + ": cannot create the lock file: " + std::strerror(errno));
  if (::flock(fd_.get(), LOCK_EX | LOCK_NB) != 0) {
    if (errno == EWOULDBLOCK)
      throw Error(dir + ": in use by " + holder_of(fd_.get()) +
                  "; wait for it to finish or choose another folder");
    throw Error(path + ": cannot lock: " + std::strerror(errno));
  }
  char when[32];
  const std::time_t now = std::time(nullptr);
  std::strftime(when, sizeof when, "%Y-%m-%dT%H:%M:%SZ", std::gmtime(&now));
  const std::string me =
      "pid " + std::to_string(::getpid()) + " (" + what + ", since " + when + ")\n";
  if (::ftruncate(fd_.get(), 0) != 0 ||
      ::pwrite(fd_.get(), me.data(), me.size(), 0) != static_cast<ssize_t>(me.size()))
    throw Error(path + ": cannot write the lock file: " + std::strerror(errno));
}

}  // namespace indim::detail
