#include "service/job_store.hpp"

#include <sqlite3.h>

#include "indim/error.hpp"

namespace indim::service {

namespace {

constexpr const char* kSchema = R"(
CREATE TABLE IF NOT EXISTS jobs (
  seq INTEGER PRIMARY KEY AUTOINCREMENT,
  id TEXT UNIQUE NOT NULL,
  state TEXT NOT NULL,
  request TEXT NOT NULL,
  base TEXT NOT NULL,
  created REAL NOT NULL, started REAL NOT NULL, finished REAL NOT NULL,
  attempts INTEGER NOT NULL,
  error TEXT NOT NULL, error_class TEXT NOT NULL, problem TEXT NOT NULL,
  exit_code INTEGER NOT NULL,
  resumed_records INTEGER NOT NULL, seconds REAL NOT NULL, purged INTEGER NOT NULL,
  units_done INTEGER NOT NULL, units_total INTEGER NOT NULL,
  cost_done REAL NOT NULL, cost_total REAL NOT NULL,
  units_resumed INTEGER NOT NULL, cost_resumed REAL NOT NULL);
CREATE INDEX IF NOT EXISTS jobs_state ON jobs(state, seq);
)";

constexpr const char* kColumns =
    "seq, id, state, request, base, created, started, finished, attempts, error, error_class, "
    "problem, exit_code, resumed_records, seconds, purged, units_done, units_total, cost_done, "
    "cost_total, units_resumed, cost_resumed";

// One prepared statement, finalized when it goes out of scope.
class Statement {
 public:
  Statement(sqlite3* db, const std::string& sql, const std::string& path) {
    if (sqlite3_prepare_v2(db, sql.c_str(), -1, &st_, nullptr) != SQLITE_OK)
      throw Error(path + ": " + sqlite3_errmsg(db));
  }
  ~Statement() { sqlite3_finalize(st_); }
  Statement(const Statement&) = delete;
  Statement& operator=(const Statement&) = delete;
  sqlite3_stmt* get() const { return st_; }
  void text(int i, const std::string& s) {
    sqlite3_bind_text(st_, i, s.data(), static_cast<int>(s.size()), SQLITE_TRANSIENT);
  }

 private:
  sqlite3_stmt* st_ = nullptr;
};

std::string column_text(sqlite3_stmt* st, int i) {
  const unsigned char* t = sqlite3_column_text(st, i);
  return t == nullptr ? std::string() : std::string(reinterpret_cast<const char*>(t));
}

Job read_row(sqlite3_stmt* st) {
  Job j;
  j.seq = sqlite3_column_int64(st, 0);
  j.id = column_text(st, 1);
  parse_state(column_text(st, 2), j.state);
  j.request = nlohmann::json::parse(column_text(st, 3), nullptr, false);
  j.base = column_text(st, 4);
  j.created = sqlite3_column_double(st, 5);
  j.started = sqlite3_column_double(st, 6);
  j.finished = sqlite3_column_double(st, 7);
  j.attempts = sqlite3_column_int(st, 8);
  j.error = column_text(st, 9);
  j.error_class = column_text(st, 10);
  j.problem = column_text(st, 11);
  j.exit_code = sqlite3_column_int(st, 12);
  j.resumed_records = sqlite3_column_int(st, 13);
  j.seconds = sqlite3_column_double(st, 14);
  j.purged = sqlite3_column_int(st, 15) != 0;
  j.progress.units_done = sqlite3_column_int(st, 16);
  j.progress.units_total = sqlite3_column_int(st, 17);
  j.progress.cost_done = sqlite3_column_double(st, 18);
  j.progress.cost_total = sqlite3_column_double(st, 19);
  j.progress.units_resumed = sqlite3_column_int(st, 20);
  j.progress.cost_resumed = sqlite3_column_double(st, 21);
  return j;
}

// Binds the mutable fields at 1 ... 18 (the order of `kColumns` from "state" on, less request
// and base).
void bind_fields(Statement& s, const Job& j) {
  sqlite3_stmt* st = s.get();
  s.text(1, state_name(j.state));
  sqlite3_bind_double(st, 2, j.created);
  sqlite3_bind_double(st, 3, j.started);
  sqlite3_bind_double(st, 4, j.finished);
  sqlite3_bind_int(st, 5, j.attempts);
  s.text(6, j.error);
  s.text(7, j.error_class);
  s.text(8, j.problem);
  sqlite3_bind_int(st, 9, j.exit_code);
  sqlite3_bind_int(st, 10, j.resumed_records);
  sqlite3_bind_double(st, 11, j.seconds);
  sqlite3_bind_int(st, 12, j.purged ? 1 : 0);
  sqlite3_bind_int(st, 13, j.progress.units_done);
  sqlite3_bind_int(st, 14, j.progress.units_total);
  sqlite3_bind_double(st, 15, j.progress.cost_done);
  sqlite3_bind_double(st, 16, j.progress.cost_total);
  sqlite3_bind_int(st, 17, j.progress.units_resumed);
  sqlite3_bind_double(st, 18, j.progress.cost_resumed);
}

}  // namespace

