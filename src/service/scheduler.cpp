#include "service/scheduler.hpp"

#include <sys/random.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <functional>
#include <map>

#include "indim/error.hpp"
#include "service/api_error.hpp"
#include "service/job_runner.hpp"

namespace fs = std::filesystem;

namespace indim::service {

namespace {

double now_seconds() {
  return std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count();
}

// 64 bits from the kernel's CSPRNG: an id says nothing about the ids of other jobs.
std::string new_job_id() {
  uint64_t v = 0;
  for (size_t got = 0; got < sizeof v;) {
    const ssize_t n = ::getrandom(reinterpret_cast<char*>(&v) + got, sizeof v - got, 0);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) throw Error(std::string("getrandom: ") + std::strerror(errno));
    got += static_cast<size_t>(n);
  }
  char buf[17];
  std::snprintf(buf, sizeof buf, "%016llx", static_cast<unsigned long long>(v));
  return buf;
}

constexpr auto kReconcileEvery = std::chrono::seconds(30);
constexpr auto kSweepEvery = std::chrono::hours(1);

// The running job's observer: its live progress, and the metrics of each unit it computes.
class ProgressObserver final : public RunObserver {
 public:
  using Update = std::function<void(const std::function<void(JobProgress&)>&)>;
  ProgressObserver(Update update, Metrics& metrics)
      : update_(std::move(update)), metrics_(metrics) {}

  void planned(int units, const UnitCost& total) override {
    update_([&](JobProgress& p) { p.units_total = units, p.cost_total = total.flops; });
  }
  void unit_started(const UnitEvent& u) override {  // calls are serialised: no lock
    started_[{u.tuned_index, u.name}] = std::chrono::steady_clock::now();
  }
  void unit_finished(const UnitEvent& u) override {
    if (!u.resumed) {
      const auto at = started_.find({u.tuned_index, u.name});
      const double seconds =
          at == started_.end()
              ? 0
              : std::chrono::duration<double>(std::chrono::steady_clock::now() - at->second)
                    .count();
      metrics_.observe_unit(seconds, u.cost.bytes);
    }
    update_([&](JobProgress& p) {
      ++p.units_done;
      p.cost_done += u.cost.flops;
      if (u.resumed) ++p.units_resumed, p.cost_resumed += u.cost.flops;
    });
  }

 private:
  Update update_;
  Metrics& metrics_;
  std::map<std::pair<int, std::string>, std::chrono::steady_clock::time_point> started_;
};

}  // namespace

struct Scheduler::Live {
  std::string id;
  CancelToken token;
  JobProgress progress;
  bool user_cancel = false, purge = false;
};

Scheduler::Scheduler(const ServeOptions& options, JobStore& store, const RootSet& roots,
                     Metrics& metrics)
    : options_(options),
      store_(store),
      roots_(roots),
      metrics_(metrics),
      memory_(options.memory_max) {}

Scheduler::~Scheduler() { drain(); }

void Scheduler::start() {
  std::lock_guard<std::mutex> lock(mu_);
  for (Job& j : store_.in_state(JobState::Running)) {  // the last process died with them
    ++j.crashes;
    requeue_or_fail(j);
  }
  started_ = true;
  thread_ = std::thread([this] { dispatch(); });
}

// A job found running at a start: queued again (its journal resumes it), unless the service
// died under it max_attempts times: then it is what kills the service, and it fails.
void Scheduler::requeue_or_fail(Job& j) {
  if (j.crashes < options_.max_attempts) {
    j.state = JobState::Queued;
    store_.update(j);
    if (options_.log)
      options_.log("job " + j.id + " requeued: it was running when the service stopped");
    return;
  }
  j.state = JobState::Failed;
  j.finished = now_seconds();
  j.error = "the service stopped while running this job " + std::to_string(j.crashes) +
            " times (--max-attempts " + std::to_string(options_.max_attempts) +
            "); it is not started again";
  j.error_class = "runtime", j.exit_code = kExitRuntime, j.problem = "";
  store_.update(j);
  metrics_.job_ended("failed");
  if (options_.log) options_.log("job " + j.id + " failed: " + j.error);
}

