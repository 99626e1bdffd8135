// The service's job queue and its one dispatcher: jobs run one at a time on the whole fleet
// (every device and stream, or every CPU worker), the next one chosen among the queued on the
// base just used, so its decompositions are still in memory, else the oldest. Everything a
// request handler asks of the jobs goes through here.
#pragma once

#include <chrono>
#include <condition_variable>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "service/job.hpp"
#include "service/job_request.hpp"
#include "service/job_store.hpp"
#include "service/metrics.hpp"
#include "service/roots.hpp"
#include "service/serve_options.hpp"

namespace indim::service {

struct Attempt;

class Scheduler {
 public:
  Scheduler(const ServeOptions& options, JobStore& store, const RootSet& roots, Metrics& metrics);
  ~Scheduler();
  Scheduler(const Scheduler&) = delete;
  Scheduler& operator=(const Scheduler&) = delete;

  /// Jobs left running by a previous process go back to the queue (their journals resume
  /// them); the dispatcher starts.
  void start();
  /// Stores a queued job (durable before this returns) and wakes the dispatcher. Throws
  /// ApiError 429 when max_queued jobs wait already, 503 while draining.
  Job submit(const JobSpec& spec, const std::string& resolved_base);
  /// The job with its live progress when it runs.
  std::optional<Job> get(const std::string& id) const;
  std::vector<Job> list(const std::optional<JobState>& state, int limit) const;
  /// Cancels a queued job at once, a running one at its next unit (the state says "running"
  /// until it stops). `purge` also removes its folder once it is not running. Throws ApiError
  /// 404 for an unknown id.
  Job cancel(const std::string& id, bool purge);
  /// Waits until anything about the jobs changes after `version` (or `limit` passes, or the
  /// service stops); returns the current version.
  uint64_t wait_change(uint64_t version, std::chrono::milliseconds limit) const;
  uint64_t version() const;

  /// No job starts from now on; the running one stops after its units in flight and goes back
  /// to the queue with its journal. Returns once nothing runs.
  void drain();
  bool draining() const;
  bool workers_up() const;
  /// The folder of a job's outputs and journal.
  std::string job_dir(const std::string& id) const;
  /// Removes the outputs of jobs that ended more than keep_days ago.
  void sweep_retention();
  DecompositionMemory& memory() { return memory_; }

 private:
  struct Live;
  void dispatch();
  std::optional<Job> next_job();
  void run(Job job);
  void finish(Job& job, const Attempt& a, bool drained);
  void changed();  // with mu_ held
  void purge_dir(Job& job);

  const ServeOptions& options_;
  JobStore& store_;
  const RootSet& roots_;
  Metrics& metrics_;
  DecompositionMemory memory_;
  mutable std::mutex mu_;
  mutable std::condition_variable wake_, changed_;
  uint64_t version_ = 0;
  bool stopping_ = false, started_ = false;
  std::string last_base_;
  std::shared_ptr<Live> live_;  ///< the running job, if any
  std::thread thread_;
};

}  // namespace indim::service
