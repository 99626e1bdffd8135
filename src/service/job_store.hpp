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
  /// Newest first; `state` filters when given; at most `limit`.
  std::vector<Job> list(const std::optional<JobState>& state, int limit) const;
  /// Jobs in `state`, oldest first.
  std::vector<Job> in_state(JobState state) const;
  int count(JobState state) const;

 private:
  std::vector<Job> query(const std::string& where, const std::string& order, int limit,
                         const std::string& arg) const;
  void exec(const std::string& sql) const;
  std::string path_;
  mutable std::mutex mu_;
  sqlite3* db_ = nullptr;
};

}  // namespace indim::service
