#include "service/http_api.hpp"

#include <unistd.h>

#include <algorithm>

#include "io/regular_file.hpp"
#include "service/api_error.hpp"
#include "service/job_json.hpp"
#include "service/job_request.hpp"

namespace indim::service {

namespace {

using Json = nlohmann::json;
constexpr const char* kJson = "application/json";

HttpResponse json_response(int status, const Json& body) {
  HttpResponse r;
  r.status = status;
  // A message may quote a file name that is not UTF-8: replaced, not thrown on.
  r.body = body.dump(2, ' ', false, Json::error_handler_t::replace) + "\n";
  return r;
}

HttpResponse error_response(int status, const std::string& what) {
  return json_response(status, {{"error", what}, {"status", status}});
}

enum class Route { None, Jobs, Job, Events, Output, Healthz, Metrics };

struct Target {
  Route route = Route::None;
  std::string id, output;
};

bool is_job_id(const std::string& s) {
  return s.size() == 16 && s.find_first_not_of("0123456789abcdef") == std::string::npos;
}

// [a-z]+ "." (json|csv|html|jsonl|tar)
bool is_output_name(const std::string& s) {
  const size_t dot = s.find('.');
  if (dot == 0 || dot == std::string::npos) return false;
  for (size_t i = 0; i < dot; ++i)
    if (s[i] < 'a' || s[i] > 'z') return false;
  const std::string ext = s.substr(dot + 1);
  return ext == "json" || ext == "csv" || ext == "html" || ext == "jsonl" || ext == "tar";
}

Target parse_target(const std::string& path) {
  Target t;
  if (path == "/healthz") t.route = Route::Healthz;
  if (path == "/metrics") t.route = Route::Metrics;
  if (path == "/v1/jobs") t.route = Route::Jobs;
  const std::string prefix = "/v1/jobs/";
  if (path.compare(0, prefix.size(), prefix) != 0) return t;
  const std::string rest = path.substr(prefix.size());
  const size_t slash = rest.find('/');
  t.id = rest.substr(0, slash);
  if (!is_job_id(t.id)) return t;
  if (slash == std::string::npos) {
    t.route = Route::Job;
    return t;
  }
  const std::string tail = rest.substr(slash + 1);
  if (tail == "events") t.route = Route::Events;
  if (tail != "events" && is_output_name(tail)) t.route = Route::Output, t.output = tail;
  return t;
}

const char* allowed_methods(Route r) {
  return r == Route::Jobs ? "GET, POST" : r == Route::Job ? "GET, DELETE" : "GET";
}

bool method_allowed(Route r, const std::string& method) {
  if (r == Route::Jobs) return method == "GET" || method == "POST";
  if (r == Route::Job) return method == "GET" || method == "DELETE";
  return method == "GET";
}

bool is_admin(const Api& api, const HttpRequest& req) {
  for (const Tenant& t : api.options.tenants)
    if (t.name == req.user) return t.admin;
  return false;
}

// A job of another tenant is as absent as one that never was.
Job job_or_404(Api& api, const HttpRequest& req, const std::string& id) {
  std::optional<Job> j = api.scheduler.get(id);
  if (!j || (j->tenant != req.user && !is_admin(api, req))) throw ApiError(404, "no job " + id);
  return *j;
}

// The client's Idempotency-Key: "" when it sent none.
std::string idempotency_key(const HttpRequest& req) {
  const std::string key = req.header("idempotency-key");
  bool printable = !key.empty() && key.size() <= 255;
  for (const char c : key) printable = printable && c > ' ' && c < 0x7f;
  if (!key.empty() && !printable)
    throw ApiError(400, "Idempotency-Key must be 1 to 255 printable ASCII characters");
  return key;
}

HttpResponse accepted(const Job& j, bool existing) {
  HttpResponse r =
      json_response(existing ? 200 : 202, {{"id", j.id}, {"state", state_name(j.state)}});
  r.headers.emplace_back("Location", "/v1/jobs/" + j.id);
  return r;
}

// The base and every fine-tune resolved beneath their roots; a fine-tune named twice (by any
// names) is refused before anything is inspected.
std::vector<RootSet::Located> locate_paths(const RootSet& roots, const JobSpec& spec) {
  std::vector<RootSet::Located> at = {roots.locate(spec.base)};
  for (size_t i = 0; i < spec.tuned.size(); ++i) {
    at.push_back(roots.locate(spec.tuned[i]));
    for (size_t j = 0; j < i; ++j)
      if (at.back().same_as(at[j + 1]))
        throw ApiError(400, "tuned[" + std::to_string(i) + "] (" + spec.tuned[i].substr(0, 200) +
                                ") names the same checkpoint as tuned[" + std::to_string(j) +
                                "] (" + spec.tuned[j].substr(0, 200) + ")");
  }
  return at;
}

HttpResponse post_job(Api& api, const HttpRequest& req) {
  const JobSpec spec = parse_job_spec(req.body);
  const std::string key = idempotency_key(req);
  if (!key.empty())
    if (const std::optional<Job> j = api.scheduler.find_key(req.user, key, spec))
      return accepted(*j, true);
  const std::vector<RootSet::Located> at = locate_paths(api.roots, spec);
  InspectBudget budget;
  for (size_t i = 0; i < at.size(); ++i)
    api.roots.inspect(i == 0 ? spec.base : spec.tuned[i - 1], at[i], budget);
  if (req.client_gone && req.client_gone())  // it gave up while its paths were checked
    throw ApiError(400,
                   "the client closed its connection before the job was queued; nothing "
                   "was queued");
  const Scheduler::Submitted s = api.scheduler.submit(spec, at.front().path, req.user, key);
  return accepted(s.job, s.existing);
}

int limit_param(const HttpRequest& req) {
  const auto text = req.param("limit");
  if (!text) return 100;
  const int limit = text->size() <= 4 && !text->empty() &&
                            text->find_first_not_of("0123456789") == std::string::npos
                        ? std::stoi(*text)
                        : 0;
  if (limit < 1 || limit > 1000) throw ApiError(400, "limit must lie in 1 ... 1000");
  return limit;
}

ListQuery list_query(const Api& api, const HttpRequest& req) {
  ListQuery q;
  if (const auto s = req.param("state")) {
    JobState st;
    if (!parse_state(*s, st))
      throw ApiError(400, "state must be queued, running, done, failed or cancelled");
    q.state = st;
  }
  q.limit = limit_param(req);
  if (const auto c = req.param("cursor")) {
    if (c->empty() || c->size() > 18 || c->find_first_not_of("0123456789") != std::string::npos)
      throw ApiError(400, "cursor must be the \"next\" of an earlier page");
    q.before = std::stoll(*c);
  }
  if (!is_admin(api, req)) q.tenant = req.user;
  return q;
}

// One page of summaries, newest first, at most kMaxListBytes of them; "next" continues it.
HttpResponse list_jobs(Api& api, const HttpRequest& req) {
  const ListQuery q = list_query(api, req);
  const std::vector<Job> rows = api.scheduler.list(q);
  Json jobs = Json::array();
  size_t bytes = 0;
  int64_t last = 0;
  bool full = false;
  for (const Job& j : rows) {
    if (!j.damage.empty()) {
      if (api.options.log) api.options.log("listing skips job " + j.id + ": " + j.damage);
      last = j.seq;
      continue;
    }
    Json item = job_summary_json(j);
    const size_t size = item.dump(-1, ' ', false, Json::error_handler_t::replace).size() + 2;
    if (!jobs.empty() && bytes + size > kMaxListBytes) {
      full = true;
      break;
    }
    bytes += size;
    last = j.seq;
    jobs.push_back(std::move(item));
  }
  const bool more = full || static_cast<int>(rows.size()) == q.limit;
  return json_response(200, {{"jobs", jobs}, {"next", more ? Json(std::to_string(last)) : Json()}});
}

HttpResponse delete_job(Api& api, const HttpRequest& req, const std::string& id) {
  job_or_404(api, req, id);
  const bool purge = req.param("purge").value_or("") == "true";
  return json_response(200, job_to_json(api.scheduler.cancel(id, purge)));
}

const char* content_type(const std::string& name) {
  if (name == "report.html") return "text/html; charset=utf-8";
  if (name == "matrices.csv" || name == "vectors.csv") return "text/csv; charset=utf-8";
  if (name == "journal.jsonl") return "application/x-ndjson";
  if (name == "mitigation.tar") return "application/x-tar";
  return kJson;
}

// A done job's output, read a piece at a time from the descriptor opened when asked for.
class FileSource final : public BodySource {
 public:
  FileSource(detail::Fd fd, uint64_t size) : fd_(std::move(fd)), size_(size) {}
  std::optional<uint64_t> size() const override { return size_; }
  std::string next(bool& done) override {
    std::string piece(std::min<uint64_t>(size_ - offset_, 64 << 10), '\0');
    const ssize_t n = ::pread(fd_.get(), piece.data(), piece.size(), static_cast<off_t>(offset_));
    if (n <= 0) {
      done = true;  // the end, or the file shrank under us: the server closes short
      return "";
    }
    piece.resize(static_cast<size_t>(n));
    offset_ += static_cast<uint64_t>(n);
    done = offset_ >= size_;
    return piece;
  }

