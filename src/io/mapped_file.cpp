#include "io/mapped_file.hpp"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <csignal>
#include <cstring>
#include <mutex>

#include "indim/error.hpp"

namespace indim::detail {

namespace {

// Mapped ranges the SIGBUS handler may repair. Lock-free: the handler runs on any thread at
// any moment, so slots are claimed and read with atomics only.
struct Slot {
  std::atomic<uintptr_t> begin{0}, end{0};
  std::atomic<bool> damaged{false};
};
constexpr int kSlots = 16384;
Slot g_slots[kSlots];
uintptr_t g_page = 4096;
struct sigaction g_previous {};

void on_sigbus(int sig, siginfo_t* info, void* context) {
  const auto addr = reinterpret_cast<uintptr_t>(info->si_addr);
  for (Slot& s : g_slots) {
    const uintptr_t b = s.begin.load(std::memory_order_acquire);
    if (b == 0 || addr < b || addr >= s.end.load(std::memory_order_acquire)) continue;
    // The page is gone from the file: read zeros from here on. mmap is a plain system call, safe
    // in a signal handler; the access that faulted is retried and succeeds.
    void* page = reinterpret_cast<void*>(addr & ~(g_page - 1));
    if (::mmap(page, g_page, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0) !=
        MAP_FAILED) {
      s.damaged.store(true, std::memory_order_release);
      return;
    }
    break;
  }
  // Not one of ours (or unrepairable): behave as if indim had no handler.
  if (g_previous.sa_flags & SA_SIGINFO) {
    if (g_previous.sa_sigaction != nullptr) return g_previous.sa_sigaction(sig, info, context);
  } else if (g_previous.sa_handler != SIG_DFL && g_previous.sa_handler != SIG_IGN) {
    return g_previous.sa_handler(sig);
  }
  ::signal(SIGBUS, SIG_DFL);  // the faulting access repeats and ends the process as before
}

void install_handler() {
  static std::once_flag once;
  std::call_once(once, [] {
    g_page = static_cast<uintptr_t>(::sysconf(_SC_PAGESIZE));
    struct sigaction sa {};
    sa.sa_sigaction = on_sigbus;
    sa.sa_flags = SA_SIGINFO | SA_RESTART;
    sigemptyset(&sa.sa_mask);
    ::sigaction(SIGBUS, &sa, &g_previous);
  });
}

int register_range(const uint8_t* data, uint64_t size) {
  install_handler();
  const auto b = reinterpret_cast<uintptr_t>(data);
  for (int i = 0; i < kSlots; ++i) {
    uintptr_t expected = 0;
    if (g_slots[i].begin.compare_exchange_strong(expected, b, std::memory_order_acq_rel)) {
      g_slots[i].damaged.store(false, std::memory_order_relaxed);
      g_slots[i].end.store(b + size, std::memory_order_release);
      return i;
    }
  }
  return -1;  // over 16384 files mapped at once: this one keeps the default SIGBUS behaviour
}

void unregister_range(int slot) {
  if (slot < 0) return;
  g_slots[slot].end.store(0, std::memory_order_release);
  g_slots[slot].begin.store(0, std::memory_order_release);
}

int64_t mtime_ns(const struct stat& st) {
  return static_cast<int64_t>(st.st_mtim.tv_sec) * 1000000000 + st.st_mtim.tv_nsec;
}

}  // namespace

MappedFile::MappedFile(const std::string& path, const FileSource& files) {
  fd_ = files.open_file(path, &size_);
  struct stat st {};
  if (::fstat(fd_.get(), &st) == 0) mtime_ns_ = mtime_ns(st);
  if (size_ == 0) return;  // mmap of 0 bytes fails; an empty file is caught by the parser
  void* p = ::mmap(nullptr, size_, PROT_READ, MAP_PRIVATE, fd_.get(), 0);
  if (p == MAP_FAILED) throw BadInput(path + ": cannot map: " + std::strerror(errno));
  data_ = static_cast<const uint8_t*>(p);
  ::madvise(p, size_, MADV_SEQUENTIAL);
  slot_ = register_range(data_, size_);
}

MappedFile::~MappedFile() {
  if (data_ == nullptr) return;
  unregister_range(slot_);
  ::munmap(const_cast<uint8_t*>(data_), size_);
}

void MappedFile::check_intact(const std::string& what) const {
  if (slot_ >= 0 && g_slots[slot_].damaged.load(std::memory_order_acquire))
    throw BadInput(InputProblem::Changed,
                   what + ": part of the file vanished while being read (truncated under the run)");
  struct stat st {};
  if (::fstat(fd_.get(), &st) != 0) return;
  if (static_cast<uint64_t>(st.st_size) != size_)
    throw BadInput(InputProblem::Changed,
                   what + ": the file changed from " + std::to_string(size_) + " to " +
                       std::to_string(st.st_size) + " bytes while being read");
  if (mtime_ns(st) != mtime_ns_)
    throw BadInput(what + ": the file was modified while being read", InputProblem::Changed);
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
