#include "service/job_json.hpp"

#include <chrono>
#include <ctime>

namespace indim::service {

namespace {

using Json = nlohmann::json;

Json when(double seconds) {
  if (seconds <= 0) return nullptr;
  const std::time_t t = static_cast<std::time_t>(seconds);
  std::tm tm{};
  gmtime_r(&t, &tm);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", &tm);
  return buf;
}

double now_seconds() {
  return std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count();
}

// Seconds left at the rate this attempt has done its units (resumed ones took no time).
Json eta(const Job& job) {
  const JobProgress& p = job.progress;
  if (job.state == JobState::Done) return 0;
  const double fresh = p.cost_done - p.cost_resumed;
  if (job.state != JobState::Running || fresh <= 0 || job.started <= 0) return nullptr;
  const double elapsed = now_seconds() - job.started;
  return elapsed * (p.cost_total - p.cost_done) / fresh;
}

Json progress(const Job& job) {
  const JobProgress& p = job.progress;
  return {{"units_done", p.units_done},
          {"units_total", p.units_total},
          {"units_resumed", p.units_resumed},
          {"cost_done", p.cost_done},
          {"cost_total", p.cost_total},
          {"fraction", p.cost_total > 0 ? p.cost_done / p.cost_total : 0.0},
          {"eta_seconds", eta(job)}};
}

}  // namespace

std::vector<std::string> job_outputs(const Job& job) {
  if (job.state != JobState::Done || job.purged) return {};
  std::vector<std::string> out = {"report.json", "matrices.csv", "vectors.csv", "journal.jsonl"};
  if (job.request.contains("options") && job.request["options"].value("html", false))
    out.push_back("report.html");
  if (job.request.value("kind", "analyze") == "mitigate")  // the variant folders as one archive
    out.insert(out.end(), {"mitigation.json", "mitigation.tar"});
  return out;
}

Json job_to_json(const Job& job) {
  Json j = {{"id", job.id},
            {"state", state_name(job.state)},
            {"created", when(job.created)},
            {"started", when(job.started)},
            {"finished", when(job.finished)},
            {"attempts", job.attempts},
            {"kind", job.request.value("kind", "analyze")},
            {"base", job.request.value("base", "")},
            {"tuned", job.request.value("tuned", Json::array())},
            {"options", job.request.value("options", Json::object())},
            {"progress", progress(job)},
            {"seconds", job.seconds},
            {"resumed_records", job.resumed_records},
            {"purged", job.purged},
            {"error", nullptr}};
  if (job.state == JobState::Failed)
    j["error"] = {{"message", job.error},
                  {"class", job.error_class},
                  {"exit_code", job.exit_code},
                  {"problem", job.problem.empty() ? Json(nullptr) : Json(job.problem)}};
  Json outputs = Json::object();
  for (const auto& name : job_outputs(job)) outputs[name] = "/v1/jobs/" + job.id + "/" + name;
  j["outputs"] = outputs;
  return j;
}

}  // namespace indim::service
