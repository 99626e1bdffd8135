// The service's HTTP/JSON API on cpp-httplib: authentication, limits, and one handler per
// endpoint (docs/service-api.yaml describes them).
#pragma once

#include <atomic>
#include <string>

#include "service/metrics.hpp"
#include "service/roots.hpp"
#include "service/scheduler.hpp"
#include "service/serve_options.hpp"

namespace httplib {
class Server;
}

namespace indim::service {

struct Api {
  const ServeOptions& options;
  Scheduler& scheduler;
  const RootSet& roots;
  Metrics& metrics;
  JobStore& store;
  std::atomic<int> streams{0};  ///< event streams open now (each holds a connection thread)
};

/// Installs the routes, the bearer-token check, the limits and the error bodies on `server`.
void install_api(httplib::Server& server, Api& api);

/// True when `given` equals `expected`, in time that depends only on their lengths.
bool token_matches(const std::string& given, const std::string& expected);

}  // namespace indim::service
