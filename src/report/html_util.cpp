#include "report/html_util.hpp"

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdio>

namespace indim::detail::html {

namespace {

// Linear interpolation through colour stops; t in [0, 1].
std::string ramp(double t, const std::vector<std::array<int, 3>>& stops) {
  t = std::clamp(std::isfinite(t) ? t : 0.0, 0.0, 1.0);
  const double x = t * static_cast<double>(stops.size() - 1);
  const size_t i = std::min(static_cast<size_t>(x), stops.size() - 2);
  const double f = x - static_cast<double>(i);
  char buf[16];
  int c[3];
  for (int k = 0; k < 3; ++k)
    c[k] = static_cast<int>(std::lround(stops[i][k] + f * (stops[i + 1][k] - stops[i][k])));
  std::snprintf(buf, sizeof buf, "#%02x%02x%02x", c[0], c[1], c[2]);
  return buf;
}
const char* const kPalette[] = {"#1f77b4", "#d62728", "#2ca02c", "#ff7f0e",
                                "#9467bd", "#8c564b", "#e377c2", "#17becf"};

}  // namespace

std::string esc(const std::string& s) {
  std::string o;
  for (char c : s) {
    switch (c) {
      case '&':
        o += "&amp;";
        break;
      case '<':
        o += "&lt;";
        break;
      case '>':
        o += "&gt;";
        break;
      case '"':
        o += "&quot;";
        break;
      case '\'':
        o += "&#39;";
        break;
      default:
        o += c;
    }
  }
  return o;
}

std::string fmt(const char* f, double v) {
  char buf[64];
  std::snprintf(buf, sizeof buf, f, v);
  return buf;
}

std::string count_colour(double t) {
  return ramp(t, {{{255, 255, 255}}, {{253, 212, 158}}, {{239, 101, 72}}, {{127, 0, 0}}});
}
std::string cos_colour(double t) {  // viridis-like: dark = no match, yellow = same direction
  return ramp(
      t, {{{68, 1, 84}}, {{59, 82, 139}}, {{33, 145, 140}}, {{94, 201, 98}}, {{253, 231, 37}}});
}
const char* palette(size_t i) { return kPalette[i % 8]; }

namespace {

struct Range {
  double lo = 0, hi = 1;
};

Range x_range(const std::vector<Series>& series) {
  Range r{INFINITY, -INFINITY};
  for (const Series& s : series)
    for (double x : s.x) r.lo = std::min(r.lo, x), r.hi = std::max(r.hi, x);
  if (!(r.lo <= r.hi)) return {0, 1};
  if (r.lo == r.hi) r.lo -= 0.5, r.hi += 0.5;
  return r;
}

std::string short_label(const std::string& s) {
  return s.size() > 24 ? "..." + s.substr(s.size() - 21) : s;
}

}  // namespace

void line_chart(std::ostringstream& o, const ChartSpec& spec, const std::vector<Series>& series) {
  const int w = 600, h = 300, left = 64, right = 190, top = 16, bottom = 44;
  const Range xr = x_range(series);
  double ymax = spec.y_max;
  if (ymax <= 0)
    for (const Series& s : series)
      for (double y : s.y) ymax = std::max(ymax, std::isfinite(y) ? y : 0.0);
  if (ymax <= 0) ymax = 1;
  auto X = [&](double x) { return left + (x - xr.lo) / (xr.hi - xr.lo) * (w - left - right); };
  auto Y = [&](double y) { return h - bottom - y / ymax * (h - top - bottom); };
  o << "<svg id=\"" << esc(spec.id) << "\" xmlns=\"http://www.w3.org/2000/svg\" width=\"" << w
    << "\" height=\"" << h << "\"><line x1=\"" << left << "\" y1=\"" << h - bottom << "\" x2=\""
    << w - right << "\" y2=\"" << h - bottom << "\" class=\"axis\"/><line x1=\"" << left
    << "\" y1=\"" << top << "\" x2=\"" << left << "\" y2=\"" << h - bottom << "\" class=\"axis\"/>";
  for (int i = 0; i <= 4; ++i) {
    const double x = xr.lo + (xr.hi - xr.lo) * i / 4.0, y = ymax * i / 4.0;
    o << "<text x=\"" << fmt("%.1f", X(x)) << "\" y=\"" << h - bottom + 16
      << "\" text-anchor=\"middle\" class=\"lbl\">" << fmt("%.4g", x) << "</text><text x=\""
      << left - 6 << "\" y=\"" << fmt("%.1f", Y(y) + 4) << "\" text-anchor=\"end\" class=\"lbl\">"
      << fmt(spec.y_format.c_str(), y) << "</text>";
  }
  o << "<text x=\"" << (left + w - right) / 2 << "\" y=\"" << h - 6
    << "\" text-anchor=\"middle\" class=\"lbl\">" << esc(spec.x_label)
    << "</text><text x=\"12\" y=\"" << (top + h - bottom) / 2 << "\" transform=\"rotate(-90 12 "
    << (top + h - bottom) / 2 << ")\" text-anchor=\"middle\" class=\"lbl\">" << esc(spec.y_label)
    << "</text>";
  for (size_t l = 0; l < series.size(); ++l) {
    const Series& s = series[l];
    const char* col = palette(l);
    o << "<polyline fill=\"none\" stroke=\"" << col << "\" stroke-width=\"2\" points=\"";
    for (size_t i = 0; i < s.x.size(); ++i)
      o << fmt("%.1f", X(s.x[i])) << "," << fmt("%.1f", Y(s.y[i])) << " ";
    o << "\"/>";
    for (size_t i = 0; i < s.x.size(); ++i)
      o << "<circle class=\"" << esc(spec.point_class) << "\" cx=\"" << fmt("%.1f", X(s.x[i]))
        << "\" cy=\"" << fmt("%.1f", Y(s.y[i])) << "\" r=\"3\" fill=\"" << col << "\"><title>"
        << esc(s.label) << ", " << esc(spec.x_label) << " " << fmt("%.6g", s.x[i]) << ": "
        << fmt("%.4g", s.y[i]) << "</title></circle>";
    if (l < 14)
      o << "<rect x=\"" << w - right + 12 << "\" y=\"" << top + 18 * l << "\" width=\"12\" "
        << "height=\"12\" fill=\"" << col << "\"/><text x=\"" << w - right + 30 << "\" y=\""
        << top + 18 * l + 10 << "\" class=\"lbl\">" << esc(short_label(s.label)) << "</text>";
  }
  o << "</svg>";
}

void grid_heatmap(std::ostringstream& o, const GridSpec& g) {
  const int cw =
      std::max(22, std::min(56, 640 / std::max<int>(1, static_cast<int>(g.cols.size()))));
  const int ch = g.rows.size() > 40 ? 8 : 18, left = 150, top = 70;
  const int w = left + cw * static_cast<int>(g.cols.size()) + 60;
  const int h = top + ch * static_cast<int>(g.rows.size()) + 10;
  o << "<svg id=\"" << esc(g.id) << "\" class=\"hm\" xmlns=\"http://www.w3.org/2000/svg\" width=\""
    << w << "\" height=\"" << h << "\">";
  for (size_t c = 0; c < g.cols.size(); ++c)
    o << "<text x=\"" << left + cw * c + cw / 2 << "\" y=\"" << top - 6
      << "\" transform=\"rotate(-45 " << left + cw * c + cw / 2 << " " << top - 6
      << ")\" class=\"lbl\">" << esc(g.cols[c]) << "</text>";
  for (size_t r = 0; r < g.rows.size(); ++r) {
    if (ch >= 14 || r % 5 == 0)
      o << "<text x=\"" << left - 6 << "\" y=\"" << top + ch * r + ch - 4
        << "\" text-anchor=\"end\" class=\"lbl\">" << esc(short_label(g.rows[r])) << "</text>";
    for (size_t c = 0; c < g.cols.size(); ++c) {
      const double v = g.values[r * g.cols.size() + c];
      const bool has = !std::isnan(v);
      o << "<rect class=\"" << esc(g.cell_class) << "\" x=\"" << left + cw * c << "\" y=\""
        << top + ch * r << "\" width=\"" << cw - 1 << "\" height=\"" << ch - 1 << "\" fill=\""
        << (has ? count_colour(g.max > 0 ? v / g.max : 0) : std::string("#eeeeee")) << "\"><title>"
        << esc(g.rows[r]) << ", " << esc(g.cols[c]) << ": "
        << (has ? fmt(g.value_format.c_str(), v) : std::string("not analysed"))
        << "</title></rect>";
      if (has && ch >= 14 && cw >= 30)
        o << "<text x=\"" << left + cw * c + cw / 2 << "\" y=\"" << top + ch * r + ch - 5
          << "\" text-anchor=\"middle\" class=\"num\" fill=\"" << (v * 2 > g.max ? "#fff" : "#333")
          << "\">" << fmt(g.value_format.c_str(), v) << "</text>";
    }
  }
  o << "</svg>";
}

}  // namespace indim::detail::html
