#include "pipeline/auto_workers.hpp"

#include <algorithm>
#include <fstream>
#include <sstream>

#include "backend/host_threads.hpp"

namespace indim::detail {

namespace {

// "MemAvailable:   123456 kB" from /proc/meminfo, in bytes; 0 when absent.
uint64_t mem_available() {
  std::ifstream f("/proc/meminfo");
  std::string key, unit;
  uint64_t kb = 0;
  while (f >> key >> kb) {
    std::getline(f, unit);
    if (key == "MemAvailable:") return kb * 1024;
  }
  return 0;
}

// A cgroup v2 memory limit less its current usage; 0 when there is no limit.
uint64_t cgroup_room() {
  std::ifstream max("/sys/fs/cgroup/memory.max"), cur("/sys/fs/cgroup/memory.current");
  std::string m;
  uint64_t used = 0;
  if (!(max >> m) || m == "max" || !(cur >> used)) return 0;
  uint64_t limit = 0;
  std::istringstream(m) >> limit;
  return limit > used ? limit - used : 1;
}

}  // namespace

int auto_worker_cap() { return std::clamp(allowed_cpus(), 1, 256); }

uint64_t worker_peak_bytes(int64_t rows, int64_t cols) {
  const double m = static_cast<double>(rows), n = static_cast<double>(cols);
  const double p = std::min(m, n);
  return static_cast<uint64_t>(1.25 * 8.0 * (m * n + 3.0 * p * p + m * p));
}

uint64_t available_memory() {
  const uint64_t avail = mem_available(), room = cgroup_room();
  if (avail == 0) return room;
  return room == 0 ? avail : std::min(avail, room);
}

int auto_workers(const Plan& plan, int cpus, uint64_t memory) {
  uint64_t peak = 0;
  for (const PlanEntry& e : plan.entries)
    for (const WorkUnit& u : e.units) peak = std::max(peak, worker_peak_bytes(u.rows, u.cols));
  int n = std::min<int64_t>(cpus, std::max<size_t>(plan.entries.size(), 1));
  if (memory > 0 && peak > 0) n = static_cast<int>(std::min<uint64_t>(n, memory / 4 * 3 / peak));
  return std::max(n, 1);
}

void fit_workers(std::vector<std::unique_ptr<Backend>>& fleet, const Plan& plan,
                 const AnalyzeOptions& o, const std::function<void(const std::string&)>& note) {
  if (o.workers != 0 || fleet.empty()) return;
  const BackendSpec* spec = find_backend(fleet.front()->name());
  if (spec != nullptr && spec->device) return;
  const uint64_t memory = available_memory();
  const int n =
      std::min<int>(auto_workers(plan, auto_worker_cap(), memory), static_cast<int>(fleet.size()));
  fleet.resize(static_cast<size_t>(n));
  if (n > 1 && note)
    note("--workers auto: " + std::to_string(n) + " workers (" + std::to_string(allowed_cpus()) +
         " CPUs, " + std::to_string(memory >> 20) + " MiB available)");
}

}  // namespace indim::detail