 private:
  detail::Fd fd_;
  uint64_t size_, offset_ = 0;
};

HttpResponse get_output(Api& api, const HttpRequest& req, const std::string& id,
                        const std::string& name) {
  const Job j = job_or_404(api, req, id);
  if (j.purged) throw ApiError(410, "job " + j.id + ": its outputs were purged");
  if (j.state != JobState::Done)
    throw ApiError(409,
                   "job " + j.id + " is " + state_name(j.state) + "; outputs come when it is done");
  const auto names = job_outputs(j);
  if (std::find(names.begin(), names.end(), name) == names.end())
    throw ApiError(404, "job " + j.id + " has no " + name + " (report.html needs \"html\": true)");
  uint64_t size = 0;
  detail::Fd fd;
  try {
    fd = detail::open_regular(api.scheduler.job_dir(j.id) + "/" + name, &size);
  } catch (const std::exception&) {
    throw ApiError(500, "job " + j.id + ": cannot read " + name);
  }
  HttpResponse r;
  r.content_type = content_type(name);
  r.stream = std::make_shared<FileSource>(std::move(fd), size);
  return r;
}

// Server-Sent Events: the job now, then at every change, and "end" once it is over (or the
// service drains). A comment every 15 s finds clients that left.
class EventSource final : public BodySource {
 public:
  EventSource(Api& api, std::string id) : api_(api), id_(std::move(id)) { ++api_.streams; }
  ~EventSource() override { --api_.streams; }
  std::string next(bool& done) override {
    const uint64_t v = api_.scheduler.version();
    const auto now = std::chrono::steady_clock::now();
    if (v == seen_ && !api_.scheduler.draining()) {
      if (now - last_ < std::chrono::seconds(15)) return "";
      last_ = now;
      return ": keep-alive\n\n";
    }
    seen_ = v, last_ = now;
    const std::optional<Job> j = api_.scheduler.get(id_);
    done = !j || is_terminal(j->state) || api_.scheduler.draining();
    return std::string("event: ") + (done ? "end" : "job") + "\ndata: " +
           (j ? job_to_json(*j).dump(-1, ' ', false, Json::error_handler_t::replace) : "{}") +
           "\n\n";
  }

