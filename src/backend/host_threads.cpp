#include "backend/host_threads.hpp"

#include <sched.h>

#include <algorithm>
#include <atomic>
#include <thread>

// OpenBLAS's own thread control (its cblas.h has them; a reference cblas.h does not, and the
// library linked is OpenBLAS either way: CMakeLists.txt).
extern "C" {
int openblas_get_num_threads(void);
void openblas_set_num_threads(int);
}

namespace indim::detail {

namespace {

// 0: no share in force.
std::atomic<int> g_share{0};

}  // namespace

int allowed_cpus() {
  cpu_set_t set;
  CPU_ZERO(&set);
  if (sched_getaffinity(0, sizeof set, &set) == 0) return std::max(1, CPU_COUNT(&set));
  return static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
}

int host_threads() {
  const int share = g_share.load();
  return share > 0 ? share : allowed_cpus();
}

HostThreadShare::HostThreadShare(int workers) {
  if (workers <= 1) return;
  active_ = true;
  const int each = std::max(1, allowed_cpus() / workers);
  threads_before_ = g_share.exchange(each);
  blas_before_ = openblas_get_num_threads();
  openblas_set_num_threads(std::min(each, std::max(1, blas_before_)));
}

HostThreadShare::~HostThreadShare() {
  if (!active_) return;
  openblas_set_num_threads(blas_before_);
  g_share.store(threads_before_);
}

}  // namespace indim::detail
