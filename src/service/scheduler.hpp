// The service's job queue and its one dispatcher: jobs run one at a time on the whole fleet
// (every device and stream, or every CPU worker), the next one chosen among the queued on the
// base just used, so its decompositions are still in memory, else the oldest. Everything a
// request handler asks of the jobs goes through here.
#pragma once

#include <chrono>
#include <condition_variable>
#include <map>
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
  /// them), or fail once they were running at max_attempts deaths; the dispatcher starts.
  void start();
  struct Submitted {
    Job job;
    bool existing = false;  ///< the job submitted earlier with the same Idempotency-Key
  };
  /// Stores a queued job of `tenant` (durable before this returns) and wakes the dispatcher.
  /// With an Idempotency-Key `key` that `tenant` used before, returns that job instead (409 when
  /// its request differs). Throws ApiError 429 when max_queued jobs wait already, 503 while
  /// draining.
  Submitted submit(const JobSpec& spec, const std::string& resolved_base, const std::string& tenant,
                   const std::string& key = "");
  /// The job `tenant` submitted with `key` (409 when its request differs from `spec`'s).
  std::optional<Job> find_key(const std::string& tenant, const std::string& key,
                              const JobSpec& spec) const;
  /// The job with its live progress when it runs (and its end, while recording it is retried).
  std::optional<Job> get(const std::string& id) const;
  /// Summaries (JobStore::list), with live progress.
  std::vector<Job> list(const ListQuery& query) const;
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
  /// Removes the outputs of jobs that ended more than keep_days ago, and the jobs that ended
  /// before the newest keep_jobs whole.
  void sweep_retention();
  /// Rows marked running that no worker runs go back to the queue (a record that was lost).
  void reconcile();
  DecompositionMemory& memory() { return memory_; }

 private:
  struct Live;
  void dispatch();
  std::optional<Job> next_job();
  void run(Job job);
  void finish(Job& job, const Attempt& a, bool drained);
  void record_end(const Job& job);  // with mu_ held
  void trim_ended();                // with mu_ held
  bool record_pending();            // with mu_ held; true when nothing is left to record
  void requeue_or_fail(Job& job);   // with mu_ held
  std::optional<Job> existing(const std::string& tenant, const std::string& key,
                              const JobSpec& spec) const;  // with mu_ held
  void housekeeping(std::chrono::steady_clock::time_point& swept,
                    std::chrono::steady_clock::time_point& reconciled);
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
  /// Ended jobs whose end the database has not taken yet (a full disk): retried, and shown.
  std::map<std::string, Job> pending_;
  std::thread thread_;
};

}  // namespace indim::service
