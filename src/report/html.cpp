// The HTML report: one file, everything inline (SVG drawn here, a little CSS and JavaScript),
// readable with JavaScript disabled. Marks carry classes the browser tests count:
// hm-cell (layer x type heat map), sweep-pt (eps sweep), cos-row and intruder-mark (|cos|
// heat maps), sigma-pt and intruder-sigma (spectra).
#include <algorithm>
#include <array>
#include <cmath>
#include <cstdio>
#include <map>
#include <sstream>
#include <tuple>

#include "indim/error.hpp"
#include "indim/report.hpp"
#include "plan/regex.hpp"
#include "report/html_sections.hpp"
#include "report/html_util.hpp"

namespace indim {

namespace {

using detail::html::cos_colour;
using detail::html::count_colour;
using detail::html::esc;
using detail::html::fmt;

std::string tuned_label(const AnalyzeResult& r, size_t t) {
  return "[" + std::to_string(t) + "] " + r.tuned[t].path;
}

// " at commit 0123abcd" for an input given as a hub id.
std::string hub_note(const InputInfo& in) {
  return in.hub.id.empty() ? "" : " at commit " + esc(in.hub.commit.substr(0, 12));
}

void summary(std::ostringstream& o, const AnalyzeResult& res, const HtmlOptions& opt) {
  const RunHeader& h = res.header;
  o << "<section id=\"summary\"><h2>Summary</h2><table class=\"kv\">";
  o << "<tr><th>base</th><td>" << esc(h.base.path) << hub_note(h.base) << " (" << esc(h.base.kind)
    << ", " << h.base.tensors << " tensors)</td></tr>";
  for (size_t t = 0; t < res.tuned.size(); ++t)
    o << "<tr><th>fine-tune [" << t << "]</th><td>" << esc(res.tuned[t].path)
      << (t < h.tuned.size() ? hub_note(h.tuned[t]) : "") << " (" << res.tuned[t].matrices
      << " matrices)</td></tr>";
  o << "<tr><th>settings</th><td>k = " << h.k << ", primary eps = " << eps_key(opt.primary_eps)
    << ", side " << esc(h.side) << ", " << esc(h.precision) << ", algorithm " << esc(h.algo)
    << ", backend " << esc(res.backend) << "</td></tr>";
  o << "<tr><th>time</th><td>" << fmt("%.2f", res.seconds) << " s";
  if (res.resumed > 0) o << " (" << res.resumed << " records resumed from the journal)";
  o << "</td></tr></table>";
  o << "<h3>Intruder dimensions summed over matrices</h3><table class=\"grid\" "
       "id=\"totals\"><tr><th>fine-tune</th>";
  for (double e : res.eps) o << "<th>eps " << eps_key(e) << "</th>";
  o << "</tr>";
  for (size_t t = 0; t < res.tuned.size(); ++t) {
    o << "<tr><td>" << esc(tuned_label(res, t)) << "</td>";
    for (int n : res.tuned[t].totals) o << "<td>" << n << "</td>";
    o << "</tr>";
  }
  o << "</table></section>\n";
}

void layer_heatmaps(std::ostringstream& o, const AnalyzeResult& res, double eps) {
  std::vector<std::string> types;
  std::vector<int> layers;
  int max_count = 1;
  std::map<std::tuple<int, int, std::string>, int> cell;  // tuned, layer, type
  for (const auto& r : res.records) {
    if (std::find(types.begin(), types.end(), r.type) == types.end()) types.push_back(r.type);
    if (std::find(layers.begin(), layers.end(), r.layer) == layers.end()) layers.push_back(r.layer);
    int& c = cell[{r.tuned_index, r.layer, r.type}];
    c += r.count_at(eps);
    max_count = std::max(max_count, c);
  }
  std::sort(layers.begin(), layers.end());
  const int cw = 46, ch = layers.size() > 40 ? 8 : 18, left = 56, top = 110;
  const int w = left + cw * static_cast<int>(types.size()) + 80;  // room for the slanted labels
  const int hgt = top + ch * static_cast<int>(layers.size()) + 10;
  o << "<section id=\"heatmaps\"><h2>Intruders per layer and matrix type (eps " << eps_key(eps)
    << ")</h2><p>Darker is more intruder dimensions; the scale is shared, from "
    << "0 to " << max_count << ". Hover a cell for its count.</p><div class=\"row\">";
  for (size_t t = 0; t < res.tuned.size(); ++t) {
    o << "<figure><figcaption>" << esc(tuned_label(res, t)) << "</figcaption><svg class=\"hm\" "
      << "xmlns=\"http://www.w3.org/2000/svg\" width=\"" << w << "\" height=\"" << hgt << "\">";
    for (size_t i = 0; i < types.size(); ++i)
      o << "<text x=\"" << left + cw * i + cw / 2 << "\" y=\"" << top - 6
        << "\" transform=\"rotate(-45 " << left + cw * i + cw / 2 << " " << top - 6
        << ")\" class=\"lbl\">" << esc(types[i]) << "</text>";
    for (size_t l = 0; l < layers.size(); ++l) {
      if (ch >= 14 || l % 5 == 0)
        o << "<text x=\"" << left - 6 << "\" y=\"" << top + ch * l + ch - 4
          << "\" text-anchor=\"end\" class=\"lbl\">" << layers[l] << "</text>";
      for (size_t i = 0; i < types.size(); ++i) {
        auto it = cell.find({static_cast<int>(t), layers[l], types[i]});
        const bool has = it != cell.end();
        const int n = has ? it->second : 0;
        o << "<rect class=\"hm-cell\" x=\"" << left + cw * i << "\" y=\"" << top + ch * l
          << "\" width=\"" << cw - 1 << "\" height=\"" << ch - 1 << "\" fill=\""
          << (has ? count_colour(static_cast<double>(n) / max_count) : std::string("#eeeeee"))
          << "\"><title>layer " << layers[l] << " " << esc(types[i]) << ": "
          << (has ? std::to_string(n) : std::string("not analysed")) << "</title></rect>";
        if (has && ch >= 14)
          o << "<text x=\"" << left + cw * i + cw / 2 << "\" y=\"" << top + ch * l + ch - 5
            << "\" text-anchor=\"middle\" class=\"num\" fill=\""
            << (n * 2 > max_count ? "#fff" : "#333") << "\">" << n << "</text>";
      }
    }
    o << "</svg></figure>";
  }
  o << "</div></section>\n";
}

// One expert matrix type of one fine-tune: counts by (layer, expert).
struct ExpertGrid {
  std::vector<int> layers;
  int experts = 0;
  std::map<std::pair<int, int>, int> count;
};

// Mixtures of experts: for each fine-tune and each expert matrix type, a layer x expert map
// of intruder counts. Cells are a few pixels wide so that 256 experts fit a screen: the
// analysed cells are one path per colour level, and only cells with intruders carry a
// rectangle (ex-cell) with a tooltip, which keeps a 58 x 256 map small.
void expert_heatmaps(std::ostringstream& o, const AnalyzeResult& res, double eps) {
  std::map<std::pair<int, std::string>, ExpertGrid> grids;  // (tuned, type)
  int max_count = 1;
  for (const auto& r : res.records) {
    if (r.expert < 0) continue;
    ExpertGrid& g = grids[{r.tuned_index, r.type}];
    if (std::find(g.layers.begin(), g.layers.end(), r.layer) == g.layers.end())
      g.layers.push_back(r.layer);
    g.experts = std::max(g.experts, r.expert + 1);
    int& c = g.count[{r.layer, r.expert}];
    c += r.count_at(eps);
    max_count = std::max(max_count, c);
  }
  if (grids.empty()) return;
  o << "<section id=\"experts\"><h2>Intruders per layer and expert (eps " << eps_key(eps)
    << ")</h2><p>One map per fine-tune and expert matrix type: a row per layer, a column per "
    << "expert; darker is more intruder dimensions (0 to " << max_count << "), grey is not "
    << "analysed. Hover a coloured cell for its count.</p><div class=\"row\">";
  for (auto& [key, g] : grids) {
    std::sort(g.layers.begin(), g.layers.end());
    const int cw = g.experts > 128 ? 3 : g.experts > 32 ? 6 : 14, ch = 10, left = 40, top = 8;
    const int w = left + cw * g.experts + 10, h = top + ch * static_cast<int>(g.layers.size()) + 28;
    o << "<figure><figcaption>" << esc(tuned_label(res, key.first)) << ": " << esc(key.second)
      << " (" << g.experts << " experts)</figcaption><svg class=\"expert-map\" "
      << "xmlns=\"http://www.w3.org/2000/svg\" width=\"" << w << "\" height=\"" << h << "\">"
      << "<rect x=\"" << left << "\" y=\"" << top << "\" width=\"" << cw * g.experts
      << "\" height=\"" << ch * g.layers.size() << "\" fill=\"#eeeeee\"/>";
    constexpr int kLevels = 16;
    std::vector<std::string> paths(kLevels);
    std::ostringstream marks;
    for (size_t l = 0; l < g.layers.size(); ++l)
      for (int e = 0; e < g.experts; ++e) {
        auto it = g.count.find({g.layers[l], e});
        if (it == g.count.end()) continue;
        const int x = left + cw * e, y = top + ch * static_cast<int>(l);
        const double t = static_cast<double>(it->second) / max_count;
        const int level = std::clamp(static_cast<int>(t * (kLevels - 1) + 0.5), 0, kLevels - 1);
        paths[level] += "M" + std::to_string(x) + " " + std::to_string(y) + "h" +
                        std::to_string(cw) + "v" + std::to_string(ch) + "h-" + std::to_string(cw) +
                        "z";
        if (it->second > 0)
          marks << "<rect class=\"ex-cell\" x=\"" << x << "\" y=\"" << y << "\" width=\"" << cw
                << "\" height=\"" << ch << "\" fill=\"transparent\"><title>layer " << g.layers[l]
                << ", expert " << e << ": " << it->second << "</title></rect>";
      }
    for (int lv = 0; lv < kLevels; ++lv)
      if (!paths[lv].empty())
        o << "<path fill=\"" << count_colour(static_cast<double>(lv) / (kLevels - 1)) << "\" d=\""
          << paths[lv] << "\"/>";
    o << marks.str();
    for (size_t l = 0; l < g.layers.size(); ++l)
      if (g.layers.size() <= 16 || l % 4 == 0)
        o << "<text x=\"" << left - 4 << "\" y=\"" << top + ch * l + ch - 1
          << "\" text-anchor=\"end\" class=\"lbl\">" << g.layers[l] << "</text>";
    const int tick = g.experts > 64 ? 32 : g.experts > 16 ? 8 : 1;
    for (int e = 0; e < g.experts; e += tick)
      o << "<text x=\"" << left + cw * e << "\" y=\"" << h - 8 << "\" class=\"lbl\">" << e
        << "</text>";
    o << "</svg></figure>";
  }
  o << "</div></section>\n";
}

// The noise floor by layer and matrix type: intruders, the noise floor's count and how many of
// the intruders it explains (per matrix the smaller of the two), summed.
void noise_floor_table(std::ostringstream& o, const AnalyzeResult& res, double eps) {
  std::map<std::tuple<int, int, std::string>, std::array<int, 3>> rows;
  std::map<int, std::array<int, 3>> totals;
  std::string format;
  for (const auto& r : res.records) {
    if (!r.has_noise_floor) continue;
    const int n = r.count_at(eps), nf = r.noise_floor_at(eps), ex = std::min(n, nf);
    auto& c = rows[{r.tuned_index, r.layer, r.type}];
    auto& t = totals[r.tuned_index];
    c[0] += n, c[1] += nf, c[2] += ex, t[0] += n, t[1] += nf, t[2] += ex;
    format = r.noise_floor.format;
  }
  if (rows.empty()) return;
  o << "<section id=\"noise-floor\"><h2>Noise floor (eps " << eps_key(eps) << ")</h2><p>"
    << "Each matrix's base against an independent re-quantisation of itself in the fine-tune's "
    << "format (" << esc(format) << ", the base plus a dither of half a quantisation step): "
    << "the intruders a fine-tune that changed nothing would show. ";
  for (const auto& [t, c] : totals)
    o << esc(tuned_label(res, t)) << ": " << c[0] << " intruders, of which the noise floor "
      << "explains " << c[2] << ". ";
  o << "</p><table class=\"grid sortable\" id=\"noise-floor-table\"><thead><tr><th>fine-tune"
    << "</th><th>type</th><th>layer</th><th>intruders</th><th>noise floor</th><th>explained"
    << "</th></tr></thead><tbody>";
  for (const auto& [k, c] : rows)
    o << "<tr><td>" << std::get<0>(k) << "</td><td>" << esc(std::get<2>(k)) << "</td><td>"
      << std::get<1>(k) << "</td><td>" << c[0] << "</td><td>" << c[1] << "</td><td>" << c[2]
      << "</td></tr>";
  o << "</tbody></table></section>\n";
}

void eps_sweep_chart(std::ostringstream& o, const AnalyzeResult& res) {
  const int w = 560, h = 320, left = 60, right = 170, top = 20, bottom = 44;
  int ymax = 1;
  for (const auto& t : res.tuned)
    for (int n : t.totals) ymax = std::max(ymax, n);
  auto X = [&](double e) { return left + e * (w - left - right); };
  auto Y = [&](double n) { return h - bottom - n / ymax * (h - top - bottom); };
  o << "<section id=\"sweep\"><h2>Intruder dimensions against eps</h2><svg "
       "xmlns=\"http://www.w3.org/2000/svg\" width=\""
    << w << "\" height=\"" << h << "\">";
  o << "<line x1=\"" << left << "\" y1=\"" << h - bottom << "\" x2=\"" << w - right << "\" y2=\""
    << h - bottom << "\" class=\"axis\"/><line x1=\"" << left << "\" y1=\"" << top << "\" x2=\""
    << left << "\" y2=\"" << h - bottom << "\" class=\"axis\"/>";
  for (int i = 0; i <= 10; i += 2) {
    const double e = i / 10.0;
    o << "<text x=\"" << fmt("%.1f", X(e)) << "\" y=\"" << h - bottom + 16
      << "\" text-anchor=\"middle\" class=\"lbl\">" << fmt("%.1f", e) << "</text>";
  }
  for (int i = 0; i <= 4; ++i) {
    const double n = ymax * i / 4.0;
    o << "<text x=\"" << left - 6 << "\" y=\"" << fmt("%.1f", Y(n) + 4)
      << "\" text-anchor=\"end\" class=\"lbl\">" << fmt("%.0f", n) << "</text>";
  }
  o << "<text x=\"" << (left + w - right) / 2 << "\" y=\"" << h - 6
    << "\" text-anchor=\"middle\" class=\"lbl\">eps</text>";
  for (size_t t = 0; t < res.tuned.size(); ++t) {
    const char* col = detail::html::palette(t);
    o << "<polyline fill=\"none\" stroke=\"" << col << "\" stroke-width=\"2\" points=\"";
    for (size_t e = 0; e < res.eps.size(); ++e)
      o << fmt("%.1f", X(res.eps[e])) << "," << fmt("%.1f", Y(res.tuned[t].totals[e])) << " ";
    o << "\"/>";
    for (size_t e = 0; e < res.eps.size(); ++e)
      o << "<circle class=\"sweep-pt\" cx=\"" << fmt("%.1f", X(res.eps[e])) << "\" cy=\""
        << fmt("%.1f", Y(res.tuned[t].totals[e])) << "\" r=\"3.5\" fill=\"" << col << "\"><title>"
        << esc(tuned_label(res, t)) << ", eps " << eps_key(res.eps[e]) << ": "
        << res.tuned[t].totals[e] << "</title></circle>";
    o << "<rect x=\"" << w - right + 12 << "\" y=\"" << top + 18 * t << "\" width=\"12\" "
      << "height=\"12\" fill=\"" << col << "\"/><text x=\"" << w - right + 30 << "\" y=\""
      << top + 18 * t + 10 << "\" class=\"lbl\">[" << t << "] "
      << esc(res.tuned[t].path.size() > 20
                 ? "..." + res.tuned[t].path.substr(res.tuned[t].path.size() - 17)
                 : res.tuned[t].path)
      << "</text>";
  }
  o << "</svg></section>\n";
}

// The smallest tested maxcos (null directions are not tested), 1 when none was.
double min_maxcos(const MatrixResult& r) {
  double m = 1.0;
  for (double c : r.maxcos)
    if (c < m) m = c;  // false for NaN
  return m;
}

std::vector<const MatrixResult*> chosen(const AnalyzeResult& res, const HtmlOptions& opt) {
  const auto rs = detail::compile_option_patterns(opt.plot_matrices, "--plot-matrices");
  constexpr size_t kMaxPerTuned = 24;  // keeps the file small whatever the regex matches
  std::vector<const MatrixResult*> out;
  for (size_t t = 0; t < res.tuned.size(); ++t) {
    std::vector<const MatrixResult*> mine;
    for (const auto& r : res.records)
      if (r.tuned_index == static_cast<int>(t) && !r.cos_head.empty()) mine.push_back(&r);
    if (!rs.empty()) {
      std::vector<const MatrixResult*> m;
      for (auto* r : mine)
        if (detail::any_search(rs, r->name)) m.push_back(r);
      mine = m;
    } else {
      std::stable_sort(mine.begin(), mine.end(), [&](auto* a, auto* b) {
        const int ca = a->count_at(opt.primary_eps), cb = b->count_at(opt.primary_eps);
        return ca != cb ? ca > cb : min_maxcos(*a) < min_maxcos(*b);
      });
      if (mine.size() > static_cast<size_t>(std::max(opt.plot_top, 0))) mine.resize(opt.plot_top);
    }
    if (mine.size() > kMaxPerTuned) mine.resize(kMaxPerTuned);
    out.insert(out.end(), mine.begin(), mine.end());
  }
  return out;
}

// Cells are grouped into one path per colour level, which keeps a 10 x 50 map near 10 kB;
// each row carries a transparent rect (cos-row) with its tooltip.
void cos_heatmap(std::ostringstream& o, const MatrixResult& r, double eps) {
  constexpr int kLevels = 32;
  const int cw = 9, ch = 16, left = 34, top = 10, markw = 20;
  const int w = left + cw * r.head_cols + markw, h = top + ch * r.k + 34;
  o << "<svg class=\"cos\" xmlns=\"http://www.w3.org/2000/svg\" width=\"" << w << "\" height=\""
    << h << "\">";
  std::vector<std::string> paths(kLevels);
  for (int j = 0; j < r.k; ++j)
    for (int i = 0; i < r.head_cols; ++i) {
      const double v = r.cos_head[static_cast<size_t>(j) * r.head_cols + i];
      const int level = std::clamp(static_cast<int>(v * kLevels), 0, kLevels - 1);
      paths[level] += "M" + std::to_string(left + cw * i) + " " + std::to_string(top + ch * j) +
                      "h" + std::to_string(cw) + "v" + std::to_string(ch) + "h-" +
                      std::to_string(cw) + "z";
    }
  for (int l = 0; l < kLevels; ++l)
    if (!paths[l].empty())
      o << "<path class=\"cos-level\" fill=\"" << cos_colour((l + 0.5) / kLevels) << "\" d=\""
        << paths[l] << "\"/>";
  for (int j = 0; j < r.k; ++j) {
    o << "<text x=\"" << left - 4 << "\" y=\"" << top + ch * j + ch - 4
      << "\" text-anchor=\"end\" class=\"lbl\">" << j << "</text><rect class=\"cos-row\" x=\""
      << left << "\" y=\"" << top + ch * j << "\" width=\"" << cw * r.head_cols << "\" height=\""
      << ch << "\" fill=\"transparent\"><title>tuned vector " << j
      << (std::isnan(r.maxcos[j])
              ? std::string(": a null direction (sigma below the floor), not tested")
              : ": max |cos| " + fmt("%.3f", r.maxcos[j]) +
                    " over all base vectors, best base vector " + std::to_string(r.argmax[j]))
      << "</title></rect>";
    if (r.maxcos[j] < eps) {
      const int x = left + cw * r.head_cols + 4, y = top + ch * j + ch / 2;
      o << "<polygon class=\"intruder-mark\" points=\"" << x << "," << y << " " << x + 12 << ","
        << y - 6 << " " << x + 12 << "," << y + 6 << "\" fill=\"#d62728\"><title>intruder: "
        << "max |cos| " << fmt("%.3f", r.maxcos[j]) << "</title></polygon>";
    }
  }
  o << "<text x=\"" << left << "\" y=\"" << h - 8 << "\" class=\"lbl\">base singular vectors 0 ... "
    << r.head_cols - 1 << " &#8594;</text></svg>";
}

void spectrum(std::ostringstream& o, const MatrixResult& r, double eps) {
  const int w = 330, h = 190, left = 40, right = 10, top = 10, bottom = 30;
  const size_t n = std::max(r.sigma_head.size(), r.base_sigma_head.size());
  double smax = 0;
  for (double s : r.sigma_head) smax = std::max(smax, s);
  for (double s : r.base_sigma_head) smax = std::max(smax, s);
  if (smax <= 0 || n == 0) return;
  auto X = [&](size_t i) {
    return left + (n > 1 ? double(i) / (n - 1) : 0.5) * (w - left - right);
  };
  auto Y = [&](double s) { return h - bottom - s / smax * (h - top - bottom); };
  o << "<svg class=\"spec\" xmlns=\"http://www.w3.org/2000/svg\" width=\"" << w << "\" height=\""
    << h << "\"><line x1=\"" << left << "\" y1=\"" << h - bottom << "\" x2=\"" << w - right
    << "\" y2=\"" << h - bottom << "\" class=\"axis\"/><line x1=\"" << left << "\" y1=\"" << top
    << "\" x2=\"" << left << "\" y2=\"" << h - bottom << "\" class=\"axis\"/>";
  o << "<polyline fill=\"none\" stroke=\"#999\" stroke-dasharray=\"4 3\" points=\"";
  for (size_t i = 0; i < r.base_sigma_head.size(); ++i)
    o << fmt("%.1f", X(i)) << "," << fmt("%.1f", Y(r.base_sigma_head[i])) << " ";
  o << "\"><title>base spectrum</title></polyline>";
  for (size_t i = 0; i < r.sigma_head.size(); ++i) {
    const bool intr = i < r.maxcos.size() && r.maxcos[i] < eps;
    o << "<circle class=\"" << (intr ? "sigma-pt intruder-sigma" : "sigma-pt") << "\" cx=\""
      << fmt("%.1f", X(i)) << "\" cy=\"" << fmt("%.1f", Y(r.sigma_head[i])) << "\" r=\""
      << (intr ? 4.5 : 2.5) << "\" fill=\"" << (intr ? "#d62728" : "#1f77b4") << "\"><title>sigma_"
      << i << " = " << fmt("%.4g", r.sigma_head[i]) << (intr ? " (intruder)" : "")
      << "</title></circle>";
  }
  o << "<text x=\"" << left << "\" y=\"" << h - 8 << "\" class=\"lbl\">rank &#8594; (tuned: dots, "
    << "intruders red; base: dashed)</text><text x=\"" << left - 4 << "\" y=\"" << top + 8
    << "\" text-anchor=\"end\" class=\"lbl\">" << fmt("%.3g", smax) << "</text></svg>";
}

void matrix_plots(std::ostringstream& o, const AnalyzeResult& res, const HtmlOptions& opt) {
  auto picks = chosen(res, opt);
  o << "<section id=\"matrix-plots\"><h2>Chosen matrices</h2><p>Left: |cos| between the "
       "fine-tune's top "
    << opt.k << " left singular vectors (rows) and the base's leading singular vectors "
    << "(columns); bright is a match, a dark row has no match among them. Red arrows mark "
    << "intruders (max |cos| over all base vectors below " << eps_key(opt.primary_eps)
    << "). Right: singular values, intruders in red at their rank.</p>";
  for (const MatrixResult* r : picks) {
    o << "<div class=\"mplot\"><h3>" << esc(tuned_label(res, r->tuned_index)) << ": "
      << esc(r->name) << " [" << r->shape[0] << " x " << r->shape[1] << "], "
      << r->count_at(opt.primary_eps) << " intruders" << (r->side == "right" ? " (right)" : "")
      << "</h3><div class=\"row\">";
    cos_heatmap(o, *r, opt.primary_eps);
    spectrum(o, *r, opt.primary_eps);
    detail::html::maxcos_plot(o, *r, opt.primary_eps);
    o << "</div></div>";
  }
  if (picks.empty()) o << "<p>No matrix chosen.</p>";
  o << "</section>\n";
}

void matrix_table(std::ostringstream& o, const AnalyzeResult& res, double eps) {
  o << "<section id=\"table\"><h2>All matrices</h2><p>Click a column header to sort.</p>"
       "<table class=\"grid sortable\" id=\"matrix-table\"><thead><tr><th>fine-tune</th>"
       "<th>name</th><th>layer</th><th>type</th><th>side</th><th>shape</th><th>dtype</th>"
       "<th>intruders (eps "
    << eps_key(eps) << ")</th><th>min max|cos|</th><th>identical</th><th>seconds</th>"
    << "<th>route</th>" << detail::html::measure_headers() << "</tr></thead><tbody>";
  for (const auto& r : res.records) {
    o << "<tr><td>" << r.tuned_index << "</td><td>" << esc(r.name) << "</td><td>" << r.layer
      << "</td><td>" << esc(r.type) << "</td><td>" << r.side << "</td><td data-v=\""
      << r.shape[0] * r.shape[1] << "\">" << r.shape[0] << "x" << r.shape[1] << "</td><td>"
      << r.dtype << "</td><td>" << r.count_at(eps) << "</td><td>" << fmt("%.4f", min_maxcos(r))
      << "</td><td>" << (r.identical ? "yes" : "") << "</td><td>" << fmt("%.3f", r.seconds)
      << "</td><td>" << esc(r.route) << "</td>" << detail::html::measure_cells(r, eps) << "</tr>";
  }
  o << "</tbody></table></section>\n";
}

const char* kStyle =
    R"(body{font-family:system-ui,-apple-system,"Segoe UI",sans-serif;margin:24px;color:#222}
h1{font-size:22px}h2{font-size:18px;margin-top:28px;border-bottom:1px solid #ddd}h3{font-size:14px}
table.grid{border-collapse:collapse;font-size:12px}table.grid td,table.grid th{border:1px solid #ddd;padding:3px 6px;text-align:right}
table.grid td:nth-child(2){text-align:left}table.kv th{text-align:left;padding-right:12px}
table.sortable th{cursor:pointer;background:#f4f4f4}.row{display:flex;flex-wrap:wrap;gap:24px;align-items:flex-start}
figure{margin:0}figcaption{font-size:13px;font-weight:600}.lbl{font-size:11px;fill:#333}.num{font-size:10px}
.axis{stroke:#333;stroke-width:1}.mplot{margin-bottom:18px})";

const char* kScript = R"(<script>
(function(){
  function key(td){var v=td.getAttribute('data-v');if(v===null)v=td.textContent;var n=parseFloat(v);
    return isNaN(n)||!/^[-0-9.e+]+$/i.test(v.trim())?v.toLowerCase():n;}
  var tables=document.querySelectorAll('table.sortable');
  for(var t=0;t<tables.length;t++)(function(table){
    var ths=table.tHead.rows[0].cells;
    for(var c=0;c<ths.length;c++)(function(col,th){
      th.addEventListener('click',function(){
        var body=table.tBodies[0],rows=Array.prototype.slice.call(body.rows);
        var asc=th.getAttribute('data-sort')!=='asc';
        for(var i=0;i<ths.length;i++)ths[i].removeAttribute('data-sort');
        th.setAttribute('data-sort',asc?'asc':'desc');
        rows.sort(function(a,b){var x=key(a.cells[col]),y=key(b.cells[col]);
          if(typeof x!==typeof y){x=String(x);y=String(y);}
          return (x<y?-1:x>y?1:0)*(asc?1:-1);});
        for(var i=0;i<rows.length;i++)body.appendChild(rows[i]);
      });
    })(c,ths[c]);
  })(tables[t]);
  document.body.setAttribute('data-js','ready');
})();
</script>)";

}  // namespace

std::string format_html(const AnalyzeResult& res, const HtmlOptions& opt) {
  std::ostringstream o;
  o << "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>indim report"
    << "</title><meta name=\"viewport\" content=\"width=device-width\"><style>" << kStyle
    << "</style></head><body><h1>indim: intruder dimensions</h1>\n";
  summary(o, res, opt);
  layer_heatmaps(o, res, opt.primary_eps);
  expert_heatmaps(o, res, opt.primary_eps);
  noise_floor_table(o, res, opt.primary_eps);
  detail::html::measures_section(o, res, opt.primary_eps);
  eps_sweep_chart(o, res);
  detail::html::trajectory_section(o, res, opt.primary_eps);
  matrix_plots(o, res, opt);
  o << opt.appendix;
  matrix_table(o, res, opt.primary_eps);
  o << "<p class=\"lbl\">indim " << INDIM_VERSION << "</p>" << kScript << "</body></html>\n";
  return o.str();
}

}  // namespace indim
