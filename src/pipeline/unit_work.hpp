// The per-unit stage: for one plan entry, the base decomposed once (or taken from the cache),
// then each pending fine-tune's side decomposed and compared, its records made and kept.
#pragma once

#include <atomic>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "indim/analyze.hpp"
#include "indim/cache.hpp"
#include "pipeline/run_state.hpp"
#include "plan/plan.hpp"

namespace indim::detail {

/// The cache key of each plan entry's base, hashed once by whichever thread asks first: the
/// staging loader deciding whether to copy the base, or the unit looking it up.
class BaseKeys {
 public:
  explicit BaseKeys(size_t entries) : slots_(new Slot[entries]) {}
  template <typename Make>
  const std::string& get(size_t entry, Make&& make) {
    Slot& s = slots_[entry];
    std::call_once(s.once, [&] { s.key = make(); });
    return s.key;
  }

 private:
  struct Slot {
    std::once_flag once;
    std::string key;
  };
  std::unique_ptr<Slot[]> slots_;
};

struct UnitWork {
  const AnalyzeOptions& options;
  std::vector<double> eps;          ///< the eps grid every record counts at
  DecompositionCache* cache;        ///< nullptr: none
  std::atomic<bool>& cache_writes;  ///< off after the first failed write
  RunState& state;
  BaseKeys& base_keys;  ///< one per plan entry

  /// The inputs of plan entry `index` as `backend` is told of them for staging: its byte
  /// ranges, the base's asking (on the loader's thread) whether a cache serves it.
  std::vector<StagedInput> staged_inputs(Backend& backend, const PlanEntry& entry, size_t index);
  /// The entry's pending units on `backend`, in order; stops before a unit once the run is
  /// cancelled. `index`: the entry's place in the plan.
  void run_entry(Backend& backend, const PlanEntry& entry, size_t index);

 private:
  const std::string& base_key(Backend& backend, const WorkUnit& u, size_t index);
};

}  // namespace indim::detail
