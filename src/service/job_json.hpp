// A job as the API shows it (GET /v1/jobs/{id}, the list, the events).
#pragma once

#include <nlohmann/json.hpp>

#include "service/job.hpp"

namespace indim::service {

/// Every output a job may have, by name: what clients write, and nothing else.
const std::vector<std::string>& output_names();

/// Outputs a done job offers, by name (report.html only when asked for).
std::vector<std::string> job_outputs(const Job& job);

/// State, times (ISO 8601, UTC), request, progress with its ETA by estimated cost, the error of
/// a failed job, and the links of a done one's outputs.
nlohmann::json job_to_json(const Job& job);

/// What a listing shows of a job: no request (its base and the number of fine-tunes only), the
/// error message cut at 1 KiB, and its link.
nlohmann::json job_summary_json(const Job& job);

}  // namespace indim::service