void Scheduler::changed() {
  ++version_;
  changed_.notify_all();
}

Scheduler::Submitted Scheduler::submit(const JobSpec& spec, const std::string& resolved_base,
                                       const std::string& tenant, const std::string& key) {
  std::lock_guard<std::mutex> lock(mu_);
  if (stopping_) throw ApiError(503, "the service is draining; submit again once it is back");
  if (!key.empty())
    if (std::optional<Job> j = existing(tenant, key, spec)) return {*j, true};
  if (store_.count(JobState::Queued) >= options_.max_queued)
    throw ApiError(429, std::to_string(options_.max_queued) +
                            " jobs are queued already (--max-queued); submit again later");
  Job j;
  j.id = new_job_id();
  j.request = spec_to_json(spec);
  j.base = resolved_base;
  j.created = now_seconds();
  j.tenant = tenant;
  j.idem_key = key;
  store_.insert(j);
  changed();
  wake_.notify_all();
  if (options_.log)
    options_.log("job " + j.id + " queued for " + tenant + ": " +
                 std::to_string(spec.tuned.size()) + " fine-tune(s) of " + resolved_base);
  return {j, false};
}

// With mu_ held.
std::optional<Job> Scheduler::existing(const std::string& tenant, const std::string& key,
                                       const JobSpec& spec) const {
  std::optional<Job> j = store_.find_key(tenant, key);
  if (j && j->request != spec_to_json(spec))
    throw ApiError(409, "Idempotency-Key " + key + " was sent with another request (job " + j->id +
                            "); use a new key for a new job");
  return j;
}

std::optional<Job> Scheduler::find_key(const std::string& tenant, const std::string& key,
                                       const JobSpec& spec) const {
  std::lock_guard<std::mutex> lock(mu_);
  return existing(tenant, key, spec);
}

std::optional<Job> Scheduler::get(const std::string& id) const {
  std::lock_guard<std::mutex> lock(mu_);
  std::optional<Job> j = store_.get(id);
  if (const auto p = pending_.find(id); j && p != pending_.end()) j = p->second;
  if (j && live_ && live_->id == id) j->progress = live_->progress;
  return j;
}

std::vector<Job> Scheduler::list(const ListQuery& query) const {
  std::lock_guard<std::mutex> lock(mu_);
  std::vector<Job> jobs = store_.list(query);
  for (Job& j : jobs) {
    if (const auto p = pending_.find(j.id); p != pending_.end()) {
      const Job& e = p->second;
      j.state = e.state, j.finished = e.finished, j.seconds = e.seconds, j.progress = e.progress;
      j.error = e.error, j.error_class = e.error_class, j.exit_code = e.exit_code;
    }
    if (live_ && live_->id == j.id) j.progress = live_->progress;
  }
  return jobs;
}

Job Scheduler::cancel(const std::string& id, bool purge) {
  std::lock_guard<std::mutex> lock(mu_);
  std::optional<Job> j = store_.get(id);
  if (!j) throw ApiError(404, "no job " + id);
  if (const auto p = pending_.find(id); p != pending_.end()) return p->second;  // it ended
  if (live_ && live_->id == id) {
    live_->user_cancel = true;
    live_->purge = live_->purge || purge;
    live_->token.cancel();
    j->progress = live_->progress;
    return *j;
  }
  if (j->state == JobState::Queued) {
    j->state = JobState::Cancelled;
    j->finished = now_seconds();
    store_.update(*j);
    metrics_.job_ended("cancelled");
    if (options_.log) options_.log("job " + id + " cancelled while queued");
  }
  if (purge && is_terminal(j->state)) purge_dir(*j);
  changed();
  return *j;
}

