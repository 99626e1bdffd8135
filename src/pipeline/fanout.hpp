// The fan-out stage: plan entries over the workers of a run (backends on threads, one per
// device stream or CPU worker), balanced by cost, each worker told ahead which inputs it reads.
#pragma once

#include <memory>
#include <vector>

#include "pipeline/unit_work.hpp"

namespace indim::detail {

/// Runs every entry of `plan` on `fleet`: in plan order on one backend, else entries assigned
/// by cost (assign_workers) and run on a thread per backend, the host's CPUs shared out among
/// them (HostThreadShare). The first failure stops the others between entries and is rethrown.
void run_fleet(std::vector<std::unique_ptr<Backend>>& fleet, const Plan& plan, UnitWork& work);

}  // namespace indim::detail
