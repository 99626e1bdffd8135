// The host threads one worker's arithmetic may use. A run's workers share the CPUs this
// process may run on (its affinity mask: a Slurm allocation's or a container's cpuset) rather
// than each one starting a thread per CPU: with two workers on two cores, OpenBLAS's pool and
// the thin kernels' helpers of both workers would otherwise contend for the same cores, and
// the spinning of the idle pool steals them from the other worker (bench/RESULTS.md).
#pragma once

namespace indim::detail {

/// @brief The CPUs this process may run on (at least 1).
int allowed_cpus();

/// @brief Threads one worker's host kernels may use: allowed_cpus(), or its share while a
/// HostThreadShare is in force.
int host_threads();

/// @brief For its lifetime, splits the allowed CPUs among `workers`: host_threads() and
/// OpenBLAS's thread count become max(1, CPUs / workers) (never above the count OpenBLAS had,
/// which honours OPENBLAS_NUM_THREADS); both are restored when it ends. Process-wide, like
/// OpenBLAS's own setting; with one worker it changes nothing.
class HostThreadShare {
 public:
  explicit HostThreadShare(int workers);
  ~HostThreadShare();
  HostThreadShare(const HostThreadShare&) = delete;
  HostThreadShare& operator=(const HostThreadShare&) = delete;

 private:
  bool active_ = false;
  int blas_before_ = 0, threads_before_ = 0;
};

}  // namespace indim::detail
