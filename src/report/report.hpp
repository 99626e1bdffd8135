// report.json and matrices.csv from a finished run.
#pragma once

#include <nlohmann/json.hpp>
#include <string>

#include "indim/analyze.hpp"

namespace indim::detail {

/// report.json: schema_version, tool, the run header's inputs and settings, timing, per tuned
/// totals and per matrix records (docs/report-schema.md).
nlohmann::ordered_json build_report(const AnalyzeResult& result, double primary_eps);
/// matrices.csv: one row per matrix record, a header row first; the same columns whatever k is
/// (docs/report-schema.md).
std::string build_matrices_csv(const AnalyzeResult& result);
/// vectors.csv: one row per tested tuned vector (record, j): sigma, maxcos, argmax, flags.
std::string build_vectors_csv(const AnalyzeResult& result, double primary_eps);

}  // namespace indim::detail
