// JSON form of per-matrix records, shared by the journal and report.json.
#pragma once

#include <nlohmann/json.hpp>

#include "indim/analyze.hpp"

namespace indim::detail {

/// With primary_eps > 0, adds the list of intruders at that eps; with `plot`, the plot data.
nlohmann::ordered_json record_to_json(const MatrixResult& r, double primary_eps, bool plot);
/// Throws indim::Error when a field is missing or has the wrong type.
MatrixResult record_from_json(const nlohmann::json& j);

}  // namespace indim::detail
