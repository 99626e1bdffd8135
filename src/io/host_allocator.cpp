// The C library's allocator told to keep what a run frees for its next buffers (see
// analyze.hpp): a run allocates and frees buffers of tens of MB per matrix (merged matrices,
// the base's vectors read from the cache, Grams), and glibc by default maps each afresh and
// unmaps it when freed, so every matrix pays its first-touch page faults again.
#include <malloc.h>

#include "indim/analyze.hpp"

namespace indim {

void keep_freed_memory() {
#if defined(__GLIBC__)
  // Blocks under 256 MB come from the heap and go back to it (above: mapped, as before);
  // up to 1 GiB free at the heap's top stays with the process.
  mallopt(M_MMAP_THRESHOLD, 256 << 20);
  mallopt(M_TRIM_THRESHOLD, 1 << 30);
#endif
}

}  // namespace indim
