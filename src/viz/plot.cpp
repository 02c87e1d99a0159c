#include "kat/viz/plot.h"

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <limits>

#include "kat/core/error.h"

namespace kat::viz {

namespace {

// Panel layout (px): margins around the plot area, figure title band.
constexpr double kMarginL = 62, kMarginR = 22, kMarginT = 28, kMarginB = 42;
constexpr double kLegendRow = 14, kLegendPad = 6, kCharW = 6.2;

// A coordinate rounded to 0.1 px, without a trailing ".0" (keeps big figures small).
void put(std::string& o, double v) {
  v = std::clamp(v, -1e6, 1e6);  // points far outside fixed bounds: clipped anyway
  long t = std::lround(v * 10);
  if (t < 0) {
    o += '-';
    t = -t;
  }
  o += std::to_string(t / 10);
  if (t % 10) {
    o += '.';
    o += char('0' + t % 10);
  }
}

std::string fmt(const char* f, double v, int prec) {
  char buf[64];
  std::snprintf(buf, sizeof buf, f, prec, v);
  return buf;
}

struct Axis {
  double lo = 0, hi = 1;  // in axis space (log10 of the value on a log axis)
  bool log = false;
  std::vector<double> ticks;  // values (not log10)
  std::vector<std::string> labels;
  double pos(double v_axis, double p0, double len, bool flip) const {
    double t = (v_axis - lo) / (hi - lo);
    return flip ? p0 + len * (1 - t) : p0 + len * t;
  }
};

// Axis over the data range [dlo, dhi] (axis space), optional fixed value bounds, `pad` fraction
// of the range added on automatic sides.
Axis make_axis(double dlo, double dhi, double fix_lo, double fix_hi, bool log, double pad, int target) {
  Axis a;
  a.log = log;
  auto to_axis = [&](double v) { return log ? std::log10(v) : v; };
  bool flo = std::isfinite(fix_lo) && (!log || fix_lo > 0);
  bool fhi = std::isfinite(fix_hi) && (!log || fix_hi > 0);
  double lo = flo ? to_axis(fix_lo) : dlo, hi = fhi ? to_axis(fix_hi) : dhi;
  if (lo > hi) {
    if (flo && !fhi)
      hi = lo;
    else if (fhi && !flo)
      lo = hi;
    else
      std::swap(lo, hi);
  }
  if (!(hi - lo > 1e-12 * std::max(std::abs(lo), std::abs(hi)))) {  // degenerate: widen
    double d = log ? 0.5 : (lo == 0 ? 1.0 : std::abs(lo) * 0.1);
    lo -= d;
    hi += d;
  } else {
    double r = hi - lo;
    if (!flo) lo -= pad * r;
    if (!fhi) hi += pad * r;
  }
  a.lo = lo;
  a.hi = hi;
  const double eps = 1e-9 * (hi - lo);
  auto inside = [&](double v) {
    double t = to_axis(v);
    return t >= lo - eps && t <= hi + eps;
  };
  std::vector<double> cand = log ? log_ticks(std::pow(10.0, lo), std::pow(10.0, hi)) : nice_ticks(lo, hi, target);
  for (double v : cand)
    if (inside(v)) a.ticks.push_back(v);
  if (log && a.ticks.size() < 2) {  // less than a decade: linear ticks on the log axis
    a.ticks.clear();
    for (double v : nice_ticks(std::pow(10.0, lo), std::pow(10.0, hi), 4))
      if (v > 0 && inside(v)) a.ticks.push_back(v);
  }
  // Labels: fixed decimals from the step, %g for very large / very small values.
  double step = a.ticks.size() >= 2 ? a.ticks[1] - a.ticks[0] : 1.0, big = 0;
  for (double v : a.ticks) big = std::max(big, std::abs(v));
  for (double v : a.ticks) {
    if (log)
      a.labels.push_back(fmt("%.*g", v, 4));
    else if (big >= 1e6 || step < 1e-4)
      a.labels.push_back(fmt("%.*g", v, std::clamp(int(std::ceil(std::log10(big / step))) + 1, 1, 15)));
    else
      a.labels.push_back(fmt("%.*f", v, std::max(0, -int(std::floor(std::log10(step) + 1e-9)))));
  }
  return a;
}

struct Pt {
  double x, y;
  bool ok;
};

void text(std::string& o, double x, double y, const std::string& s, const char* attrs) {
  o += "<text x=\"";
  put(o, x);
  o += "\" y=\"";
  put(o, y);
  o += "\"";
  if (*attrs) {
    o += ' ';
    o += attrs;
  }
  o += '>';
  o += xml_escape(s);
  o += "</text>\n";
}

void render_panel(std::string& o, const Panel& p, size_t idx, double ox, double oy, double w, double h) {
  const double px = kMarginL, py = kMarginT, pw = w - kMarginL - kMarginR, ph = h - kMarginT - kMarginB;
  o += "<g transform=\"translate(";
  put(o, ox);
  o += ',';
  put(o, oy);
  o += ")\">\n";
  text(o, w / 2, 18, p.title, "text-anchor=\"middle\" font-size=\"13\" font-weight=\"bold\"");
  text(o, px + pw / 2, h - 6, p.xlabel, "text-anchor=\"middle\" font-size=\"12\"");
  if (!p.ylabel.empty()) {
    o += "<text transform=\"translate(14,";
    put(o, py + ph / 2);
    o += ") rotate(-90)\" text-anchor=\"middle\" font-size=\"12\">" + xml_escape(p.ylabel) + "</text>\n";
  }

  // Points in axis space; ok = drawable.
  std::vector<std::vector<Pt>> pts(p.series.size());
  double xlo = INFINITY, xhi = -INFINITY, ylo = INFINITY, yhi = -INFINITY;
  for (size_t s = 0; s < p.series.size(); ++s) {
    const Series& se = p.series[s];
    KAT_CHECK(se.x.empty() || se.x.size() == se.y.size(), "plot panel '", p.title, "' series '", se.label,
              "': x has ", se.x.size(), " values, y has ", se.y.size());
    for (size_t i = 0; i < se.y.size(); ++i) {
      double x = se.x.empty() ? double(i) : se.x[i], y = se.y[i];
      bool ok = std::isfinite(x) && std::isfinite(y) && (!p.log_y || y > 0);
      if (ok) {
        if (p.log_y) y = std::log10(y);
        xlo = std::min(xlo, x);
        xhi = std::max(xhi, x);
        ylo = std::min(ylo, y);
        yhi = std::max(yhi, y);
      }
      pts[s].push_back({x, y, ok});
    }
  }
  const std::string frame = "<rect x=\"" + fmt("%.*f", px, 0) + "\" y=\"" + fmt("%.*f", py, 0) + "\" width=\"" +
                            fmt("%.*f", pw, 0) + "\" height=\"" + fmt("%.*f", ph, 0) +
                            "\" fill=\"none\" stroke=\"#333\"/>\n";
  if (!(xlo <= xhi)) {  // nothing drawable
    o += frame;
    text(o, px + pw / 2, py + ph / 2 + 5, "no data", "text-anchor=\"middle\" fill=\"#999\" font-size=\"14\"");
    o += "</g>\n";
    return;
  }
  Axis ax = make_axis(xlo, xhi, NAN, NAN, false, 0.0, std::max(2, int(pw / 80)));
  Axis ay = make_axis(ylo, yhi, p.y_min, p.y_max, p.log_y, 0.05, std::max(2, int(ph / 50)));
  auto X = [&](double v) { return ax.pos(v, px, pw, false); };
  auto Y = [&](double v) { return ay.pos(v, py, ph, true); };

  // Grid lines, tick marks and labels.
  std::string grid, marks;
  for (size_t i = 0; i < ax.ticks.size(); ++i) {
    double x = X(ax.ticks[i]);
    grid += 'M';
    put(grid, x);
    grid += ' ';
    put(grid, py);
    grid += 'V';
    put(grid, py + ph);
    marks += 'M';
    put(marks, x);
    marks += ' ';
    put(marks, py + ph);
    marks += "v4";
    text(o, x, py + ph + 15, ax.labels[i], "text-anchor=\"middle\"");
  }
  for (size_t i = 0; i < ay.ticks.size(); ++i) {
    double y = Y(ay.log ? std::log10(ay.ticks[i]) : ay.ticks[i]);
    grid += 'M';
    put(grid, px);
    grid += ' ';
    put(grid, y);
    grid += 'H';
    put(grid, px + pw);
    marks += 'M';
    put(marks, px);
    marks += ' ';
    put(marks, y);
    marks += "h-4";
    text(o, px - 6, y + 4, ay.labels[i], "text-anchor=\"end\"");
  }
  o += "<path d=\"" + grid + "\" stroke=\"#e4e4e4\" fill=\"none\"/>\n";
  o += "<path d=\"" + marks + "\" stroke=\"#333\" fill=\"none\"/>\n";
  o += "<clipPath id=\"kp" + std::to_string(idx) + "\"><rect x=\"" + fmt("%.*f", px, 0) + "\" y=\"" +
       fmt("%.*f", py, 0) + "\" width=\"" + fmt("%.*f", pw, 0) + "\" height=\"" + fmt("%.*f", ph, 0) +
       "\"/></clipPath>\n";

  // Series: one path each, broken at undrawable points; isolated points become dots.
  o += "<g clip-path=\"url(#kp" + std::to_string(idx) +
       ")\" fill=\"none\" stroke-width=\"1.5\" stroke-linejoin=\"round\" stroke-linecap=\"round\">\n";
  auto color = [&](size_t s) {
    return xml_escape(p.series[s].color.empty() ? palette_color(s) : p.series[s].color);
  };
  for (size_t s = 0; s < pts.size(); ++s) {
    const auto& v = pts[s];
    std::string d, dots;
    for (size_t i = 0; i < v.size(); ++i) {
      if (!v[i].ok) continue;
      bool prev = i > 0 && v[i - 1].ok, next = i + 1 < v.size() && v[i + 1].ok;
      double x = X(v[i].x), y = Y(v[i].y);
      if (!prev && !next) {
        dots += "<circle cx=\"";
        put(dots, x);
        dots += "\" cy=\"";
        put(dots, y);
        dots += "\" r=\"2\" fill=\"" + color(s) + "\" stroke=\"none\"/>\n";
        continue;
      }
      d += !prev ? 'M' : (i > 0 && !(i > 1 && v[i - 2].ok) ? 'L' : ' ');
      put(d, x);
      d += ' ';
      put(d, y);
    }
    if (!d.empty()) {
      o += "<path d=\"" + d + "\" stroke=\"" + color(s) + "\"";
      if (p.series[s].dashed) o += " stroke-dasharray=\"6 4\"";
      o += "/>\n";
    }
    o += dots;
  }
  o += "</g>\n" + frame;

  // Legend: labelled series, in the plot-area corner that covers the fewest points.
  std::vector<size_t> entries;
  size_t maxlen = 0;
  for (size_t s = 0; s < p.series.size(); ++s)
    if (!p.series[s].label.empty()) {
      entries.push_back(s);
      maxlen = std::max(maxlen, p.series[s].label.size());
    }
  if (!p.legend || entries.empty()) {
    o += "</g>\n";
    return;
  }
  const double lw = 34 + kCharW * double(maxlen), lh = kLegendRow * double(entries.size()) + 8;
  const double cx[2] = {px + pw - lw - kLegendPad, px + kLegendPad},
               cy[2] = {py + kLegendPad, py + ph - lh - kLegendPad};
  double bx = cx[0], by = cy[0];
  size_t best = std::numeric_limits<size_t>::max();
  for (int c = 0; c < 4; ++c) {  // top-right, top-left, bottom-right, bottom-left
    double x0 = cx[c % 2], y0 = cy[c / 2];
    size_t n = 0;
    for (const auto& v : pts)
      for (const Pt& q : v)
        if (q.ok) {
          double x = X(q.x), y = Y(q.y);
          n += x >= x0 && x <= x0 + lw && y >= y0 && y <= y0 + lh;
        }
    if (n < best) {
      best = n;
      bx = x0;
      by = y0;
    }
  }
  o += "<g font-size=\"11\"><rect x=\"";
  put(o, bx);
  o += "\" y=\"";
  put(o, by);
  o += "\" width=\"";
  put(o, lw);
  o += "\" height=\"";
  put(o, lh);
  o += "\" fill=\"#fff\" fill-opacity=\"0.85\" stroke=\"#ccc\"/>\n";
  for (size_t k = 0; k < entries.size(); ++k) {
    size_t s = entries[k];
    double y = by + 4 + kLegendRow * (double(k) + 0.5);
    o += "<path d=\"M";
    put(o, bx + 6);
    o += ' ';
    put(o, y);
    o += "h20\" stroke=\"" + color(s) + "\" stroke-width=\"2\"";
    if (p.series[s].dashed) o += " stroke-dasharray=\"5 3\"";
    o += "/>\n";
    text(o, bx + 30, y + 4, p.series[s].label, "");
  }
  o += "</g>\n</g>\n";
}

}  // namespace

std::vector<double> nice_ticks(double lo, double hi, int target) {
  if (!std::isfinite(lo) || !std::isfinite(hi)) return {};
  if (lo > hi) std::swap(lo, hi);
  if (!(hi - lo > 1e-12 * std::max(std::abs(lo), std::abs(hi)))) {
    double d = lo == 0 ? 1.0 : std::abs(lo) * 0.1;
    lo -= d;
    hi += d;
  }
  double raw = (hi - lo) / std::max(1, target);
  if (!std::isfinite(raw)) return {};  // range overflows a double
  double mag = std::pow(10.0, std::floor(std::log10(raw))), r = raw / mag;
  double step = (r <= 1 ? 1 : r <= 2 ? 2 : r <= 5 ? 5 : 10) * mag;
  double k0 = std::floor(lo / step + 1e-9), k1 = std::ceil(hi / step - 1e-9);
  std::vector<double> t;
  for (double k = k0; k <= k1 && t.size() < 1000; k += 1) t.push_back(k == 0 ? 0.0 : k * step);
  return t;
}

std::vector<double> log_ticks(double lo, double hi) {
  if (!std::isfinite(lo) || !std::isfinite(hi) || lo <= 0 || hi <= 0) return {};
  if (lo > hi) std::swap(lo, hi);
  int e0 = int(std::floor(std::log10(lo) + 1e-9)), e1 = int(std::ceil(std::log10(hi) - 1e-9));
  if (e1 == e0) ++e1;
  int stride = std::max(1, (e1 - e0 + 7) / 8);
  e0 = int(std::floor(double(e0) / stride)) * stride;
  std::vector<double> c;
  for (int e = e0; e <= e1 + stride - 1; e += stride) {
    double p = std::pow(10.0, e);
    c.push_back(p);
    if (e1 - e0 <= 2) {
      c.push_back(2 * p);
      c.push_back(5 * p);
    }
  }
  std::sort(c.begin(), c.end());
  // Trim to the largest tick <= lo ... the smallest tick >= hi.
  size_t a = 0, b = c.size() - 1;
  while (a + 1 < c.size() && c[a + 1] <= lo * (1 + 1e-9)) ++a;
  while (b > a + 1 && c[b - 1] >= hi * (1 - 1e-9)) --b;
  return {c.begin() + a, c.begin() + b + 1};
}

std::string xml_escape(const std::string& s) {
  std::string o;
  o.reserve(s.size());
  for (char ch : s) {
    switch (ch) {
      case '&': o += "&amp;"; break;
      case '<': o += "&lt;"; break;
      case '>': o += "&gt;"; break;
      case '"': o += "&quot;"; break;
      case '\'': o += "&apos;"; break;
      default: o += (static_cast<unsigned char>(ch) < 0x20 && ch != '\t' && ch != '\n') ? '?' : ch;
    }
  }
  return o;
}

const char* palette_color(size_t i) {
  static const char* kPalette[10] = {"#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd",
                                     "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf"};
  return kPalette[i % 10];
}

std::string render_svg(const std::vector<Panel>& panels, int cols, const std::string& title, int panel_w,
                       int panel_h) {
  KAT_CHECK(cols >= 1, "plot '", title, "': cols must be >= 1, got ", cols);
  KAT_CHECK(panel_w >= 120 && panel_h >= 90, "plot '", title, "': panel size ", panel_w, "x", panel_h,
            " is below 120x90 px");
  const int n = int(panels.size()), ncol = std::max(1, std::min(cols, n)),
            rows = std::max(1, (n + cols - 1) / cols);
  const double top = title.empty() ? 6 : 34;
  const double W = double(ncol) * panel_w, H = top + double(rows) * panel_h;
  std::string o;
  o.reserve(4096);
  o += "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"";
  put(o, W);
  o += "\" height=\"";
  put(o, H);
  o += "\" viewBox=\"0 0 ";
  put(o, W);
  o += ' ';
  put(o, H);
  o += "\" font-family=\"Helvetica,Arial,sans-serif\" font-size=\"11\" fill=\"#222\">\n";
  o += "<rect width=\"100%\" height=\"100%\" fill=\"#fff\"/>\n";
  if (!title.empty()) text(o, W / 2, 24, title, "text-anchor=\"middle\" font-size=\"16\" font-weight=\"bold\"");
  for (int i = 0; i < n; ++i)
    render_panel(o, panels[size_t(i)], size_t(i), double(i % cols) * panel_w, top + double(i / cols) * panel_h,
                 panel_w, panel_h);
  o += "</svg>\n";
  return o;
}

void write_svg(const std::string& path, const std::vector<Panel>& panels, int cols, const std::string& title,
               int panel_w, int panel_h) {
  write_svg_text(path, render_svg(panels, cols, title, panel_w, panel_h));
}

void write_svg_text(const std::string& path, const std::string& svg) {
  const std::string tmp = path + ".tmp";
  {
    std::ofstream f(tmp, std::ios::binary | std::ios::trunc);
    KAT_CHECK(f.good(), "cannot write plot '", path, "': cannot open '", tmp, "'");
    f.write(svg.data(), std::streamsize(svg.size()));
    f.close();
    if (!f) {
      std::error_code ec;
      std::filesystem::remove(tmp, ec);
      throw Error("cannot write plot '" + path + "': write failed");
    }
  }
  std::error_code ec;
  std::filesystem::rename(tmp, path, ec);
  if (ec) {
    std::error_code ec2;
    std::filesystem::remove(tmp, ec2);
    throw Error("cannot write plot '" + path + "': " + ec.message());
  }
}

}  // namespace kat::viz
