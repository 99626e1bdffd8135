#include <cmath>

#include "report/html_sections.hpp"
#include "report/html_util.hpp"
#include "report/totals.hpp"

namespace indim::detail::html {

namespace {

std::string share(double v) { return std::isnan(v) ? std::string("-") : fmt("%.3f", v); }

void measures_row(std::ostringstream& o, const std::string& who, const std::string& type,
                  const GroupTotals& g) {
  o << "<tr class=\"measures-row\"><td>" << esc(who) << "</td><td>" << esc(type) << "</td><td>"
    << g.matrices << "</td><td>" << g.intruders << "</td><td>" << share(g.sigma_share)
    << "</td><td>" << share(g.update_share) << "</td><td>" << share(g.subspace_overlap)
    << "</td><td>" << share(g.null_maxcos) << "</td></tr>";
}

}  // namespace

void measures_section(std::ostringstream& o, const AnalyzeResult& res, double eps) {
  o << "<section id=\"measures-section\"><h2>Beside the count (eps " << eps_key(eps)
    << ")</h2><p><b>intruder_sigma_share</b>: intruders' share of the top-k sigma^2. "
       "<b>intruder_update_share</b>: share of ||W - W0||<sub>F</sub><sup>2</sup> lying in "
       "intruder directions. <b>subspace_overlap</b>: mean squared cosine of the principal "
       "angles between the top-k tuned and base subspaces (1: the same subspace). Shares and "
       "overlap are means over the matrices. <b>null_maxcos</b>: the 99th percentile of max "
       "|cos| of a random direction against the base for that shape (the largest over the "
       "matrices): an eps below it does not count even an entirely new direction.</p>"
       "<table class=\"grid sortable\" id=\"measures\"><thead><tr><th>fine-tune</th>"
       "<th>matrix type</th><th>matrices</th><th>intruders</th><th>intruder_sigma_share</th>"
       "<th>intruder_update_share</th><th>subspace_overlap</th><th>null_maxcos</th></tr></thead>"
       "<tbody>";
  for (size_t t = 0; t < res.tuned.size(); ++t) {
    const std::string who = "[" + std::to_string(t) + "] " + res.tuned[t].path;
    GroupTotals all;
    for (const MatrixResult& r : res.records)
      if (r.tuned_index == static_cast<int>(t)) all.add(r, eps);
    all.finish();
    measures_row(o, who, "all", all);
    for (const auto& [type, g] : totals_by_type(res, static_cast<int>(t), eps))
      measures_row(o, who, type, g);
  }
  o << "</tbody></table></section>\n";
}

std::string measure_headers() {
  return "<th>intruder_sigma_share</th><th>intruder_update_share</th><th>subspace_overlap</th>"
         "<th>null_maxcos</th>";
}

std::string measure_cells(const MatrixResult& r, double eps) {
  return "<td>" + share(r.sigma_share_at(eps)) + "</td><td>" + share(r.update_share_at(eps)) +
         "</td><td>" + share(r.subspace_overlap) + "</td><td>" + share(r.null_maxcos) + "</td>";
}

void maxcos_plot(std::ostringstream& o, const MatrixResult& r, double eps) {
  const int w = 300, h = 190, left = 40, right = 10, top = 10, bottom = 30;
  const int n = std::max(r.k, 1);
  auto X = [&](int j) { return left + (n > 1 ? double(j) / (n - 1) : 0.5) * (w - left - right); };
  auto Y = [&](double c) { return h - bottom - c * (h - top - bottom); };
  o << "<svg class=\"maxcos\" xmlns=\"http://www.w3.org/2000/svg\" width=\"" << w << "\" height=\""
    << h << "\"><line x1=\"" << left << "\" y1=\"" << h - bottom << "\" x2=\"" << w - right
    << "\" y2=\"" << h - bottom << "\" class=\"axis\"/><line x1=\"" << left << "\" y1=\"" << top
    << "\" x2=\"" << left << "\" y2=\"" << h - bottom << "\" class=\"axis\"/>";
  for (double c : {0.0, 0.5, 1.0})
    o << "<text x=\"" << left - 4 << "\" y=\"" << fmt("%.1f", Y(c) + 4)
      << "\" text-anchor=\"end\" class=\"lbl\">" << fmt("%.1f", c) << "</text>";
  o << "<line class=\"eps-line\" x1=\"" << left << "\" x2=\"" << w - right << "\" y1=\""
    << fmt("%.1f", Y(eps)) << "\" y2=\"" << fmt("%.1f", Y(eps))
    << "\" stroke=\"#d62728\" stroke-dasharray=\"5 3\"><title>eps " << eps_key(eps)
    << ": below it, an intruder</title></line>";
  if (!std::isnan(r.null_maxcos))
    o << "<line class=\"null-line\" x1=\"" << left << "\" x2=\"" << w - right << "\" y1=\""
      << fmt("%.1f", Y(r.null_maxcos)) << "\" y2=\"" << fmt("%.1f", Y(r.null_maxcos))
      << "\" stroke=\"#777\" stroke-width=\"2\"><title>null_maxcos " << fmt("%.3f", r.null_maxcos)
      << ": 99% of random directions score below it</title></line>";
  for (int j = 0; j < r.k; ++j) {
    if (std::isnan(r.maxcos[j])) continue;  // a null direction: not tested
    const bool intr = r.maxcos[j] < eps;
    o << "<circle class=\"maxcos-pt\" cx=\"" << fmt("%.1f", X(j)) << "\" cy=\""
      << fmt("%.1f", Y(r.maxcos[j])) << "\" r=\"3.5\" fill=\"" << (intr ? "#d62728" : "#1f77b4")
      << "\"><title>tuned vector " << j << ": max |cos| " << fmt("%.3f", r.maxcos[j])
      << (intr ? " (intruder)" : "") << "</title></circle>";
  }
  o << "<text x=\"" << left << "\" y=\"" << h - 8 << "\" class=\"lbl\">j &#8594; max |cos| (eps "
    << "dashed, null_maxcos grey)</text></svg>";
}

}  // namespace indim::detail::html
