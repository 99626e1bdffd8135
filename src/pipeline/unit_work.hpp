// The per-unit stage: for one plan entry, the base decomposed once (or taken from the cache),
// then each pending fine-tune's side decomposed and compared, its records made and kept.
#pragma once

#include <atomic>
#include <vector>

#include "indim/analyze.hpp"
#include "indim/cache.hpp"
#include "pipeline/run_state.hpp"
#include "plan/plan.hpp"

namespace indim::detail {

struct UnitWork {
  const AnalyzeOptions& options;
  std::vector<double> eps;          ///< the eps grid every record counts at
  DecompositionCache* cache;        ///< nullptr: none
  std::atomic<bool>& cache_writes;  ///< off after the first failed write
  RunState& state;

  /// The entry's pending units on `backend`, in order; stops before a unit once the run is
  /// cancelled.
  void run_entry(Backend& backend, const PlanEntry& entry);
};

}  // namespace indim::detail
