#include "service/http_api.hpp"

#include <httplib.h>

#include <algorithm>
#include <fstream>

#include "service/api_error.hpp"
#include "service/job_json.hpp"
#include "service/job_request.hpp"

namespace indim::service {

namespace {

using Json = nlohmann::json;
constexpr const char* kJobPath = R"(/v1/jobs/([0-9a-f]{16}))";
constexpr const char* kJson = "application/json";

void send_json(httplib::Response& res, int status, const Json& body) {
  res.status = status;
  // A message may quote a file name that is not UTF-8: replaced, not thrown on.
  res.set_content(body.dump(2, ' ', false, Json::error_handler_t::replace) + "\n", kJson);
}

// The reason of a status httplib sets itself (no route, a body over the limit, ...).
std::string status_text(int status) {
  switch (status) {
    case 400:
      return "bad request";
    case 404:
      return "no such endpoint";
    case 405:
      return "method not allowed here";
    case 413:
      return "request body over the limit";
    case 414:
      return "request URI too long";
    case 416:
      return "range not satisfiable";
    default:
      return "HTTP status " + std::to_string(status);
  }
}

void send_error(httplib::Response& res, int status, const std::string& what) {
  send_json(res, status, {{"error", what}, {"status", status}});
}

// Runs a handler, turning ApiError and anything else into a JSON error.
template <typename F>
httplib::Server::Handler guarded(F f) {
  return [f](const httplib::Request& req, httplib::Response& res) {
    try {
      f(req, res);
    } catch (const ApiError& e) {
      send_error(res, e.status(), e.what());
    } catch (const std::exception& e) {
      send_error(res, 500, e.what());
    }
  };
}

Job job_or_404(Api& api, const std::string& id) {
  std::optional<Job> j = api.scheduler.get(id);
  if (!j) throw ApiError(404, "no job " + id);
  return *j;
}

void post_job(Api& api, const httplib::Request& req, httplib::Response& res) {
  JobSpec spec = parse_job_spec(req.body);
  const std::string base = api.roots.confine(spec.base);
  for (const auto& t : spec.tuned) api.roots.confine(t);
  const Job j = api.scheduler.submit(spec, base);
  res.set_header("Location", "/v1/jobs/" + j.id);
  send_json(res, 202, {{"id", j.id}, {"state", state_name(j.state)}});
}

void list_jobs(Api& api, const httplib::Request& req, httplib::Response& res) {
  std::optional<JobState> state;
  if (req.has_param("state")) {
    JobState s;
    if (!parse_state(req.get_param_value("state"), s))
      throw ApiError(400, "state must be queued, running, done, failed or cancelled");
    state = s;
  }
  int limit = 100;
  if (req.has_param("limit")) {
    const std::string text = req.get_param_value("limit");
    limit = text.size() <= 4 && !text.empty() &&
                    text.find_first_not_of("0123456789") == std::string::npos
                ? std::stoi(text)
                : 0;
    if (limit < 1 || limit > 1000) throw ApiError(400, "limit must lie in 1 ... 1000");
  }
  Json jobs = Json::array();
  for (const Job& j : api.scheduler.list(state, limit)) jobs.push_back(job_to_json(j));
  send_json(res, 200, {{"jobs", jobs}});
}

void delete_job(Api& api, const httplib::Request& req, httplib::Response& res) {
  const bool purge = req.has_param("purge") && req.get_param_value("purge") == "true";
  send_json(res, 200, job_to_json(api.scheduler.cancel(req.matches[1], purge)));
}

const char* content_type(const std::string& name) {
  if (name == "report.html") return "text/html; charset=utf-8";
  if (name == "matrices.csv" || name == "vectors.csv") return "text/csv; charset=utf-8";
  if (name == "journal.jsonl") return "application/x-ndjson";
  if (name == "mitigation.tar") return "application/x-tar";
  return kJson;
}

// A done job's output, streamed from its file.
void get_output(Api& api, const httplib::Request& req, httplib::Response& res) {
  const Job j = job_or_404(api, req.matches[1]);
  const std::string name = req.matches[2];
  if (j.purged) throw ApiError(410, "job " + j.id + ": its outputs were purged");
  if (j.state != JobState::Done)
    throw ApiError(409,
                   "job " + j.id + " is " + state_name(j.state) + "; outputs come when it is done");
  const auto names = job_outputs(j);
  if (std::find(names.begin(), names.end(), name) == names.end())
    throw ApiError(404, "job " + j.id + " has no " + name + " (report.html needs \"html\": true)");
  const std::string path = api.scheduler.job_dir(j.id) + "/" + name;
  auto file = std::make_shared<std::ifstream>(path, std::ios::binary);
  if (!*file) throw ApiError(500, "job " + j.id + ": cannot read " + name);
  file->seekg(0, std::ios::end);
  const auto size = static_cast<size_t>(file->tellg());
  res.set_content_provider(size, content_type(name),
                           [file](size_t offset, size_t length, httplib::DataSink& sink) {
                             std::vector<char> buf(std::min<size_t>(length, 1 << 16));
                             file->seekg(static_cast<std::streamoff>(offset));
                             file->read(buf.data(), static_cast<std::streamsize>(buf.size()));
                             const auto got = static_cast<size_t>(file->gcount());
                             return got > 0 && sink.write(buf.data(), got);
                           });
}

// Server-Sent Events: the job now, then at every change, and "end" once it is over (or the
// service drains). A comment every 15 s finds clients that left.
void job_events(Api& api, const httplib::Request& req, httplib::Response& res) {
  const std::string id = req.matches[1];
  job_or_404(api, id);
  if (api.streams.load() >= std::max(1, api.options.http_threads / 2))
    throw ApiError(503, "too many event streams open; poll GET /v1/jobs/" + id + " instead");
  ++api.streams;
  auto seen = std::make_shared<uint64_t>(UINT64_MAX);
  res.set_header("Cache-Control", "no-cache");
  res.set_chunked_content_provider(
      "text/event-stream",
      [&api, id, seen](size_t, httplib::DataSink& sink) {
        const uint64_t v = *seen == UINT64_MAX
                               ? api.scheduler.version()
                               : api.scheduler.wait_change(*seen, std::chrono::seconds(15));
        if (v == *seen && !api.scheduler.draining()) return sink.write(": keep-alive\n\n", 14);
        *seen = v;
        const std::optional<Job> j = api.scheduler.get(id);
        const bool over = !j || is_terminal(j->state) || api.scheduler.draining();
        const std::string event =
            std::string("event: ") + (over ? "end" : "job") + "\ndata: " +
            (j ? job_to_json(*j).dump(-1, ' ', false, Json::error_handler_t::replace) : "{}") +
            "\n\n";
        if (!sink.write(event.data(), event.size())) return false;
        if (over) sink.done();
        return true;
      },
      [&api](bool) { --api.streams; });
}

void healthz(Api& api, httplib::Response& res) {
  const bool up = api.scheduler.workers_up();
  send_json(res, up ? 200 : 503,
            {{"status", up                         ? "ok"
                        : api.scheduler.draining() ? "draining"
                                                   : "starting"},
             {"workers_up", up},
             {"version", INDIM_VERSION}});
}

void metrics(Api& api, httplib::Response& res) {
  MetricsSnapshot s;
  for (JobState st :
       {JobState::Queued, JobState::Running, JobState::Done, JobState::Failed, JobState::Cancelled})
    s.jobs_by_state.emplace_back(state_name(st), api.store.count(st));
  s.queue_depth = s.jobs_by_state.front().second;
  s.workers_up = api.scheduler.workers_up();
  s.draining = api.scheduler.draining();
  s.memory = api.scheduler.memory().stats();
  s.devices = cuda_memory_info();
  res.set_content(api.metrics.render(s), "text/plain; version=0.0.4; charset=utf-8");
}

// Every endpoint but /healthz needs "Authorization: Bearer <token>".
httplib::Server::HandlerResponse authenticate(Api& api, const httplib::Request& req,
                                              httplib::Response& res) {
  if (req.path == "/healthz") return httplib::Server::HandlerResponse::Unhandled;
  const std::string header = req.get_header_value("Authorization");
  const std::string prefix = "Bearer ";
  const bool ok = header.compare(0, prefix.size(), prefix) == 0 &&
                  token_matches(header.substr(prefix.size()), api.options.token);
  if (ok) return httplib::Server::HandlerResponse::Unhandled;
  res.set_header("WWW-Authenticate", "Bearer realm=\"indim\"");
  send_error(res, 401,
             header.empty() ? "this endpoint needs Authorization: Bearer <token>" : "wrong token");
  return httplib::Server::HandlerResponse::Handled;
}

}  // namespace

bool token_matches(const std::string& given, const std::string& expected) {
  const size_t n = std::max(given.size(), expected.size());
  unsigned char diff = given.size() == expected.size() ? 0 : 1;
  for (size_t i = 0; i < n; ++i) {
    const unsigned char a = i < given.size() ? static_cast<unsigned char>(given[i]) : 0;
    const unsigned char b = i < expected.size() ? static_cast<unsigned char>(expected[i]) : 0;
    diff |= static_cast<unsigned char>(a ^ b);
  }
  return diff == 0 && !expected.empty();
}

void install_api(httplib::Server& s, Api& api) {
  s.set_pre_routing_handler([&api](const httplib::Request& req, httplib::Response& res) {
    return authenticate(api, req, res);
  });
  s.Post("/v1/jobs", guarded([&api](const auto& req, auto& res) { post_job(api, req, res); }));
  s.Get("/v1/jobs", guarded([&api](const auto& req, auto& res) { list_jobs(api, req, res); }));
  s.Get(kJobPath, guarded([&api](const auto& req, auto& res) {
          send_json(res, 200, job_to_json(job_or_404(api, req.matches[1])));
        }));
  s.Delete(kJobPath, guarded([&api](const auto& req, auto& res) { delete_job(api, req, res); }));
  s.Get(std::string(kJobPath) + "/events",
        guarded([&api](const auto& req, auto& res) { job_events(api, req, res); }));
  s.Get(std::string(kJobPath) + R"(/([a-z]+\.(?:json|csv|html|jsonl|tar)))",
        guarded([&api](const auto& req, auto& res) { get_output(api, req, res); }));
  s.Get("/healthz", [&api](const auto&, auto& res) { healthz(api, res); });
  s.Get("/metrics", guarded([&api](const auto&, auto& res) { metrics(api, res); }));
  s.set_error_handler(
      httplib::Server::HandlerWithResponse([](const httplib::Request&, httplib::Response& res) {
        if (res.body.empty()) send_error(res, res.status, status_text(res.status));
        return httplib::Server::HandlerResponse::Handled;
      }));
  s.set_exception_handler([](const httplib::Request&, httplib::Response& res, std::exception_ptr) {
    send_error(res, 500, "internal error");
  });
  s.set_logger([&api](const httplib::Request& req, const httplib::Response& res) {
    api.metrics.request(res.status);
    if (api.options.log && req.path != "/healthz" && req.path != "/metrics")
      api.options.log(req.method + " " + req.path + " " + std::to_string(res.status));
  });
}

}  // namespace indim::service
