#include "service/metrics.hpp"

#include <cstdio>
#include <sstream>

namespace indim::service {

namespace {

void family(std::ostringstream& out, const char* name, const char* type, const char* help) {
  out << "# HELP " << name << " " << help << "\n# TYPE " << name << " " << type << "\n";
}

std::string number(double v) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.15g", v);
  return buf;
}

}  // namespace

void Metrics::observe_unit(double seconds, uint64_t bytes) {
  std::lock_guard<std::mutex> lock(mu_);
  ++matrices_;
  bytes_ += bytes;
  seconds_sum_ += seconds;
  for (size_t b = 0; b < kBuckets.size(); ++b)
    if (seconds <= kBuckets[b]) {
      ++buckets_[b];
      break;
    }
}

void Metrics::job_ended(const std::string& state) {
  std::lock_guard<std::mutex> lock(mu_);
  (state == "done" ? done_ : state == "failed" ? failed_ : cancelled_) += 1;
}

void Metrics::request(int status) {
  std::lock_guard<std::mutex> lock(mu_);
  for (auto& [s, n] : requests_)
    if (s == status) {
      ++n;
      return;
    }
  requests_.emplace_back(status, 1);
}

std::string Metrics::render(const MetricsSnapshot& s) const {
  std::lock_guard<std::mutex> lock(mu_);
  std::ostringstream out;
  family(out, "indim_up", "gauge", "1 while the service's job workers run.");
  out << "indim_up " << (s.workers_up ? 1 : 0) << "\n";
  family(out, "indim_draining", "gauge", "1 once SIGTERM asked the service to drain.");
  out << "indim_draining " << (s.draining ? 1 : 0) << "\n";
  family(out, "indim_jobs", "gauge", "Jobs in the database, by state.");
  for (const auto& [state, n] : s.jobs_by_state)
    out << "indim_jobs{state=\"" << state << "\"} " << n << "\n";
  family(out, "indim_queue_depth", "gauge", "Jobs waiting to run.");
  out << "indim_queue_depth " << s.queue_depth << "\n";
  family(out, "indim_jobs_ended_total", "counter", "Jobs ended since start, by final state.");
  out << "indim_jobs_ended_total{state=\"done\"} " << done_ << "\n"
      << "indim_jobs_ended_total{state=\"failed\"} " << failed_ << "\n"
      << "indim_jobs_ended_total{state=\"cancelled\"} " << cancelled_ << "\n";
  family(out, "indim_matrices_total", "counter", "Matrices computed (resumed ones not counted).");
  out << "indim_matrices_total " << matrices_ << "\n";
  family(out, "indim_matrix_seconds", "histogram", "Seconds per matrix of one fine-tune.");
  uint64_t cumulative = 0;
  for (size_t b = 0; b < kBuckets.size(); ++b) {
    cumulative += buckets_[b];
    out << "indim_matrix_seconds_bucket{le=\"" << number(kBuckets[b]) << "\"} " << cumulative
        << "\n";
  }
  out << "indim_matrix_seconds_bucket{le=\"+Inf\"} " << matrices_ << "\n"
      << "indim_matrix_seconds_sum " << number(seconds_sum_) << "\n"
      << "indim_matrix_seconds_count " << matrices_ << "\n";
  family(out, "indim_read_bytes_total", "counter", "Checkpoint bytes read by computed matrices.");
  out << "indim_read_bytes_total " << bytes_ << "\n";
  family(out, "indim_base_cache_hits_total", "counter",
         "Base decompositions found in memory or in the cache directory.");
  out << "indim_base_cache_hits_total{level=\"memory\"} " << s.memory.memory_hits << "\n"
      << "indim_base_cache_hits_total{level=\"disk\"} " << s.memory.disk_hits << "\n";
  family(out, "indim_base_cache_misses_total", "counter", "Base decompositions computed.");
  out << "indim_base_cache_misses_total " << s.memory.misses << "\n";
  family(out, "indim_base_memory_bytes", "gauge", "Bytes of base decompositions held in memory.");
  out << "indim_base_memory_bytes " << s.memory.bytes << "\n";
  family(out, "indim_gpu_memory_free_bytes", "gauge", "Free memory per CUDA device.");
  for (const auto& d : s.devices)
    out << "indim_gpu_memory_free_bytes{device=\"" << d.device << "\"} " << d.free_bytes << "\n";
  family(out, "indim_gpu_memory_total_bytes", "gauge", "Memory per CUDA device.");
  for (const auto& d : s.devices)
    out << "indim_gpu_memory_total_bytes{device=\"" << d.device << "\"} " << d.total_bytes << "\n";
  family(out, "indim_http_connections", "gauge", "HTTP connections open.");
  out << "indim_http_connections " << s.connections << "\n";
  family(out, "indim_http_requests_total", "counter", "HTTP requests answered, by status.");
  for (const auto& [status, n] : requests_)
    out << "indim_http_requests_total{code=\"" << status << "\"} " << n << "\n";
  return out.str();
}

}  // namespace indim::service
