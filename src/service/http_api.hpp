// The service's HTTP/JSON API: authentication, routing, and one handler per endpoint
// (docs/service-api.yaml describes them), as handlers of the event-driven HttpServer.
#pragma once

#include <atomic>
#include <string>

#include "service/http_server.hpp"
#include "service/metrics.hpp"
#include "service/roots.hpp"
#include "service/scheduler.hpp"
#include "service/serve_options.hpp"
#include "service/tenants.hpp"

namespace indim::service {

struct Api {
  const ServeOptions& options;
  Scheduler& scheduler;
  const RootSet& roots;
  Metrics& metrics;
  JobStore& store;
  const HttpServer* server = nullptr;  ///< its connection count goes into the metrics
  std::atomic<int> streams{0};         ///< event streams open now
};

/// Event streams open at once (503 beyond); each costs a connection, not a thread.
constexpr int kMaxEventStreams = 64;
/// Bytes of job summaries in one page of GET /v1/jobs ("next" continues the listing).
constexpr size_t kMaxListBytes = 1 << 20;

/// The routes, the bearer-token check and the JSON error bodies, for an HttpServer.
HttpHandlers make_handlers(Api& api);

}  // namespace indim::service
