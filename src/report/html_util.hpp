// What the HTML report's sections share: escaping, number formatting, colour ramps, the
// palette, and two SVG figures (a line chart and a grid heat map) the trajectory view and the
// measures draw.
#pragma once

#include <sstream>
#include <string>
#include <vector>

namespace indim::detail::html {

std::string esc(const std::string& s);
/// snprintf of one double.
std::string fmt(const char* f, double v);
/// White through orange to dark red, t in [0, 1] (counts).
std::string count_colour(double t);
/// Dark violet (no match) to yellow (the same direction), t in [0, 1].
std::string cos_colour(double t);
/// Eight distinct line colours, cycled.
const char* palette(size_t i);

/// One line of a chart: (x, y) points and what its tooltips and legend call it.
struct Series {
  std::string label;
  std::vector<double> x, y;
};

struct ChartSpec {
  std::string id, x_label, y_label;
  std::string point_class;  ///< class of each point (the browser tests count them)
  double y_max = 0;         ///< 0: the largest y
  std::string y_format = "%.0f";
};

/// An SVG line chart of `series` with axes, ticks, a legend and a tooltip per point.
void line_chart(std::ostringstream& o, const ChartSpec& spec, const std::vector<Series>& series);

struct GridSpec {
  std::string id, cell_class;
  std::vector<std::string> rows, cols;  ///< labels
  std::vector<double> values;           ///< row-major [rows, cols]; NaN: no value
  double max = 1;                       ///< the value drawn darkest
  std::string value_format = "%.0f";
};

/// An SVG heat map of a rows x cols grid, a tooltip and (when the cells are tall enough) the
/// value in each cell.
void grid_heatmap(std::ostringstream& o, const GridSpec& spec);

}  // namespace indim::detail::html
