// What the workers of a run share: the records so far (resumed and new), the journal, the
// progress callbacks and notes, all behind one mutex; and the cancellation token.
#pragma once

#include <map>
#include <mutex>
#include <string>
#include <vector>

#include "indim/analyze.hpp"
#include "pipeline/journal.hpp"
#include "plan/plan.hpp"

namespace indim::detail {

/// The records each unit makes, in record order: left, right, or both.
std::vector<Side> record_sides(Side side);

class RunState {
 public:
  /// Takes the journal's records of `plan`'s units on the sides o.side names, marks the units
  /// whose every side was found as not pending, and tells the observer of the plan and of
  /// those units.
  RunState(const AnalyzeOptions& o, Journal& journal, Plan& plan);

  /// Left, right, or both: the records each unit makes.
  const std::vector<Side>& sides() const { return sides_; }
  bool cancelled() const { return o_.cancel != nullptr && o_.cancel->cancelled(); }
  void note(const std::string& line);
  void started(const WorkUnit& u);
  /// Journals a unit's records (one per side), keeps them, and reports the unit finished.
  void finished(const WorkUnit& u, const std::vector<MatrixResult>& records);

  /// After the run (no worker left): every record, keyed (tuned index, name, side).
  const std::map<RecordKey, MatrixResult>& records() const { return records_; }
  int resumed() const { return resumed_; }
  int units_finished() const { return units_finished_; }

 private:
  UnitEvent event(const WorkUnit& u, bool resumed) const;

  const AnalyzeOptions& o_;
  Journal& journal_;
  std::vector<Side> sides_;
  std::mutex mu_;
  std::map<RecordKey, MatrixResult> records_;
  int resumed_ = 0;
  int done_ = 0, total_ = 0;  // records, for the ProgressFn
  int units_finished_ = 0;
};

}  // namespace indim::detail
