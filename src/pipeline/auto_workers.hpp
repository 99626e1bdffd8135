// `--workers auto`: how many CPU workers a run takes, from its plan's matrix sizes, the CPUs
// this process may use and the memory the machine has free, so that thousands of same-shape
// mid-size matrices (the experts of a mixture) run as throughput work without the peak host
// memory outgrowing the machine.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "indim/analyze.hpp"
#include "plan/plan.hpp"

namespace indim::detail {

/// The most workers auto may pick (and the fleet it starts from): the CPUs this process may run
/// on, at most 256.
int auto_worker_cap();

/// Peak host bytes one CPU worker holds while analysing an [rows, cols] matrix by the default
/// route: the matrix in fp64 (the warm start's and the Gram's input), the Gram of the smaller
/// side and its eigenvectors and workspace (3 p^2 doubles), and the base's vectors (rows x p)
/// held across the matrix's units; a quarter more for the allocator and the rest.
uint64_t worker_peak_bytes(int64_t rows, int64_t cols);

/// The memory a run may count on: the kernel's MemAvailable, or the cgroup's limit less its
/// usage where that is lower; 0 when neither can be read.
uint64_t available_memory();

/// min(cpus, plan entries, 3/4 of `memory` over the largest matrix's peak), at least 1.
int auto_workers(const Plan& plan, int cpus, uint64_t memory);

/// With options.workers 0 (auto) and host workers: trims `fleet` to auto_workers and says
/// what it chose through `note`. Device workers (one per stream) are left as they are.
void fit_workers(std::vector<std::unique_ptr<Backend>>& fleet, const Plan& plan,
                 const AnalyzeOptions& options,
                 const std::function<void(const std::string&)>& note);

}  // namespace indim::detail
