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

Json error_json(const Job& job) {
  if (job.state != JobState::Failed) return nullptr;
  return {{"message", job.error},
          {"class", job.error_class},
          {"exit_code", job.exit_code},
          {"problem", job.problem.empty() ? Json(nullptr) : Json(job.problem)}};
}

}  // namespace

const std::vector<std::string>& output_names() {
  static const std::vector<std::string> names = {"report.json", "matrices.csv", "vectors.csv",
                                                 "journal.jsonl", "report.html"};
  return names;
}

std::vector<std::string> job_outputs(const Job& job) {
  if (job.state != JobState::Done || job.purged) return {};
  std::vector<std::string> out(output_names().begin(), output_names().end() - 1);
  if (job.request.contains("options") && job.request["options"].value("html", false))
    out.push_back("report.html");
  if (job.request.value("kind", "analyze") == "mitigate")  // the variant folders as one archive
    out.insert(out.end(), {"mitigation.json", "mitigation.tar"});
  return out;
}

namespace {

// What every view of a job shows: whose, its state, when, how far, how it failed.
Json common_fields(const Job& job) {
  const Json base = job.request.value("base", Json(""));
  const Json kind = job.request.value("kind", Json("analyze"));
  return {{"id", job.id},
          {"tenant", job.tenant},
          {"state", state_name(job.state)},
          {"created", when(job.created)},
          {"started", when(job.started)},
          {"finished", when(job.finished)},
          {"attempts", job.attempts},
          {"kind", kind.is_string() ? kind : Json("analyze")},
          {"base", base.is_string() ? base : Json("")},
          {"progress", progress(job)},
          {"purged", job.purged},
          {"error", error_json(job)}};
}

}  // namespace

Json job_summary_json(const Job& job) {
  Json j = common_fields(job);
  j["tuned_count"] = job.tuned_count;
  j["href"] = "/v1/jobs/" + job.id;
  return j;
}

Json job_to_json(const Job& job) {
  Json j = common_fields(job);
  j["tuned"] = job.request.value("tuned", Json::array());
  j["options"] = job.request.value("options", Json::object());
  j["seconds"] = job.seconds;
  j["resumed_records"] = job.resumed_records;
  Json outputs = Json::object();
  for (const auto& name : job_outputs(job)) outputs[name] = "/v1/jobs/" + job.id + "/" + name;
  j["outputs"] = outputs;
  return j;
}

}  // namespace indim::service
