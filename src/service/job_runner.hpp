// One attempt at a job: admitted against the node's memory, then `indim analyze` with the job's
// options into its folder under --state, resuming from that folder's journal, every input file
// opened beneath the roots' directory descriptors (nothing is resolved by name outside them).
#pragma once

#include <string>

#include "indim/analyze.hpp"
#include "service/job.hpp"
#include "service/roots.hpp"
#include "service/serve_options.hpp"

namespace indim::service {

struct RunContext {
  const ServeOptions& serve;
  const RootSet& roots;
  DecompositionMemory* memory;
  std::string out_dir;
  RunObserver* observer;
  const CancelToken* cancel;
};

/// How an attempt ended: Done, Failed (error fields set) or Cancelled (the token stopped it;
/// the caller knows whether for a user or for a drain).
struct Attempt {
  JobState state = JobState::Done;
  std::string error, error_class, problem;
  int exit_code = 0;
  int resumed_records = 0;
  double seconds = 0;
};

/// The analyze options a job runs with.
AnalyzeOptions job_options(const Job& job, const RunContext& ctx);

/// Runs one attempt; never throws.
Attempt run_attempt(const Job& job, const RunContext& ctx);

}  // namespace indim::service
