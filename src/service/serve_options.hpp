// How `indim serve` was started: where it listens, what it may read, where it keeps its state,
// and the compute every job runs on.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "service/tenants.hpp"

namespace indim::service {

struct ServeOptions {
  std::string listen = "127.0.0.1:8470";  ///< host:port; port 0 picks a free one
  std::vector<std::string> roots;         ///< folders requests may read
  std::string state_dir;                  ///< jobs.db, jobs/<id>/, cache/, serve.json
  std::vector<Tenant> tenants;            ///< bearer tokens of every endpoint but /healthz
  std::string tls_cert, tls_key;          ///< HTTPS when both are given
  // The compute of every job (as `indim analyze` takes them).
  std::string backend = "auto";
  std::vector<int> devices;
  int streams = 1;
  uint64_t gpu_mem = 0;
  int workers = 1;
  std::string cache_dir;  ///< base decomposition cache; empty: <state>/cache
  bool no_cache = false;
  uint64_t cache_max = 20ull << 30;
  uint64_t memory_max = 8ull << 30;  ///< base decompositions kept in memory between jobs
  // Limits.
  int max_queued = 1000;    ///< queued jobs beyond which a submission gets 429
  double keep_days = 30;    ///< outputs of finished jobs are removed after this
  int keep_jobs = 10000;    ///< ended jobs kept at most (the oldest beyond are removed whole)
  int max_attempts = 3;     ///< times a job may be running when the service dies; then failed
  uint64_t job_memory = 0;  ///< host memory a job may need; 0: the node's physical memory
  int http_threads = 8;     ///< requests handled at once (idle connections take none)
  uint64_t max_body = 1ull << 20;    ///< request body bytes (413 beyond)
  int timeout_s = 30;                ///< a request's header, its body, each piece of an answer
  int max_connections = 1024;        ///< HTTP connections open at once
  int max_client_connections = 128;  ///< of them, from one address
  std::function<void(const std::string&)> log;  ///< one line per event, for stderr
};

}  // namespace indim::service
