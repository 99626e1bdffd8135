// `indim serve`: the batch service, composed: the state folder locked, the job database, the
// scheduler, the HTTP server; SIGTERM (or SIGINT) drains it and exits 0.
#pragma once

#include "service/serve_options.hpp"

namespace indim::service {

/// Runs the service until SIGTERM or SIGINT. Throws indim::UsageError for bad options and
/// indim::Error when the state folder is in use or the address cannot be bound.
int serve(const ServeOptions& options);

/// Splits "host:port" ("[::1]:8470" for IPv6). Throws indim::UsageError.
std::pair<std::string, int> parse_listen(const std::string& listen);
/// True for 127.0.0.0/8, ::1 and "localhost".
bool is_loopback(const std::string& host);

}  // namespace indim::service
