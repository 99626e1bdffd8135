// `indim serve` holding connections that take and give nothing: idle ones (connected, silent) and
// slowloris ones (a request line, then one header line at a time, never the end), while
// /healthz and an authenticated GET /v1/jobs/{id} are asked for on fresh connections. Prints
// their latencies, the service's resident memory before and with the connections, and the bytes
// a header flood got in before its 431; --json writes them too. Exits 1 when the target is
// missed (both answers within 1 s, memory within 64 MiB of idle, a 431 before 1 MiB).
//   indim_bench_service_idle [--idle 200] [--slow 50] [--seconds 10] [--json F]
// (the indim binary of the same build, the CPU backend).
#include <algorithm>
#include <atomic>
#include <cstdio>
#include <fstream>
#include <thread>

#include "indim/demo.hpp"
#include "service/raw_socket.hpp"
#include "service/service_process.hpp"

using namespace indim;
using Json = nlohmann::json;
using Clock = std::chrono::steady_clock;

namespace {

struct Args {
  int idle = 200, slow = 50;
  double seconds = 10;
  std::string json;
};

Args parse(int argc, char** argv) {
  Args a;
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string k = argv[i], v = argv[i + 1];
    if (k == "--idle") a.idle = std::clamp(std::atoi(v.c_str()), 0, 5000);
    if (k == "--slow") a.slow = std::clamp(std::atoi(v.c_str()), 0, 5000);
    if (k == "--seconds") a.seconds = std::clamp(std::atof(v.c_str()), 1.0, 25.0);
    if (k == "--json") a.json = v;
  }
  return a;
}

double ms_since(Clock::time_point t0) {
  return std::chrono::duration<double, std::milli>(Clock::now() - t0).count();
}

// One request on a fresh connection: its milliseconds, or 1e9 when it failed.
double timed_get(const test::ServiceProcess& s, const std::string& path, const std::string& token) {
  auto c = s.client(token);
  c->set_read_timeout(5, 0);
  const auto t0 = Clock::now();
  const auto r = c->Get(path);
  return r && r->status == 200 ? ms_since(t0) : 1e9;
}

Json percentiles(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  auto at = [&](double p) {
    return v.empty() ? 0.0 : v[std::min(v.size() - 1, static_cast<size_t>(p * v.size()))];
  };
  return {{"p50", at(0.5)}, {"p99", at(0.99)}, {"max", v.empty() ? 0.0 : v.back()}};
}

// Header lines until the service answers (or stops reading): the bytes it took.
Json header_flood(int port) {
  test::RawSocket flood(port);
  flood.send_all("GET /v1/jobs HTTP/1.1\r\nHost: x\r\n");
  std::string answer;
  std::thread reader([&] { answer = flood.receive(std::chrono::seconds(30), "\r\n\r\n"); });
  std::string lines;
  while (lines.size() < (64 << 10)) lines += "X-Flood: " + std::string(100, 'a') + "\r\n";
  uint64_t sent = 0;
  while (sent < (256ull << 20) && flood.send_all(lines)) sent += lines.size();
  reader.join();
  return {{"status_line", answer.substr(0, answer.find('\r'))}, {"bytes_sent", sent}};
}

}  // namespace

int main(int argc, char** argv) {
  const Args a = parse(argc, argv);
  test::TempDir dir;
  DemoOptions d;
  d.hidden = 64, d.intermediate = 128, d.kv_dim = 32, d.layers = 1;
  generate_demo(dir / "root/m", d);
  test::ServiceProcess s(dir / "root", dir / "state", {"--max-client-connections", "100000"});
  if (!s.ready()) throw std::runtime_error("the service did not start: " + s.log());
  auto c = s.client();
  const auto posted =
      c->Post("/v1/jobs", R"({"base": "m/base", "tuned": ["m/full"]})", "application/json");
  const std::string id = test::body_of(posted).at("id");
  while (test::body_of(c->Get("/v1/jobs/" + id)).value("state", "") != "done")
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  const uint64_t idle_rss = test::resident_bytes(s.pid());

  const int port = test::port_of(s.url());
  std::vector<test::RawSocket> held, slow;
  for (int i = 0; i < a.idle; ++i) held.emplace_back(port);
  for (int i = 0; i < a.slow; ++i) {
    slow.emplace_back(port);
    slow.back().send_all("GET /v1/jobs/" + id + " HTTP/1.1\r\nHost: x\r\n");
  }
  std::atomic<bool> stop{false};
  std::thread trickle([&] {
    for (int n = 0; !stop; ++n) {
      for (auto& k : slow) k.send_all("X-Slow-" + std::to_string(n) + ": a\r\n");
      std::this_thread::sleep_for(std::chrono::milliseconds(200));
    }
  });
  std::vector<double> health, job;
  uint64_t peak_rss = 0;
  for (const auto t0 = Clock::now(); ms_since(t0) < a.seconds * 1000;) {
    health.push_back(timed_get(s, "/healthz", ""));
    job.push_back(timed_get(s, "/v1/jobs/" + id, test::kToken));
    peak_rss = std::max(peak_rss, test::resident_bytes(s.pid()));
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  const std::string metrics = c->Get("/metrics")->body;
  stop = true;
  trickle.join();
  const Json flood = header_flood(port);
  const size_t at = metrics.find("\nindim_http_connections ");
  const Json out = {
      {"idle_connections", a.idle},
      {"slowloris_connections", a.slow},
      {"seconds", a.seconds},
      {"held_by_the_service", at == std::string::npos ? -1 : std::stoi(metrics.substr(at + 24))},
      {"healthz_ms", percentiles(health)},
      {"get_job_ms", percentiles(job)},
      {"rss_idle_mib", static_cast<double>(idle_rss) / (1 << 20)},
      {"rss_peak_mib", static_cast<double>(peak_rss) / (1 << 20)},
      {"rss_growth_mib",
       (static_cast<double>(peak_rss) - static_cast<double>(idle_rss)) / (1 << 20)},
      {"header_flood", flood}};
  std::printf("%s\n", out.dump(2).c_str());
  if (!a.json.empty()) std::ofstream(a.json) << out.dump(2) << "\n";
  const bool met = *std::max_element(health.begin(), health.end()) < 1000 &&
                   *std::max_element(job.begin(), job.end()) < 1000 &&
                   peak_rss < idle_rss + (64ull << 20) &&
                   flood["status_line"] == "HTTP/1.1 431 Request Header Fields Too Large";
  return met ? 0 : 1;
}
