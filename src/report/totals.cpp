#include "report/totals.hpp"

#include <algorithm>
#include <cmath>
#include <limits>

namespace indim::detail {

void GroupTotals::add(const MatrixResult& r, double eps) {
  ++matrices;
  intruders += r.count_at(eps);
  null_directions += r.null_directions;
  sigma_share += r.sigma_share_at(eps);
  update_share += r.update_share_at(eps);
  if (!std::isnan(r.subspace_overlap)) subspace_overlap += r.subspace_overlap, ++overlap_matrices;
  if (!std::isnan(r.null_maxcos)) null_maxcos = std::max(null_maxcos, r.null_maxcos);
}

void GroupTotals::finish() {
  if (matrices > 0) sigma_share /= matrices, update_share /= matrices;
  subspace_overlap = overlap_matrices > 0 ? subspace_overlap / overlap_matrices
                                          : std::numeric_limits<double>::quiet_NaN();
}

std::map<int, GroupTotals> totals_by_layer(const AnalyzeResult& res, int tuned, double eps) {
  std::map<int, GroupTotals> out;
  for (const MatrixResult& r : res.records)
    if (r.tuned_index == tuned) out[r.layer].add(r, eps);
  for (auto& [layer, t] : out) t.finish();
  return out;
}

std::vector<std::pair<std::string, GroupTotals>> totals_by_type(const AnalyzeResult& res, int tuned,
                                                                double eps) {
  std::vector<std::pair<std::string, GroupTotals>> out;
  for (const MatrixResult& r : res.records) {
    if (r.tuned_index != tuned) continue;
    auto it =
        std::find_if(out.begin(), out.end(), [&](const auto& g) { return g.first == r.type; });
    if (it == out.end()) it = out.insert(out.end(), {r.type, GroupTotals{}});
    it->second.add(r, eps);
  }
  for (auto& g : out) g.second.finish();
  return out;
}

}  // namespace indim::detail