uint64_t Scheduler::wait_change(uint64_t version, std::chrono::milliseconds limit) const {
  std::unique_lock<std::mutex> lock(mu_);
  changed_.wait_for(lock, limit, [&] { return version_ != version || stopping_; });
  return version_;
}

uint64_t Scheduler::version() const {
  std::lock_guard<std::mutex> lock(mu_);
  return version_;
}

void Scheduler::drain() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stopping_ = true;
    if (live_) live_->token.cancel();
    wake_.notify_all();
    changed();
  }
  if (thread_.joinable()) thread_.join();
}

bool Scheduler::draining() const {
  std::lock_guard<std::mutex> lock(mu_);
  return stopping_;
}

bool Scheduler::workers_up() const {
  std::lock_guard<std::mutex> lock(mu_);
  return started_ && !stopping_;
}

std::string Scheduler::job_dir(const std::string& id) const {
  return (fs::path(options_.state_dir) / "jobs" / id).string();
}

void Scheduler::purge_dir(Job& job) {
  std::error_code ec;
  fs::remove_all(job_dir(job.id), ec);
  job.purged = true;
  store_.update(job);
  if (options_.log) options_.log("job " + job.id + " purged");
}

void Scheduler::sweep_retention() {
  std::lock_guard<std::mutex> lock(mu_);
  const double before = now_seconds() - options_.keep_days * 86400.0;
  for (JobState s : {JobState::Done, JobState::Failed, JobState::Cancelled})
    for (Job& j : store_.in_state(s))
      if (!j.purged && j.finished > 0 && j.finished < before) purge_dir(j);
  trim_ended();
}

// With mu_ held.
void Scheduler::trim_ended() {
  for (const std::string& id : store_.ended_beyond(options_.keep_jobs)) {
    std::error_code ec;
    fs::remove_all(job_dir(id), ec);
    store_.remove(id);
    if (options_.log) options_.log("job " + id + " removed (over --keep-jobs)");
  }
}

void Scheduler::reconcile() {
  std::lock_guard<std::mutex> lock(mu_);
  for (Job& j : store_.in_state(JobState::Running)) {
    if ((live_ && live_->id == j.id) || pending_.count(j.id) > 0) continue;
    j.state = JobState::Queued;
    store_.update(j);
    changed();
    if (options_.log)
      options_.log("job " + j.id + " requeued: its record said running, but nothing ran it");
  }
}

// The queued job on the base used last, else the oldest; marked running. A row that cannot
// be read is marked failed with the reason instead. With mu_ held.
std::optional<Job> Scheduler::next_job() {
  std::vector<Job> queued = store_.in_state(JobState::Queued);
  for (auto it = queued.begin(); it != queued.end();)
    if (!it->damage.empty()) {
      it->state = JobState::Failed;
      it->finished = now_seconds();
      it->error = "job " + it->id + ": " + it->damage;
      it->error_class = "runtime", it->exit_code = kExitRuntime;
      store_.update(*it);
      it = queued.erase(it);
    } else {
      ++it;
    }
  if (queued.empty()) return std::nullopt;
  auto pick = queued.begin();
  for (auto it = queued.begin(); it != queued.end(); ++it)
    if (it->base == last_base_) {
      pick = it;
      break;
    }
  Job j = *pick;
  j.state = JobState::Running;
  j.started = now_seconds();
  ++j.attempts;
  j.progress = {};
  store_.update(j);
  live_ = std::make_shared<Live>();
  live_->id = j.id;
  changed();
  return j;
}

// Retention hourly (and at start), reconciliation every kReconcileEvery.
void Scheduler::housekeeping(std::chrono::steady_clock::time_point& swept,
                             std::chrono::steady_clock::time_point& reconciled) {
  const auto now = std::chrono::steady_clock::now();
  if (now - swept > kSweepEvery) {
    sweep_retention();
    swept = now;
  }
  if (now - reconciled > kReconcileEvery) {
    reconcile();
    reconciled = now;
  }
}

