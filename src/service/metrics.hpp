// The service's Prometheus metrics (text exposition format 0.0.4), series prefixed "indim_".
#pragma once

#include <array>
#include <cstdint>
#include <mutex>
#include <string>
#include <vector>

#include "indim/backend.hpp"
#include "indim/cache.hpp"

namespace indim::service {

/// What a scrape reads from the rest of the service at the time of the scrape.
struct MetricsSnapshot {
  std::vector<std::pair<std::string, int>> jobs_by_state;
  int queue_depth = 0;
  bool workers_up = false, draining = false;
  DecompositionMemory::Stats memory;
  std::vector<DeviceMemoryInfo> devices;
  int connections = 0;  ///< HTTP connections open
};

class Metrics {
 public:
  /// A unit (a matrix of one fine-tune) computed in `seconds`, reading `bytes`.
  void observe_unit(double seconds, uint64_t bytes);
  /// A job that ended in `state` ("done", "failed", "cancelled").
  void job_ended(const std::string& state);
  /// A request answered with `status`.
  void request(int status);
  std::string render(const MetricsSnapshot& s) const;

  /// Upper bounds of the seconds-per-matrix histogram's buckets.
  static constexpr std::array<double, 12> kBuckets = {0.01, 0.05, 0.1, 0.25, 0.5, 1,
                                                      2.5,  5,    10,  30,   60,  300};

 private:
  mutable std::mutex mu_;
  uint64_t matrices_ = 0, bytes_ = 0;
  double seconds_sum_ = 0;
  std::array<uint64_t, kBuckets.size()> buckets_{};  ///< per bucket, not cumulative
  uint64_t done_ = 0, failed_ = 0, cancelled_ = 0;
  std::vector<std::pair<int, uint64_t>> requests_;  ///< by status
};

}  // namespace indim::service
