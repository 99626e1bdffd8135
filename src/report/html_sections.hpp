// Sections of the HTML report drawn outside html.cpp: the calibrated measures, the max |cos|
// plot of a matrix with its eps and null lines, and the trajectory view of ordered fine-tunes.
#pragma once

#include <sstream>

#include "indim/analyze.hpp"

namespace indim::detail::html {

/// Per fine-tune and matrix type: intruders, intruder_sigma_share, intruder_update_share,
/// subspace_overlap and null_maxcos at `eps` (table#measures).
void measures_section(std::ostringstream& o, const AnalyzeResult& res, double eps);

/// The matrix table's columns of the measures at `eps`: header cells, and one record's cells.
std::string measure_headers();
std::string measure_cells(const MatrixResult& r, double eps);

/// max |cos| of each tested vector of `r` against j, with the eps line and the null line
/// (null_maxcos: where a random direction lands): svg.maxcos, circle.maxcos-pt, line.null-line.
void maxcos_plot(std::ostringstream& o, const MatrixResult& r, double eps);

/// With two or more fine-tunes: intruders and intruder_update_share against step per matrix
/// type and per layer, and the eps sweep per checkpoint (section#trajectory).
void trajectory_section(std::ostringstream& o, const AnalyzeResult& res, double eps);

}  // namespace indim::detail::html
