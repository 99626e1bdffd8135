// The results stage (see outputs.cpp).
#pragma once

#include <map>
#include <memory>

#include "indim/analyze.hpp"
#include "pipeline/run_state.hpp"
#include "plan/plan.hpp"

namespace indim::detail {

/// Fills res.records (plan order: fine-tune, then the base's storage order), res.tuned and
/// res.resumed from the run's records.
void collect_results(AnalyzeResult& res, const AnalyzeOptions& o, const Plan& plan,
                     const RunState& state);
/// The same from records keyed (fine-tune, name, side): for each of `tuned_paths`, the records
/// of `entries` (names in plan order) on `sides`; absent ones are skipped.
void collect_records(AnalyzeResult& res, const std::vector<std::string>& tuned_paths,
                     const std::vector<std::string>& entries, const std::vector<Side>& sides,
                     const std::map<RecordKey, MatrixResult>& records);
/// Sets the output paths of `res` for o.out_dir.
void output_paths(AnalyzeResult& res, const AnalyzeOptions& o);
/// write_outputs for a caller that already holds the lock on o.out_dir.
void write_outputs_locked(AnalyzeResult& res, const AnalyzeOptions& o);

class DirLock;
/// analyze_only for a caller that holds (non-null `lock`) or wants to keep the lock on
/// o.out_dir: an empty `lock` is taken there and left to the caller.
AnalyzeResult analyze_holding_lock(const AnalyzeOptions& o, std::unique_ptr<DirLock>& lock);

}  // namespace indim::detail
