// The service's client, in the indim binary: `indim submit` and `indim jobs ls|show|cancel|
// fetch` over the HTTP API, so nobody has to write curl.
#pragma once

#include <functional>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>

namespace httplib {
class Client;
}

namespace indim::cli {

class ServiceClient {
 public:
  /// `url` as http://HOST:PORT or https://HOST:PORT (trusting `ca_cert` when given, else the
  /// system's certificates). Throws indim::UsageError for another.
  ServiceClient(const std::string& url, const std::string& token, const std::string& ca_cert = "");
  ~ServiceClient();

  nlohmann::json submit(const nlohmann::json& request);
  /// GET /healthz (no token needed): true when it answers 200; `status` gets its JSON answer
  /// or the connection error.
  bool healthy(std::string& status);
  nlohmann::json job(const std::string& id);
  nlohmann::json list(const std::string& state, int limit);
  nlohmann::json cancel(const std::string& id, bool purge);
  /// Downloads one output of a done job to `path` (a temporary name, then renamed).
  void fetch(const std::string& id, const std::string& name, const std::string& path);
  /// Follows the job's events, calling `on_job` with each state; returns the last one.
  nlohmann::json follow(const std::string& id,
                        const std::function<void(const nlohmann::json&)>& on_job);

 private:
  nlohmann::json call(const std::string& method, const std::string& path,
                      const std::string& body = "");
  std::string url_;
  std::unique_ptr<httplib::Client> http_;
};

/// The token for a client or a server: the first line of `file` when given, else $INDIM_TOKEN.
/// Throws indim::UsageError when neither has one.
std::string read_token(const std::string& file);

/// Downloads every output of done job `job` into `dir`; returns the paths written.
std::vector<std::string> fetch_outputs(ServiceClient& client, const nlohmann::json& job,
                                       const std::string& dir);

}  // namespace indim::cli
