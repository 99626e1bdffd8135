// Human-readable summaries of a run.
#pragma once

#include <string>
#include <vector>

#include "indim/analyze.hpp"

namespace indim {

/// @brief The terminal summary: per tuned checkpoint a layer x matrix-type table of intruder
/// counts at `primary_eps`, then the totals of every checkpoint across the eps grid.
std::string format_summary(const AnalyzeResult& result, double primary_eps, int k);

}  // namespace indim

namespace indim {

struct HtmlOptions {
  double primary_eps = 0.5;
  int k = 10;
  std::vector<std::string> plot_matrices;  ///< regexes; empty: the plot_top worst per fine-tune
  int plot_top = 4;
  std::string appendix;  ///< HTML of a section added before the table (indim mitigate's)
};

/// @brief A self-contained HTML report (inline SVG, CSS and JavaScript, no network): summary,
/// layer x type heat maps, the eps sweep, |cos| heat maps and spectra of chosen matrices, and a
/// sortable table. Throws indim::UsageError for an invalid plot regex.
std::string format_html(const AnalyzeResult& result, const HtmlOptions& options);

}  // namespace indim
