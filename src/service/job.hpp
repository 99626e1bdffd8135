// A job as the service keeps it: its request, its state and when it changed, its progress and,
// for a failed one, its error.
#pragma once

#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>

namespace indim::service {

enum class JobState { Queued, Running, Done, Failed, Cancelled };
/// "queued", "running", "done", "failed", "cancelled".
const char* state_name(JobState s);
/// The state named `name`; false when there is none.
bool parse_state(const std::string& name, JobState& out);
inline bool is_terminal(JobState s) {
  return s == JobState::Done || s == JobState::Failed || s == JobState::Cancelled;
}

/// Units and their estimated cost, done and in all (RunObserver's figures).
struct JobProgress {
  int units_done = 0, units_total = 0, units_resumed = 0;
  double cost_done = 0, cost_total = 0;
  double cost_resumed = 0;  ///< of cost_done, taken from the journal
};

struct Job {
  int64_t seq = 0;  ///< order of submission
  std::string id;
  JobState state = JobState::Queued;
  nlohmann::json request;  ///< spec_to_json: base, tuned, options
  std::string base;        ///< the resolved base path, for scheduling jobs on one base together
  double created = 0, started = 0, finished = 0;  ///< seconds since the epoch; 0: not yet
  int attempts = 0;                               ///< times started (a restart resumes)
  std::string error, error_class, problem;        ///< failed: message, class, InputProblem
  int exit_code = 0;  ///< failed: the exit code `indim analyze` would give (1, 2, 3)
  int resumed_records = 0;
  double seconds = 0;  ///< the last attempt's run time
  bool purged = false;
  JobProgress progress;
  std::string tenant;    ///< who submitted it
  std::string idem_key;  ///< the client's Idempotency-Key, "" when none
  int crashes = 0;       ///< attempts the service died in (found running at a start)
  /// Why the stored row could not be read (its request is not JSON, its state unknown): such a
  /// job shows as failed with this reason, and listings skip it.
  std::string damage;
  int tuned_count = 0;  ///< of a listing's summary, which leaves the request out
};

}  // namespace indim::service