 private:
  Api& api_;
  std::string id_;
  uint64_t seen_ = UINT64_MAX;
  std::chrono::steady_clock::time_point last_ = std::chrono::steady_clock::now();
};

HttpResponse job_events(Api& api, const HttpRequest& req, const std::string& id) {
  job_or_404(api, req, id);
  if (api.streams.load() >= kMaxEventStreams)
    throw ApiError(503, "too many event streams open; poll GET /v1/jobs/" + id + " instead");
  HttpResponse r;
  r.content_type = "text/event-stream";
  r.headers.emplace_back("Cache-Control", "no-cache");
  r.stream = std::make_shared<EventSource>(api, id);
  return r;
}

HttpResponse healthz(Api& api) {
  const bool up = api.scheduler.workers_up();
  return json_response(up ? 200 : 503, {{"status", up                         ? "ok"
                                                   : api.scheduler.draining() ? "draining"
                                                                              : "starting"},
                                        {"workers_up", up},
                                        {"version", INDIM_VERSION}});
}

HttpResponse metrics(Api& api) {
  MetricsSnapshot s;
  for (JobState st :
       {JobState::Queued, JobState::Running, JobState::Done, JobState::Failed, JobState::Cancelled})
    s.jobs_by_state.emplace_back(state_name(st), api.store.count(st));
  s.queue_depth = s.jobs_by_state.front().second;
  s.workers_up = api.scheduler.workers_up();
  s.draining = api.scheduler.draining();
  s.memory = api.scheduler.memory().stats();
  s.devices = cuda_memory_info();
  s.connections = api.server != nullptr ? api.server->connections() : 0;
  HttpResponse r;
  r.content_type = "text/plain; version=0.0.4; charset=utf-8";
  r.body = api.metrics.render(s);
  return r;
}

// Every endpoint but /healthz needs "Authorization: Bearer <token>": the token names the tenant.
std::optional<HttpResponse> authenticate(Api& api, HttpRequest& req) {
  const std::string header = req.header("authorization");
  const std::string prefix = "Bearer ";
  const Tenant* t = header.compare(0, prefix.size(), prefix) == 0
                        ? find_tenant(api.options.tenants, header.substr(prefix.size()))
                        : nullptr;
  if (t != nullptr) {
    req.user = t->name;
    return std::nullopt;
  }
  HttpResponse r = error_response(
      401, header.empty() ? "this endpoint needs Authorization: Bearer <token>" : "wrong token");
  r.headers.emplace_back("WWW-Authenticate", "Bearer realm=\"indim\"");
  return r;
}

std::optional<HttpResponse> screen(Api& api, HttpRequest& req) {
  const Target t = parse_target(req.path);
  if (t.route == Route::Healthz && req.method == "GET") return healthz(api);
  if (auto refusal = authenticate(api, req)) return refusal;
  if (t.route == Route::None) return error_response(404, "no such endpoint");
  if (!method_allowed(t.route, req.method)) {
    HttpResponse r = error_response(
        405, req.method + " is not allowed here; " + allowed_methods(t.route) + " are");
    r.headers.emplace_back("Allow", allowed_methods(t.route));
    return r;
  }
  return std::nullopt;
}

HttpResponse handle(Api& api, const HttpRequest& req) {
  const Target t = parse_target(req.path);
  switch (t.route) {
    case Route::Jobs:
      return req.method == "POST" ? post_job(api, req) : list_jobs(api, req);
    case Route::Job:
      return req.method == "DELETE" ? delete_job(api, req, t.id)
                                    : json_response(200, job_to_json(job_or_404(api, req, t.id)));
    case Route::Events:
      return job_events(api, req, t.id);
    case Route::Output:
      return get_output(api, req, t.id, t.output);
    case Route::Metrics:
      return metrics(api);
    default:
      return error_response(404, "no such endpoint");
  }
}

}  // namespace

HttpHandlers make_handlers(Api& api) {
  HttpHandlers h;
  h.screen = [&api](HttpRequest& req) { return screen(api, req); };
  h.handle = [&api](const HttpRequest& req) { return handle(api, req); };
  h.error = error_response;
  h.log = [&api](const HttpRequest& req, int status) {
    api.metrics.request(status);
    if (api.options.log && req.path != "/healthz" && req.path != "/metrics")
      api.options.log((req.method.empty() ? "-" : req.method) + " " +
                      (req.target.empty() ? "-" : req.target) + " " + std::to_string(status));
  };
  return h;
}

}  // namespace indim::service
