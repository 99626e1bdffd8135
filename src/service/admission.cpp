#include "service/admission.hpp"

#include <sys/statvfs.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <limits>

#include "indim/backend.hpp"
#include "indim/error.hpp"
#include "indim/peft.hpp"
#include "indim/tuned.hpp"
#include "pipeline/inputs.hpp"

namespace indim::service {

namespace fs = std::filesystem;

namespace {

std::string gib(uint64_t bytes) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.1f GiB", static_cast<double>(bytes) / (1ull << 30));
  return buf;
}

// The algorithm whose working set bounds the job's: as asked, else the backends' default.
std::string algo_of(const AnalyzeOptions& o) { return o.algo == "auto" ? "gram64" : o.algo; }

bool may_use_cuda(const AnalyzeOptions& o) {
  return o.backend == "cuda" || (o.backend == "auto" && !cuda_memory_info().empty());
}

uint64_t largest_device(const AnalyzeOptions& o) {
  uint64_t best = 0;
  for (const DeviceMemoryInfo& d : cuda_memory_info()) best = std::max(best, d.total_bytes);
  return o.gpu_mem > 0 ? std::min(best, o.gpu_mem) : best;
}

// Bytes free to an unprivileged writer on the file system of `dir` (or of its nearest existing
// parent); the largest value when it cannot be asked.
uint64_t free_disk(const std::string& dir) {
  std::error_code ec;
  fs::path p = fs::absolute(dir, ec);
  while (!p.empty() && !fs::exists(p, ec) && p.has_parent_path() && p != p.parent_path())
    p = p.parent_path();
  struct statvfs st {};
  if (::statvfs(p.c_str(), &st) != 0) return std::numeric_limits<uint64_t>::max();
  return static_cast<uint64_t>(st.f_bavail) * static_cast<uint64_t>(st.f_frsize);
}

// A variant's weights: the fine-tune's size; an adapter's factors in fp32 (from bf16 at worst)
// at rank r + k (each module gains up to k intruder directions) over its smallest rank r.
uint64_t variant_bytes(const TunedInput& t, int k) {
  const uint64_t bytes = t.checkpoint().total_bytes();
  if (!t.is_adapter()) return bytes;
  int r = t.adapter()->config().r;
  for (const auto& [module, rank] : t.adapter()->config().rank_pattern) r = std::min(r, rank);
  r = std::max(r, 1);
  return bytes * 2 * static_cast<uint64_t>(r + std::max(k, 0)) / static_cast<uint64_t>(r);
}

}  // namespace

uint64_t physical_memory() {
  const long pages = ::sysconf(_SC_PHYS_PAGES), page = ::sysconf(_SC_PAGESIZE);
  return pages > 0 && page > 0 ? static_cast<uint64_t>(pages) * static_cast<uint64_t>(page) : 0;
}

MemoryNeed memory_need(const AnalyzeOptions& o, const MitigateOptions* m) {
  const detail::RunInputs in(o, [](const std::string&) {});
  MemoryNeed need;
  uint64_t largest = 0;  // elements of the largest selected matrix
  for (const MatchTable& table : in.tables)
    for (const MatchedPair& p : table.pairs) {
      const std::vector<uint64_t>& shape = p.base.info->shape;
      if (!p.selected || shape.size() < 2) continue;
      const auto rows = static_cast<int64_t>(shape[shape.size() - 2]);
      const auto cols = static_cast<int64_t>(shape.back());
      largest = std::max(largest, static_cast<uint64_t>(rows) * static_cast<uint64_t>(cols));
      const uint64_t bytes = cuda_bytes_needed(algo_of(o), o.precision, rows, cols, 0);
      if (bytes <= need.device) continue;
      need.device = bytes;
      need.tensor = p.base_name;
      need.shape = shape;
    }
  need.host = need.device * static_cast<uint64_t>(std::max(1, o.workers));
  if (m == nullptr) return need;
  need.host = std::max(need.host, 6 * sizeof(double) * largest);
  need.disk =
      2 * variant_bytes(in.tuned.front(), o.k) * m->lambdas.size() * (1 + m->controls.size());
  return need;
}

void admit(const AnalyzeOptions& o, const ServeOptions& serve, const MitigateOptions* m) {
  const MemoryNeed need = memory_need(o, m);
  const std::string matrix = "tensor '" + need.tensor + "' " + shape_text(need.shape);
  const uint64_t host = serve.job_memory > 0 ? serve.job_memory : physical_memory();
  if (host > 0 && need.host > host)
    throw BadInput(InputProblem::TooLarge,
                   "the job needs about " + gib(need.host) + " of host memory for " + matrix +
                       " (" + std::to_string(std::max(1, o.workers)) + " worker(s)), over the " +
                       gib(host) + " a job may use here (--job-memory); it can never run on " +
                       "this service");
  if (m != nullptr) {
    const uint64_t free = free_disk(m->out_dir);
    if (need.disk > free)
      throw BadInput(InputProblem::TooLarge,
                     "the job's variants need about " + gib(need.disk) + " of disk (" +
                         std::to_string(m->lambdas.size()) + " lambda(s), each with its " +
                         "controls, as folders and as mitigation.tar), over the " + gib(free) +
                         " free for the service's state; fewer lambdas or controls, or " +
                         "--include, make it smaller");
  }
  if (!may_use_cuda(o)) return;
  const uint64_t device = largest_device(o);
  if (device > 0 && need.device > device)
    throw BadInput(InputProblem::TooLarge,
                   "the job needs about " + gib(need.device) + " of GPU memory for " + matrix +
                       ", over the " + gib(device) + " of the largest device (or --gpu-mem); " +
                       "it can never run on this service");
}

}  // namespace indim::service
