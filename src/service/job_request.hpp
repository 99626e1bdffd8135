// A job as a client asks for it: POST /v1/jobs {"base", "tuned", "options"}, checked field by
// field before anything is queued, and turned into the options `indim analyze` would run with.
#pragma once

#include <nlohmann/json.hpp>
#include <string>
#include <string_view>
#include <vector>

#include "indim/analyze.hpp"
#include "indim/mitigate.hpp"

namespace indim::service {

struct JobSpec {
  std::string kind = "analyze";  ///< or "mitigate" (indim mitigate: one fine-tune)
  std::string base;
  std::vector<std::string> tuned;
  /// Every option the service takes, by its CLI name (k, eps, precision, side, algo, include,
  /// exclude, split_fused, html, plot_matrices, plot_top, delta), defaults filled in; for a
  /// mitigate job also lambda, controls and adapter_rank.
  nlohmann::json options;
};

/// @brief The mitigation's options of a mitigate job's `options` (`lambda`: a number or a list
/// of 1 ... 16 in [0, 1]; `controls`: a list of "shrink" and "rescale"; `adapter_rank`: "exact",
/// "r" or a whole number), checked, defaults filled in; the other options stay in `rest`.
/// Throws ApiError 400 naming "options.NAME".
nlohmann::json check_mitigation_options(const nlohmann::json& given, nlohmann::json& rest);

/// @brief Sets a mitigate job's mitigation options on `m` (`analysis` and `out_dir` are the
/// caller's).
void apply_mitigation_options(const nlohmann::json& options, MitigateOptions& m);

/// @brief Parses and checks a request body (at most 64 levels deep, no duplicate keys, no
/// unknown fields, every value in its CLI range). Throws ApiError 400 with the reason.
JobSpec parse_job_spec(std::string_view body);

/// @brief Checks an options object as parse_job_spec does and fills the defaults (also the
/// Python API's check of its keyword arguments). Throws ApiError 400 naming "options.NAME".
nlohmann::json check_job_options(const nlohmann::json& given);

/// @brief The stored form of a job's request, and back (a stored request was checked already).
nlohmann::json spec_to_json(const JobSpec& spec);
JobSpec spec_from_json(const nlohmann::json& j);

/// @brief Sets the analysis options of `spec.options` on `o` (paths, output, backend and cache
/// are the caller's).
void apply_job_options(const nlohmann::json& options, AnalyzeOptions& o);

}  // namespace indim::service
