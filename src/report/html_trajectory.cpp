// The trajectory view: fine-tunes of one base in step order (steps from their names, else the
// order given), the intruder count and intruder_update_share against step per matrix type and
// per layer, and each checkpoint's eps sweep.
#include <algorithm>
#include <limits>
#include <map>
#include <numeric>

#include "report/html_sections.hpp"
#include "report/html_util.hpp"
#include "report/totals.hpp"

namespace indim::detail::html {

namespace {

// Fine-tune indices in step order.
std::vector<int> by_step(const AnalyzeResult& res) {
  std::vector<int> order(res.tuned.size());
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(),
                   [&](int a, int b) { return res.tuned[a].step < res.tuned[b].step; });
  return order;
}

// Per matrix type, a line against step of the count (`share` false) or of the mean update share.
std::vector<Series> type_lines(const AnalyzeResult& res, const std::vector<int>& order, double eps,
                               bool share) {
  std::vector<Series> lines;
  for (int t : order)
    for (const auto& [type, g] : totals_by_type(res, t, eps)) {
      auto it = std::find_if(lines.begin(), lines.end(),
                             [&, &type = type](const Series& s) { return s.label == type; });
      if (it == lines.end()) it = lines.insert(lines.end(), Series{type, {}, {}});
      it->x.push_back(static_cast<double>(res.tuned[t].step));
      it->y.push_back(share ? g.update_share : g.intruders);
    }
  return lines;
}

// Layer x step grid of the count or of the mean update share.
GridSpec layer_grid(const AnalyzeResult& res, const std::vector<int>& order, double eps,
                    bool share) {
  GridSpec g;
  g.id = share ? "trajectory-layers-share" : "trajectory-layers";
  g.cell_class = share ? "traj-layer-share" : "traj-layer-cell";
  g.value_format = share ? "%.2f" : "%.0f";
  std::vector<std::map<int, GroupTotals>> per(order.size());
  std::vector<int> layers;
  for (size_t c = 0; c < order.size(); ++c) {
    per[c] = totals_by_layer(res, order[c], eps);
    g.cols.push_back("step " + std::to_string(res.tuned[order[c]].step));
    for (const auto& [layer, t] : per[c])
      if (std::find(layers.begin(), layers.end(), layer) == layers.end()) layers.push_back(layer);
  }
  std::sort(layers.begin(), layers.end());
  g.max = 1;  // shares lie in [0, 1]; counts raise it below
  for (int layer : layers) {
    g.rows.push_back(layer < 0 ? "no layer" : "layer " + std::to_string(layer));
    for (size_t c = 0; c < order.size(); ++c) {
      auto it = per[c].find(layer);
      const double v = it == per[c].end() ? std::numeric_limits<double>::quiet_NaN()
                       : share            ? it->second.update_share
                                          : it->second.intruders;
      g.values.push_back(v);
      if (!share && it != per[c].end()) g.max = std::max(g.max, v);
    }
  }
  return g;
}

// Checkpoint x eps grid of the total count: each checkpoint's eps sweep.
GridSpec sweep_grid(const AnalyzeResult& res, const std::vector<int>& order) {
  GridSpec g;
  g.id = "trajectory-sweep";
  g.cell_class = "traj-sweep-cell";
  for (double e : res.eps) g.cols.push_back("eps " + eps_key(e));
  for (int t : order) {
    g.rows.push_back("step " + std::to_string(res.tuned[t].step));
    for (int n : res.tuned[t].totals) {
      g.values.push_back(n);
      g.max = std::max(g.max, static_cast<double>(n));
    }
  }
  return g;
}

}  // namespace

void trajectory_section(std::ostringstream& o, const AnalyzeResult& res, double eps) {
  if (res.tuned.size() < 2) return;
  const std::vector<int> order = by_step(res);
  o << "<section id=\"trajectory\"><h2>Trajectory (eps " << eps_key(eps) << ")</h2><p>The "
    << res.tuned.size() << " fine-tunes in step order; steps "
    << (res.steps_from == "names" ? "from the numbers in their names" : "are their positions")
    << ". Intruders are summed and intruder_update_share is averaged over each type's or "
       "layer's matrices.</p><div class=\"row\"><figure><figcaption>Intruders against step, "
       "per matrix type</figcaption>";
  line_chart(o, {"trajectory-count", "step", "intruders", "traj-count-pt", 0, "%.0f"},
             type_lines(res, order, eps, false));
  o << "</figure><figure><figcaption>intruder_update_share against step, per matrix "
       "type</figcaption>";
  line_chart(o, {"trajectory-share", "step", "intruder_update_share", "traj-share-pt", 1, "%.2f"},
             type_lines(res, order, eps, true));
  o << "</figure></div><div class=\"row\"><figure><figcaption>Intruders per layer and "
       "step</figcaption>";
  grid_heatmap(o, layer_grid(res, order, eps, false));
  o << "</figure><figure><figcaption>intruder_update_share per layer and step</figcaption>";
  grid_heatmap(o, layer_grid(res, order, eps, true));
  o << "</figure><figure><figcaption>Each checkpoint's eps sweep: intruders summed over "
       "matrices</figcaption>";
  grid_heatmap(o, sweep_grid(res, order));
  o << "</figure></div></section>\n";
}

}  // namespace indim::detail::html
