// Totals of records over a group (a fine-tune, one of its layers, one of its matrix types):
// intruder counts summed, the calibrated measures averaged over the group's matrices (each
// matrix counts once), null_maxcos at its largest. report.json, the summary and the HTML report
// read the same figures.
#pragma once

#include <map>
#include <string>
#include <utility>
#include <vector>

#include "indim/analyze.hpp"

namespace indim::detail {

struct GroupTotals {
  int matrices = 0;
  int intruders = 0;  ///< at the eps the totals were made for
  int null_directions = 0;
  double sigma_share = 0, update_share = 0;  ///< means
  double subspace_overlap = 0;  ///< mean over the matrices where it is defined; NaN: none
  double null_maxcos = 0;       ///< the largest
  int overlap_matrices = 0;     ///< matrices with a defined overlap

  void add(const MatrixResult& r, double eps);
  /// Turns the sums into means; call once, after the last add.
  void finish();
};

/// The totals of fine-tune `tuned` at `eps`, per layer (ascending; -1 for names without one).
std::map<int, GroupTotals> totals_by_layer(const AnalyzeResult& res, int tuned, double eps);
/// The same per matrix type, in the order the records first name them.
std::vector<std::pair<std::string, GroupTotals>> totals_by_type(const AnalyzeResult& res, int tuned,
                                                                double eps);

}  // namespace indim::detail
