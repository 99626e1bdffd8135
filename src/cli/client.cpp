#include "cli/client.hpp"

#include <httplib.h>
#include <sys/random.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <thread>

#include "indim/error.hpp"
#include "io/atomic_file.hpp"
#include "io/regular_file.hpp"
#include "service/job_json.hpp"
#include "service/tenants.hpp"

namespace fs = std::filesystem;

namespace indim::cli {

namespace {

using Json = nlohmann::json;

// An answer >= 400: bad requests are the caller's (usage, or bad input for paths), the rest the
// service's (runtime).
[[noreturn]] void throw_status(int status, const std::string& body, const std::string& what) {
  const Json j = Json::parse(body, nullptr, false);
  const std::string reason = j.is_object() && j.contains("error") && j["error"].is_string()
                                 ? j["error"].get<std::string>()
                                 : body.substr(0, 200);
  const std::string text = what + ": HTTP " + std::to_string(status) + ": " + reason;
  if (status == 403) throw BadInput(InputProblem::NotFound, text);
  if (status == 400 || status == 401 || status == 404 || status == 409 || status == 410 ||
      status == 413)
    throw UsageError(text);
  throw Error(text);
}

std::string error_text(httplib::Error e) { return httplib::to_string(e); }

// 128 bits from the kernel's CSPRNG, as hex.
std::string random_key() {
  unsigned char bytes[16];
  for (size_t got = 0; got < sizeof bytes;) {
    const ssize_t n = ::getrandom(bytes + got, sizeof bytes - got, 0);
    if (n < 0 && errno != EINTR) throw Error(std::string("getrandom: ") + std::strerror(errno));
    if (n > 0) got += static_cast<size_t>(n);
  }
  std::string out;
  for (const unsigned char b : bytes) {
    char hex[3];
    std::snprintf(hex, sizeof hex, "%02x", b);
    out += hex;
  }
  return out;
}

}  // namespace

std::string read_token(const std::string& file) {
  std::string token;
  if (!file.empty()) {
    token = service::read_secret_file(file);
  } else if (const char* env = std::getenv("INDIM_TOKEN")) {
    token = env;
  }
  if (token.empty()) throw UsageError("no token: give --token-file FILE or set INDIM_TOKEN");
  return token;
}

ServiceClient::ServiceClient(const std::string& url, const std::string& token,
                             const std::string& ca_cert)
    : url_(url) {
  if (url.rfind("http://", 0) != 0 && url.rfind("https://", 0) != 0)
    throw UsageError("--server " + url + ": expected http://HOST:PORT or https://HOST:PORT");
  http_ = std::make_unique<httplib::Client>(url);
  if (!http_->is_valid()) throw UsageError("--server " + url + ": not a usable address");
  http_->set_bearer_token_auth(token);
  if (!ca_cert.empty()) http_->set_ca_cert_path(ca_cert);
  http_->set_connection_timeout(10, 0);
  http_->set_read_timeout(60, 0);
}

ServiceClient::~ServiceClient() = default;

Json ServiceClient::call(const std::string& method, const std::string& path,
                         const std::string& body) {
  httplib::Result r = method == "POST"     ? http_->Post(path, body, "application/json")
                      : method == "DELETE" ? http_->Delete(path)
                                           : http_->Get(path);
  if (!r) throw Error(url_ + path + ": " + error_text(r.error()));
  if (r->status >= 400) throw_status(r->status, r->body, method + " " + path);
  const Json j = Json::parse(r->body, nullptr, false);
  if (j.is_discarded()) throw Error(url_ + path + ": the answer is not JSON");
  return j;
}

// A POST whose answer never came (the service died, the network broke) is sent again with the
// same Idempotency-Key: the service answers with the job the first one made, if it made one.
Json ServiceClient::submit(const Json& request) {
  const httplib::Headers key = {{"Idempotency-Key", random_key()}};
  const std::string body = request.dump();
  for (int attempt = 0;; ++attempt) {
    httplib::Result r = http_->Post("/v1/jobs", key, body, "application/json");
    if (!r && attempt < 5) {
      std::this_thread::sleep_for(std::chrono::seconds(1 << attempt));
      continue;
    }
    if (!r) throw Error(url_ + "/v1/jobs: " + error_text(r.error()));
    if (r->status >= 400) throw_status(r->status, r->body, "POST /v1/jobs");
    const Json j = Json::parse(r->body, nullptr, false);
    if (j.is_discarded()) throw Error(url_ + "/v1/jobs: the answer is not JSON");
    return j;
  }
}

bool ServiceClient::healthy(std::string& status) {
  httplib::Result r = http_->Get("/healthz");
  if (!r) {
    status = url_ + "/healthz: " + error_text(r.error());
    return false;
  }
  const Json j = Json::parse(r->body, nullptr, false);
  status = j.is_discarded() ? "HTTP " + std::to_string(r->status) : j.dump();
  return r->status == 200;
}

Json ServiceClient::job(const std::string& id) { return call("GET", "/v1/jobs/" + id); }

Json ServiceClient::list(const std::string& state, int limit) {
  std::string path = "/v1/jobs?limit=" + std::to_string(limit);
  if (!state.empty()) path += "&state=" + state;
  return call("GET", path);
}

Json ServiceClient::cancel(const std::string& id, bool purge) {
  return call("DELETE", "/v1/jobs/" + id + (purge ? "?purge=true" : ""));
}

void ServiceClient::fetch(const std::string& id, const std::string& name, const std::string& path) {
  detail::AtomicFile out(path);
  int status = 0;
  std::string error_body;
  httplib::Result r = http_->Get(
      "/v1/jobs/" + id + "/" + name,
      [&](const httplib::Response& res) {
        status = res.status;
        return true;
      },
      [&](const char* data, size_t n) {
        if (status >= 400)
          error_body.append(data, std::min<size_t>(n, 4096));
        else
          out.write(data, n);
        return true;
      });
  if (!r) throw Error(url_ + "/v1/jobs/" + id + "/" + name + ": " + error_text(r.error()));
  if (status >= 400) throw_status(status, error_body, "GET /v1/jobs/" + id + "/" + name);
  out.commit();
}

Json ServiceClient::follow(const std::string& id, const std::function<void(const Json&)>& on_job) {
  Json last;
  std::string buffer;
  int status = 0;
  httplib::Result r = http_->Get(
      "/v1/jobs/" + id + "/events",
      [&](const httplib::Response& res) {
        status = res.status;
        return status < 400;
      },
      [&](const char* data, size_t n) {
        buffer.append(data, n);
        for (size_t end; (end = buffer.find("\n\n")) != std::string::npos;) {
          const std::string event = buffer.substr(0, end);
          buffer.erase(0, end + 2);
          const size_t at = event.find("data: ");
          if (at == std::string::npos) continue;  // a keep-alive comment
          last = Json::parse(event.substr(at + 6), nullptr, false);
          if (last.is_object()) on_job(last);
        }
        return true;
      });
  if (status >= 400) return job(id);  // no stream (too many open): the state now
  if (!r && !last.is_object())
    throw Error(url_ + "/v1/jobs/" + id + "/events: " + error_text(r.error()));
  return last;
}

namespace {

// The outputs a job lists, each checked to be one indim writes: a name from the service never
// chooses where a file goes (a compromised service, or one reached over plain http, could list
// "../x" or an absolute path).
std::vector<std::string> checked_output_names(const Json& job) {
  const std::string id = job.value("id", "");
  if (id.size() != 16 || id.find_first_not_of("0123456789abcdef") != std::string::npos)
    throw Error("the service answered with a job id that is not one: \"" + id.substr(0, 40) + "\"");
  if (!job.contains("outputs") || !job.at("outputs").is_object())
    throw Error("job " + id + ": the service lists no outputs");
  const auto& known = service::output_names();
  std::vector<std::string> names;
  for (const auto& [name, link] : job.at("outputs").items()) {
    if (std::find(known.begin(), known.end(), name) == known.end())
      throw Error("job " + id + ": the service lists an output called \"" + name.substr(0, 80) +
                  "\", which is none of indim's; nothing was written");
    if (name != "report.json") names.push_back(name);
  }
  return names;
}

}  // namespace

std::vector<std::string> fetch_outputs(ServiceClient& client, const Json& job,
                                       const std::string& dir) {
  std::vector<std::string> names = checked_output_names(job);
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (ec) throw Error(dir + ": cannot create the output folder: " + ec.message());
  if (job.at("outputs").contains("report.json"))
    names.push_back("report.json");  // the mark of a whole download
  std::vector<std::string> written;
  for (const auto& name : names) {
    const std::string path = (fs::path(dir) / name).string();
    client.fetch(job.at("id").get<std::string>(), name, path);
    written.push_back(path);
  }
  return written;
}

}  // namespace indim::cli
