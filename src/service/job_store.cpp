#include "service/job_store.hpp"

#include <sqlite3.h>

#include <algorithm>
#include <array>

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

// Columns added since the first schema, with their value in rows written before them.
constexpr std::array<std::pair<const char*, const char*>, 3> kAddedColumns = {{
    {"tenant", "TEXT NOT NULL DEFAULT ''"},
    {"idem_key", "TEXT NOT NULL DEFAULT ''"},
    {"crashes", "INTEGER NOT NULL DEFAULT 0"},
}};

constexpr const char* kIndexes = R"(
CREATE INDEX IF NOT EXISTS jobs_tenant ON jobs(tenant, seq);
CREATE UNIQUE INDEX IF NOT EXISTS jobs_idem ON jobs(tenant, idem_key) WHERE idem_key != '';
)";

constexpr const char* kColumns =
    "seq, id, state, request, base, created, started, finished, attempts, error, error_class, "
    "problem, exit_code, resumed_records, seconds, purged, units_done, units_total, cost_done, "
    "cost_total, units_resumed, cost_resumed, tenant, idem_key, crashes";
// A listing's columns: the request (up to 1 MiB) replaced by what a summary shows of it.
constexpr const char* kSummaryColumns =
    "seq, id, state, CASE WHEN json_valid(request) THEN json_object('base', "
    "json_extract(request, '$.base'), 'tuned_count', json_array_length(request, '$.tuned'), "
    "'kind', coalesce(json_extract(request, '$.kind'), 'analyze')) "
    "ELSE 'not json' END, base, created, started, finished, attempts, substr(error, 1, 1024), "
    "error_class, problem, exit_code, resumed_records, seconds, purged, units_done, units_total, "
    "cost_done, cost_total, units_resumed, cost_resumed, tenant, idem_key, crashes";

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
  const std::string state = column_text(st, 2);
  if (!parse_state(state, j.state))
    j.damage = "its stored state \"" + state.substr(0, 40) + "\" is none the service knows";
  j.request = nlohmann::json::parse(column_text(st, 3), nullptr, false);
  if (j.request.is_discarded() || !j.request.is_object()) {
    j.damage = "its stored request is not a JSON object";
    j.request = nlohmann::json::object();
  }
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
  j.tenant = column_text(st, 22);
  j.idem_key = column_text(st, 23);
  j.crashes = sqlite3_column_int(st, 24);
  if (!j.damage.empty()) {  // shown as failed, with the reason
    j.state = JobState::Failed;
    j.error = "job " + j.id + ": " + j.damage;
    j.error_class = "runtime", j.exit_code = kExitRuntime, j.problem.clear();
  }
  if (j.request.contains("tuned_count") && j.request["tuned_count"].is_number_integer())
    j.tuned_count = j.request["tuned_count"].get<int>();
  else if (j.request.contains("tuned") && j.request["tuned"].is_array())
    j.tuned_count = static_cast<int>(j.request["tuned"].size());
  return j;
}

// Binds the mutable fields at 1 ... 19 (the order of `kColumns` from "state" on, less request
// and base, then crashes).
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
  sqlite3_bind_int(st, 19, j.crashes);
}

bool has_column(sqlite3* db, const std::string& path, const std::string& name) {
  Statement s(db, "SELECT 1 FROM pragma_table_info('jobs') WHERE name = ?1", path);
  s.text(1, name);
  return sqlite3_step(s.get()) == SQLITE_ROW;
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
  for (const auto& [name, declaration] : kAddedColumns)
    if (!has_column(db_, path_, name))
      exec(std::string("ALTER TABLE jobs ADD COLUMN ") + name + " " + declaration);
  exec(kIndexes);
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
              "cost_done, cost_total, units_resumed, cost_resumed, crashes, id, request, base, "
              "tenant, idem_key) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, "
              "?14, ?15, ?16, ?17, ?18, ?19, ?20, ?21, ?22, ?23, ?24)",
              path_);
  bind_fields(s, job);
  s.text(20, job.id);
  s.text(21, job.request.dump());
  s.text(22, job.base);
  s.text(23, job.tenant);
  s.text(24, job.idem_key);
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
              "cost_resumed = ?18, crashes = ?19 WHERE id = ?20",
              path_);
  bind_fields(s, job);
  s.text(20, job.id);
  if (sqlite3_step(s.get()) != SQLITE_DONE)
    throw Error(path_ + ": cannot update job " + job.id + ": " + sqlite3_errmsg(db_));
}

std::vector<Job> JobStore::query(const std::string& columns, const std::string& where,
                                 const std::string& order, int limit,
                                 const std::vector<std::string>& args) const {
  std::lock_guard<std::mutex> lock(mu_);
  Statement s(db_,
              "SELECT " + columns + " FROM jobs" + (where.empty() ? "" : " WHERE " + where) +
                  " ORDER BY " + order + " LIMIT " + std::to_string(limit),
              path_);
  for (size_t i = 0; i < args.size(); ++i) s.text(static_cast<int>(i) + 1, args[i]);
  std::vector<Job> out;
  int rc = 0;
  while ((rc = sqlite3_step(s.get())) == SQLITE_ROW) out.push_back(read_row(s.get()));
  if (rc != SQLITE_DONE) throw Error(path_ + ": " + sqlite3_errmsg(db_));
  return out;
}

std::optional<Job> JobStore::get(const std::string& id) const {
  std::vector<Job> jobs = query(kColumns, "id = ?1", "seq", 1, {id});
  if (jobs.empty()) return std::nullopt;
  return jobs.front();
}

std::optional<Job> JobStore::find_key(const std::string& tenant, const std::string& key) const {
  std::vector<Job> jobs =
      query(kColumns, "tenant = ?1 AND idem_key = ?2 AND idem_key != ''", "seq", 1, {tenant, key});
  if (jobs.empty()) return std::nullopt;
  return jobs.front();
}

std::vector<Job> JobStore::list(const ListQuery& q) const {
  std::string where = "(?1 = '' OR state = ?1) AND (?2 = '' OR tenant = ?3)";
  const std::vector<std::string> args = {q.state ? state_name(*q.state) : "", q.tenant ? "1" : "",
                                         q.tenant.value_or(""), std::to_string(q.before)};
  if (q.before > 0) where += " AND seq < CAST(?4 AS INTEGER)";
  return query(kSummaryColumns, where, "seq DESC", q.limit,
               q.before > 0 ? args : std::vector<std::string>(args.begin(), args.begin() + 3));
}

std::vector<Job> JobStore::in_state(JobState state) const {
  return query(kColumns, "state = ?1", "seq", 1 << 30, {state_name(state)});
}

std::vector<std::string> JobStore::ended_beyond(int keep) const {
  std::lock_guard<std::mutex> lock(mu_);
  Statement s(db_,
              "SELECT id FROM jobs WHERE state IN ('done', 'failed', 'cancelled') ORDER BY seq "
              "DESC LIMIT -1 OFFSET " +
                  std::to_string(std::max(0, keep)),
              path_);
  std::vector<std::string> out;
  while (sqlite3_step(s.get()) == SQLITE_ROW) out.push_back(column_text(s.get(), 0));
  return out;
}

void JobStore::remove(const std::string& id) {
  std::lock_guard<std::mutex> lock(mu_);
  Statement s(db_, "DELETE FROM jobs WHERE id = ?1", path_);
  s.text(1, id);
  if (sqlite3_step(s.get()) != SQLITE_DONE)
    throw Error(path_ + ": cannot remove job " + id + ": " + sqlite3_errmsg(db_));
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
