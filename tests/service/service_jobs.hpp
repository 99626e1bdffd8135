// What the service's tests share: demo checkpoints generated once per test binary, and jobs
// submitted and followed over HTTP.
#pragma once

#include <chrono>
#include <nlohmann/json.hpp>
#include <string>
#include <thread>

#include "indim/demo.hpp"
#include "service_process.hpp"

namespace indim::test {

/// `small`: one layer, a job of milliseconds; `big`: six layers, seconds with kSlowOptions.
struct DemoModels {
  TempDir dir;
  std::string small, big;
  DemoModels() {
    small = dir / "small";
    DemoOptions s;
    s.hidden = 64, s.intermediate = 128, s.kv_dim = 32, s.layers = 1;
    generate_demo(small, s);
    big = dir / "big";
    DemoOptions b;
    b.hidden = 256, b.intermediate = 640, b.kv_dim = 128, b.layers = 6;
    generate_demo(big, b);
  }
};

inline const DemoModels& demo_models() {
  static const DemoModels m;
  return m;
}

/// Options that make a job on `big` take seconds: both sides, fp64, gesdd.
inline const nlohmann::json kSlowOptions = {
    {"side", "both"}, {"algo", "gesdd"}, {"precision", "fp64"}};

/// POSTs `body`; the job's id, or "" (and a test failure) when it was not accepted.
inline std::string submit_job(httplib::Client& c, const nlohmann::json& body) {
  const auto r = c.Post("/v1/jobs", body.dump(), "application/json");
  if (!r || r->status != 202) {
    ADD_FAILURE() << "submit: " << (r ? r->status : -1) << " " << (r ? r->body : "");
    return "";
  }
  return body_of(r).at("id").get<std::string>();
}

/// Polls the job until `done(job)` or `limit`; the last state seen.
template <typename Pred>
nlohmann::json wait_job(httplib::Client& c, const std::string& id, Pred done,
                        std::chrono::seconds limit = std::chrono::seconds(120)) {
  const auto until = std::chrono::steady_clock::now() + limit;
  nlohmann::json j;
  while (std::chrono::steady_clock::now() < until) {
    j = body_of(c.Get("/v1/jobs/" + id));
    if (j.is_object() && done(j)) return j;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  ADD_FAILURE() << "job " << id << " did not get there in time: " << j.dump();
  return j;
}

inline nlohmann::json wait_state(httplib::Client& c, const std::string& id,
                                 const std::string& state) {
  return wait_job(c, id, [&](const nlohmann::json& j) { return j.value("state", "") == state; });
}

/// Waits for the job to end (done, failed or cancelled).
inline nlohmann::json wait_ended(httplib::Client& c, const std::string& id) {
  return wait_job(c, id, [](const nlohmann::json& j) {
    const std::string s = j.value("state", "");
    return s == "done" || s == "failed" || s == "cancelled";
  });
}

}  // namespace indim::test
