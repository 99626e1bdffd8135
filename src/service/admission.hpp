// Admission of a job against the node's memory: before a job starts, its inputs' headers are
// read and the working memory of its largest matrix estimated (host, and device with CUDA). A
// job that can never fit fails at once with the figures, instead of being killed by the kernel
// at every restart of the service.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "indim/analyze.hpp"
#include "service/serve_options.hpp"

namespace indim::service {

/// What a job needs at its peak: host bytes (every worker on its largest matrix) and device
/// bytes (one matrix), and the matrix that decides it.
struct MemoryNeed {
  uint64_t host = 0, device = 0;
  std::string tensor;
  std::vector<uint64_t> shape;
};

/// The estimate for the inputs and options of `o` (reads headers only).
MemoryNeed memory_need(const AnalyzeOptions& o);

/// The node's physical memory in bytes.
uint64_t physical_memory();

/// Throws indim::BadInput (too-large) naming the matrix, the need and the limit when the job
/// needs more host memory than `serve.job_memory` (else the node's), or, on the CUDA backend,
/// more device memory than the largest device holds (or --gpu-mem allows).
void admit(const AnalyzeOptions& o, const ServeOptions& serve);

}  // namespace indim::service
