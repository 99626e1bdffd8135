// The service's durable queue: every job in one SQLite database under --state (WAL, every
// state change committed with synchronous=FULL before it is acknowledged).
#pragma once

#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "service/job.hpp"

struct sqlite3;

namespace indim::service {

/// Which jobs a listing shows: one state or all, one tenant's or everyone's, those submitted
/// before the job with seq `before` (0: from the newest), at most `limit`.
struct ListQuery {
  std::optional<JobState> state;
  std::optional<std::string> tenant;
  int64_t before = 0;
  int limit = 100;
};

class JobStore {
 public:
  /// Opens (creating) `path`. Throws indim::Error naming it when SQLite cannot.
  explicit JobStore(const std::string& path);
  ~JobStore();
  JobStore(const JobStore&) = delete;
  JobStore& operator=(const JobStore&) = delete;

  /// Stores a new job (its seq is set); durable when this returns.
  void insert(Job& job);
  /// Writes every field of `job` but its id, seq and request.
  void update(const Job& job);
  std::optional<Job> get(const std::string& id) const;
  /// The job `tenant` submitted with Idempotency-Key `key`.
  std::optional<Job> find_key(const std::string& tenant, const std::string& key) const;
  /// Summaries, newest first: the request holds only "base", "tuned_count" and "kind", an error
  /// message at most 1 KiB. A row whose request is not JSON comes with `damage` set.
  std::vector<Job> list(const ListQuery& q) const;
  /// Jobs in `state`, oldest first.
  std::vector<Job> in_state(JobState state) const;
  int count(JobState state) const;
  /// Ids of the ended jobs (done, failed, cancelled) older than the newest `keep` of them.
  std::vector<std::string> ended_beyond(int keep) const;
  /// Removes a job's row.
  void remove(const std::string& id);

 private:
  std::vector<Job> query(const std::string& columns, const std::string& where,
                         const std::string& order, int limit,
                         const std::vector<std::string>& args) const;
  void exec(const std::string& sql) const;
  std::string path_;
  mutable std::mutex mu_;
  sqlite3* db_ = nullptr;
};

}  // namespace indim::service
