// Load on `indim serve`: status requests at a target rate from several clients while a job
// runs, against the same job on an idle service. Prints the latency percentiles the service held,
// the rate reached and the job's slowdown; --json writes them too.
//   indim_bench_service [--rate 300] [--clients 4] [--hidden 512] [--layers 8] [--json F]
// (the indim binary of the same build, the CPU backend, no cache: both runs compute everything).
#include <algorithm>
#include <atomic>
#include <cstdio>
#include <fstream>
#include <thread>

#include "indim/demo.hpp"
#include "service/service_process.hpp"

using namespace indim;
using Json = nlohmann::json;

namespace {

struct Args {
  double rate = 300;
  int clients = 4;
  int hidden = 512, layers = 8;
  std::string json;
};

Args parse(int argc, char** argv) {
  Args a;
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string k = argv[i], v = argv[i + 1];
    if (k == "--rate")
      a.rate = std::max(1.0, std::atof(v.c_str()));
    else if (k == "--clients")
      a.clients = std::clamp(std::atoi(v.c_str()), 1, 64);
    else if (k == "--hidden")
      a.hidden = std::clamp(std::atoi(v.c_str()), 64, 8192);
    else if (k == "--layers")
      a.layers = std::clamp(std::atoi(v.c_str()), 1, 128);
    else if (k == "--json")
      a.json = v;
  }
  return a;
}

const Json kJob = {{"base", "m/base"},
                   {"tuned", {"m/full"}},
                   {"options", {{"side", "both"}, {"precision", "fp64"}, {"algo", "gesdd"}}}};

std::string submit(httplib::Client& c) {
  const auto r = c.Post("/v1/jobs", kJob.dump(), "application/json");
  if (!r || r->status != 202) throw std::runtime_error("submit failed");
  return test::body_of(r).at("id");
}

bool done(httplib::Client& c, const std::string& id, Json* job = nullptr) {
  const Json j = test::body_of(c.Get("/v1/jobs/" + id));
  if (job != nullptr) *job = j;
  return j.is_object() && j.value("state", "") == "done";
}

// One job on a fresh service; `load` runs beside it until the job is done. The job's seconds.
template <typename Load>
double run_job(const std::string& dir, const std::string& name, Load load) {
  test::ServiceProcess s(dir + "/root", dir + "/" + name,
                         {"--no-cache", "--memory-cache", "0", "--http-threads", "16"});
  if (!s.ready()) throw std::runtime_error("the service did not start: " + s.log());
  auto c = s.client();
  const std::string id = submit(*c);
  std::atomic<bool> stop{false};
  std::thread loader([&] { load(s, id, stop); });
  Json j;
  while (!done(*c, id, &j)) std::this_thread::sleep_for(std::chrono::milliseconds(200));
  stop = true;
  loader.join();
  s.stop(SIGTERM, std::chrono::seconds(60));
  return j.value("seconds", 0.0);
}

double percentile(std::vector<double> v, double p) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  return v[std::min(v.size() - 1, static_cast<size_t>(p * static_cast<double>(v.size())))];
}

}  // namespace

int main(int argc, char** argv) {
  const Args a = parse(argc, argv);
  test::TempDir dir;
  DemoOptions d;
  d.hidden = a.hidden, d.intermediate = a.hidden * 2 + a.hidden / 2, d.kv_dim = a.hidden / 2;
  d.layers = a.layers;
  generate_demo(dir / "root/m", d);

  const double idle = run_job(dir.str(), "idle", [](auto&, auto&, auto&) {});
  std::vector<std::vector<double>> per(static_cast<size_t>(a.clients));
  std::atomic<int> errors{0};
  double wall = 0;
  const double loaded = run_job(
      dir.str(), "loaded",
      [&](test::ServiceProcess& s, const std::string& id, std::atomic<bool>& stop) {
        const auto t0 = std::chrono::steady_clock::now();
        const auto gap = std::chrono::duration<double>(a.clients / a.rate);
        std::vector<std::thread> ts;
        for (int k = 0; k < a.clients; ++k)
          ts.emplace_back([&, k] {
            auto c = s.client();
            auto next = std::chrono::steady_clock::now();
            while (!stop) {
              const auto q0 = std::chrono::steady_clock::now();
              const auto r = c->Get("/v1/jobs/" + id);
              const auto q1 = std::chrono::steady_clock::now();
              if (!r || r->status != 200) ++errors;
              per[static_cast<size_t>(k)].push_back(std::chrono::duration<double>(q1 - q0).count());
              next += std::chrono::duration_cast<std::chrono::steady_clock::duration>(gap);
              std::this_thread::sleep_until(next);
            }
          });
        for (auto& t : ts) t.join();
        wall = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      });
  std::vector<double> all;
  for (const auto& v : per) all.insert(all.end(), v.begin(), v.end());
  const Json out = {{"target_rate", a.rate},
                    {"clients", a.clients},
                    {"requests", all.size()},
                    {"errors", errors.load()},
                    {"rate", wall > 0 ? static_cast<double>(all.size()) / wall : 0.0},
                    {"latency_ms",
                     {{"p50", 1e3 * percentile(all, 0.50)},
                      {"p90", 1e3 * percentile(all, 0.90)},
                      {"p99", 1e3 * percentile(all, 0.99)},
                      {"max", 1e3 * percentile(all, 1.0)}}},
                    {"job_seconds_idle", idle},
                    {"job_seconds_loaded", loaded},
                    {"slowdown", idle > 0 ? loaded / idle : 0.0},
                    {"model", {{"hidden", a.hidden}, {"layers", a.layers}}}};
  std::printf("%s\n", out.dump(2).c_str());
  if (!a.json.empty()) std::ofstream(a.json) << out.dump(2) << "\n";
  return errors.load() == 0 ? 0 : 1;
}