JobStore::JobStore(const std::string& path) : path_(path) {
  if (sqlite3_open_v2(path.c_str(), &db_,
                      SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_FULLMUTEX,
                      nullptr) != SQLITE_OK) {
    const std::string why = db_ != nullptr ? sqlite3_errmsg(db_) : "out of memory";
    sqlite3_close(db_);
    throw Error(path + ": cannot open the job database: " + why);
  }
  sqlite3_busy_timeout(db_, 5000);
  exec("PRAGMA journal_mode=WAL");
  exec("PRAGMA synchronous=FULL");  // a job acknowledged is on disk
  exec(kSchema);
}

JobStore::~JobStore() { sqlite3_close(db_); }

void JobStore::exec(const std::string& sql) const {
  char* err = nullptr;
  if (sqlite3_exec(db_, sql.c_str(), nullptr, nullptr, &err) != SQLITE_OK) {
    const std::string why = err != nullptr ? err : sqlite3_errmsg(db_);
    sqlite3_free(err);
    throw Error(path_ + ": " + why);
  }
}

void JobStore::insert(Job& job) {
  std::lock_guard<std::mutex> lock(mu_);
  Statement s(db_,
              "INSERT INTO jobs (state, created, started, finished, attempts, error, error_class, "
              "problem, exit_code, resumed_records, seconds, purged, units_done, units_total, "
              "cost_done, cost_total, units_resumed, cost_resumed, id, request, base) VALUES "
              "(?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18, "
              "?19, ?20, ?21)",
              path_);
  bind_fields(s, job);
  s.text(19, job.id);
  s.text(20, job.request.dump());
  s.text(21, job.base);
  if (sqlite3_step(s.get()) != SQLITE_DONE)
    throw Error(path_ + ": cannot store the job: " + sqlite3_errmsg(db_));
  job.seq = sqlite3_last_insert_rowid(db_);
}

void JobStore::update(const Job& job) {
  std::lock_guard<std::mutex> lock(mu_);
  Statement s(db_,
              "UPDATE jobs SET state = ?1, created = ?2, started = ?3, finished = ?4, "
              "attempts = ?5, error = ?6, error_class = ?7, problem = ?8, exit_code = ?9, "
              "resumed_records = ?10, seconds = ?11, purged = ?12, units_done = ?13, "
              "units_total = ?14, cost_done = ?15, cost_total = ?16, units_resumed = ?17, "
              "cost_resumed = ?18 WHERE id = ?19",
              path_);
  bind_fields(s, job);
  s.text(19, job.id);
  if (sqlite3_step(s.get()) != SQLITE_DONE)
    throw Error(path_ + ": cannot update job " + job.id + ": " + sqlite3_errmsg(db_));
}

std::vector<Job> JobStore::query(const std::string& where, const std::string& order, int limit,
                                 const std::string& arg) const {
  std::lock_guard<std::mutex> lock(mu_);
  Statement s(db_,
              std::string("SELECT ") + kColumns + " FROM jobs" +
                  (where.empty() ? "" : " WHERE " + where) + " ORDER BY " + order + " LIMIT " +
                  std::to_string(limit),
              path_);
  if (!where.empty()) s.text(1, arg);
  std::vector<Job> out;
  int rc = 0;
  while ((rc = sqlite3_step(s.get())) == SQLITE_ROW) out.push_back(read_row(s.get()));
  if (rc != SQLITE_DONE) throw Error(path_ + ": " + sqlite3_errmsg(db_));
  return out;
}

std::optional<Job> JobStore::get(const std::string& id) const {
  std::vector<Job> jobs = query("id = ?1", "seq", 1, id);
  if (jobs.empty()) return std::nullopt;
  return jobs.front();
}

std::vector<Job> JobStore::list(const std::optional<JobState>& state, int limit) const {
  return state ? query("state = ?1", "seq DESC", limit, state_name(*state))
               : query("", "seq DESC", limit, "");
}

std::vector<Job> JobStore::in_state(JobState state) const {
  return query("state = ?1", "seq", 1 << 30, state_name(state));
}

int JobStore::count(JobState state) const {
  std::lock_guard<std::mutex> lock(mu_);
  Statement s(db_, "SELECT COUNT(*) FROM jobs WHERE state = ?1", path_);
  s.text(1, state_name(state));
  return sqlite3_step(s.get()) == SQLITE_ROW ? sqlite3_column_int(s.get(), 0) : 0;
}

const char* state_name(JobState s) {
  switch (s) {
    case JobState::Queued:
      return "queued";
    case JobState::Running:
      return "running";
    case JobState::Done:
      return "done";
    case JobState::Failed:
      return "failed";
    case JobState::Cancelled:
      return "cancelled";
  }
  return "queued";
}

bool parse_state(const std::string& name, JobState& out) {
  for (JobState s :
       {JobState::Queued, JobState::Running, JobState::Done, JobState::Failed, JobState::Cancelled})
    if (name == state_name(s)) {
      out = s;
      return true;
    }
  return false;
}

}  // namespace indim::service
