// Human-readable summaries of a run.
#pragma once

#include <string>

#include "indim/analyze.hpp"

namespace indim {

/// @brief The terminal summary: per tuned checkpoint a layer x matrix-type table of intruder
/// counts at `primary_eps`, then the totals of every checkpoint across the eps grid.
std::string format_summary(const AnalyzeResult& result, double primary_eps, int k);

}  // namespace indim
