// Admission of a job against the node's memory: before a job starts, its inputs' headers are
// read and the working memory of its largest matrix estimated (host, and device with CUDA). A
// job that can never fit fails at once with the figures, instead of being killed by the kernel
// at every restart of the service.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "indim/analyze.hpp"
#include "indim/mitigate.hpp"
#include "service/serve_options.hpp"

namespace indim::service {

/// What a job needs at its peak: host bytes (every worker on its largest matrix) and device
/// bytes (one matrix), and the matrix that decides it; for a mitigate job also the disk its
/// variant folders and their archive take.
struct MemoryNeed {
  uint64_t host = 0, device = 0, disk = 0;
  std::string tensor;
  std::vector<uint64_t> shape;
};

/// The estimate for the inputs and options of `o` (reads headers only). With `m`, a mitigate
/// job's: its host peak is also six fp64 copies of its largest matrix (the variants are made
/// one matrix at a time, after the analysis), and every variant is a copy of the fine-tune's
/// weights (an adapter's factors in fp32 at rank r + k), written once as a folder and once into
/// mitigation.tar; the companion files (tokenizer, config) are not counted.
MemoryNeed memory_need(const AnalyzeOptions& o, const MitigateOptions* m = nullptr);

/// The node's physical memory in bytes.
uint64_t physical_memory();

/// Throws indim::BadInput (too-large) naming the matrix, the need and the limit when the job
/// needs more host memory than `serve.job_memory` (else the node's), or, on the CUDA backend,
/// more device memory than the largest device holds (or --gpu-mem allows); for a mitigate job
/// (`m`), also when its variants need more disk than the file system of `m->out_dir` has free.
void admit(const AnalyzeOptions& o, const ServeOptions& serve, const MitigateOptions* m = nullptr);

}  // namespace indim::service
