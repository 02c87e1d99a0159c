// Dependency-free SVG line charts: training curves, learned rational activations, etc.
//
// A figure is a grid of panels (`cols` columns, each panel_w x panel_h px) under a figure title.
// Each panel has a title, axis labels, "nice" 1-2-5 ticks with grid lines, a legend and any
// number of line series. Robustness rules:
//   * NaN / inf points (x or y) are skipped and break the line; isolated points become dots.
//   * log_y skips non-positive y values.
//   * A panel without any drawable point renders as an empty frame reading "no data".
//   * All text is XML-escaped (control characters are replaced by '?').
//   * Coordinates are rounded to 0.1 px, so 24 panels x 8 curves x 200 points stay < 1 MB.
#pragma once
#include <cmath>
#include <string>
#include <vector>

namespace kat::viz {

struct Series {
  std::string label;         // shown in the legend; empty = not listed
  std::vector<double> x, y;  // x empty = 0, 1, 2, ...; otherwise x.size() must equal y.size()
  std::string color;         // any SVG color; empty = palette color by series index
  bool dashed = false;
};

struct Panel {
  std::string title, xlabel, ylabel;
  std::vector<Series> series;
  bool log_y = false;
  bool legend = true;
  double y_min = NAN, y_max = NAN;  // NAN = auto (fixed bounds clip the lines)
};

// Renders the figure as an SVG document. Throws kat::Error on cols < 1, panel sizes below
// 120x90 px or a series whose x and y sizes differ.
std::string render_svg(const std::vector<Panel>& panels, int cols, const std::string& title, int panel_w = 420,
                       int panel_h = 300);

// render_svg, written to `path` through a temporary file and a rename. Errors name the path.
void write_svg(const std::string& path, const std::vector<Panel>& panels, int cols, const std::string& title,
               int panel_w = 420, int panel_h = 300);
// An SVG document (e.g. from render_svg) written the same way.
void write_svg_text(const std::string& path, const std::string& svg);

// ---- helpers (exposed for tests) ------------------------------------------------------------

// Ticks with a 1-2-5 x 10^k step, about `target` intervals, covering [lo, hi]:
// front() <= lo and back() >= hi. Empty for non-finite input; lo == hi is widened.
std::vector<double> nice_ticks(double lo, double hi, int target = 5);

// Ticks for a log axis over [lo, hi] (0 < lo <= hi): powers of ten (plus 2x and 5x when the
// range spans few decades), covering [lo, hi]. Empty for non-finite or non-positive input.
std::vector<double> log_ticks(double lo, double hi);

// Escapes & < > " ' for XML text and attributes; control characters become '?'.
std::string xml_escape(const std::string& s);

// The 10-color palette (Tableau 10), index taken modulo 10.
const char* palette_color(size_t i);

}  // namespace kat::viz
