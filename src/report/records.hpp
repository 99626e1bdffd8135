// JSON forms of per-matrix records and of the run header, shared by the journal and
// report.json.
#pragma once

#include <nlohmann/json.hpp>

#include "indim/analyze.hpp"

namespace indim::detail {

/// With primary_eps > 0, adds the list of intruders at that eps; with `plot`, the plot data.
nlohmann::ordered_json record_to_json(const MatrixResult& r, double primary_eps, bool plot);
/// Throws indim::Error when a field is missing or has the wrong type.
MatrixResult record_from_json(const nlohmann::json& j);
/// The journal's first line: {"indim_journal": 1, schema_version, inputs, settings, layout}.
nlohmann::json header_to_json(const RunHeader& header);
/// The inverse of header_to_json. Throws indim::Error when a field is missing or mistyped.
RunHeader header_from_json(const nlohmann::json& j);
/// A header's (or report.json's) "shard" block. Throws nlohmann::json::exception.
RunHeader::Shard shard_from_json(const nlohmann::json& j);

}  // namespace indim::detail