void Scheduler::dispatch() {
  // "Never swept": the steady clock's epoch is boot time, so subtract the period instead.
  auto swept = std::chrono::steady_clock::now() - kSweepEvery * 2;
  auto reconciled = std::chrono::steady_clock::now();
  for (;;) {
    std::optional<Job> job;
    try {
      housekeeping(swept, reconciled);
      std::unique_lock<std::mutex> lock(mu_);
      // An end not yet recorded comes first: no job starts on a database that takes nothing.
      const bool recorded = record_pending();
      if (!stopping_ && recorded && !(job = next_job()))
        wake_.wait_for(lock, std::chrono::seconds(5));
      else if (!stopping_ && !recorded)
        wake_.wait_for(lock, std::chrono::seconds(1));
      if (stopping_ && !job) return;
    } catch (const std::exception& e) {  // the database failed: say so, try again later
      if (options_.log) options_.log(std::string("dispatcher: ") + e.what());
      std::this_thread::sleep_for(std::chrono::seconds(1));
      continue;
    }
    if (job) run(std::move(*job));
  }
}

void Scheduler::run(Job job) {
  std::shared_ptr<Live> live;
  {
    std::lock_guard<std::mutex> lock(mu_);
    live = live_;
  }
  if (options_.log)
    options_.log("job " + job.id + " started (attempt " + std::to_string(job.attempts) + ")");
  ProgressObserver observer(
      [this, live](const std::function<void(JobProgress&)>& f) {
        std::lock_guard<std::mutex> lock(mu_);
        f(live->progress);
        changed();
      },
      metrics_);
  const RunContext ctx{options_, roots_, &memory_, job_dir(job.id), &observer, &live->token};
  const Attempt a = run_attempt(job, ctx);
  finish(job, a, /*drained=*/!live->user_cancel);
}

void Scheduler::finish(Job& job, const Attempt& a, bool drained) {
  std::lock_guard<std::mutex> lock(mu_);
  std::shared_ptr<Live> live = std::move(live_);
  job.progress = live->progress;
  job.seconds = a.seconds;
  job.resumed_records = a.resumed_records;
  job.state = a.state == JobState::Cancelled && drained ? JobState::Queued : a.state;
  job.error = a.error, job.error_class = a.error_class, job.problem = a.problem;
  job.exit_code = a.exit_code;
  if (job.state == JobState::Queued) job.error.clear();
  if (is_terminal(job.state)) job.finished = now_seconds();
  last_base_ = job.base;
  if (is_terminal(job.state)) metrics_.job_ended(state_name(job.state));
  record_end(job);
  if (pending_.count(job.id) == 0 && is_terminal(job.state)) {
    if (live->purge) purge_dir(job);
    trim_ended();
  }
  changed();
  if (options_.log)
    options_.log("job " + job.id + " " + state_name(job.state) +
                 (job.state == JobState::Queued ? " again (drained; its journal resumes it)" : "") +
                 (job.error.empty() ? "" : ": " + job.error));
}

// The end of a job into the database; when it cannot take it (a full disk), the job is kept in
// pending_, shown as ended, and its record retried before anything else starts.
void Scheduler::record_end(const Job& job) {
  try {
    store_.update(job);
  } catch (const std::exception& e) {
    pending_[job.id] = job;
    if (options_.log)
      options_.log("job " + job.id + ": cannot record its end yet (retrying): " + e.what());
  }
}

bool Scheduler::record_pending() {
  for (auto it = pending_.begin(); it != pending_.end();) {
    try {
      store_.update(it->second);
    } catch (const std::exception&) {
      return false;
    }
    if (options_.log) options_.log("job " + it->first + ": its end is recorded");
    it = pending_.erase(it);
    changed();
  }
  return true;
}

}  // namespace indim::service
