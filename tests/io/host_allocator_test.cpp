// keep_freed_memory: a 48 MB buffer freed and allocated again is served from memory the
// process already touched, with no fresh page faults (glibc otherwise maps and unmaps every
// block past 32 MB, so each one is faulted in anew).
#include <gtest/gtest.h>
#include <sys/resource.h>

#include <cstring>
#include <memory>

#include "indim/analyze.hpp"

namespace {

long minor_faults() {
  rusage u{};
  getrusage(RUSAGE_SELF, &u);
  return u.ru_minflt;
}

// Minor faults while a fresh block of `bytes` is allocated, written whole and freed.
long faults_of_a_block(size_t bytes) {
  const long before = minor_faults();
  {
    std::unique_ptr<char[]> p(new char[bytes]);
    std::memset(p.get(), 1, bytes);
    volatile char sink = p[bytes - 1];
    (void)sink;
  }
  return minor_faults() - before;
}

}  // namespace

TEST(HostAllocator, AFreedBufferIsReusedWithoutFreshFaults) {
#if !defined(__GLIBC__)
  GTEST_SKIP() << "glibc only";
#endif
  indim::keep_freed_memory();
  constexpr size_t kBytes = size_t{48} << 20;  // 12288 pages of 4 KB
  const long first = faults_of_a_block(kBytes);
  // Transparent huge pages set to "always" fault 2 MB at a time: too few to tell apart.
  if (first < 1000) GTEST_SKIP() << "the first block took only " << first << " faults";
  const long second = faults_of_a_block(kBytes);
  EXPECT_LT(second, first / 20) << "first " << first << ", second " << second;
}
