#include <gtest/gtest.h>
#include <unistd.h>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "kat/core/error.h"
#include "kat/data/image_io.h"
#include "kat/viz/plot.h"
#include "viz/raster.h"

using namespace kat::viz;

namespace {

// Minimal XML check: tags nest and balance, every '&' starts a known entity, no stray '>'
// inside a tag's attribute values. Returns "" when fine, else the problem.
std::string xml_problem(const std::string& s) {
  std::vector<std::string> stack;
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] == '&') {
      bool ok = false;
      for (const char* e : {"&amp;", "&lt;", "&gt;", "&quot;", "&apos;"})
        ok = ok || s.compare(i, std::strlen(e), e) == 0;
      if (!ok) return "bad entity at " + std::to_string(i);
    }
    if (s[i] != '<') continue;
    size_t j = i + 1;
    bool quoted = false;
    for (; j < s.size() && (quoted || s[j] != '>'); ++j) {
      if (s[j] == '"') quoted = !quoted;
      if (s[j] == '<') return "'<' inside tag at " + std::to_string(j);
    }
    if (j >= s.size()) return "unterminated tag";
    std::string tag = s.substr(i + 1, j - i - 1);
    bool closing = tag[0] == '/', self = tag.back() == '/';
    std::string name = tag.substr(closing, tag.find_first_of(" />", closing) - closing);
    if (closing) {
      if (stack.empty() || stack.back() != name) return "unbalanced </" + name + ">";
      stack.pop_back();
    } else if (!self) {
      stack.push_back(name);
    }
    i = j;
  }
  return stack.empty() ? "" : "unclosed <" + stack.back() + ">";
}

size_t count(const std::string& s, const std::string& what) {
  size_t n = 0;
  for (size_t p = s.find(what); p != std::string::npos; p = s.find(what, p + 1)) ++n;
  return n;
}

bool is_125(double step) {
  double m = step / std::pow(10.0, std::floor(std::log10(step) + 1e-9));
  return std::abs(m - 1) < 1e-6 || std::abs(m - 2) < 1e-6 || std::abs(m - 5) < 1e-6;
}

Panel panel(const std::string& title, const std::string& xl = "", const std::string& yl = "",
            std::vector<Series> series = {}) {
  Panel p;
  p.title = title;
  p.xlabel = xl;
  p.ylabel = yl;
  p.series = std::move(series);
  return p;
}

Series series(const std::string& label, std::vector<double> x, std::vector<double> y) {
  Series s;
  s.label = label;
  s.x = std::move(x);
  s.y = std::move(y);
  return s;
}

Series ramp(const std::string& label, int n, double scale) {
  Series s = series(label, {}, {});
  for (int i = 0; i < n; ++i) {
    s.x.push_back(i);
    s.y.push_back(scale * std::exp(-0.01 * i));
  }
  return s;
}

}  // namespace

TEST(Plot, NiceTicksCoverRangeWith125Steps) {
  const double cases[][2] = {{0, 1},        {0.013, 0.97}, {-3, 3},          {1, 1000},
                             {-0.5, 1.2e5}, {5, 5},        {2.3e-7, 9.1e-6}, {7, -2}};
  for (auto& c : cases) {
    auto t = nice_ticks(c[0], c[1], 5);
    double lo = std::min(c[0], c[1]), hi = std::max(c[0], c[1]);
    ASSERT_GE(t.size(), 2u) << lo << " " << hi;
    EXPECT_LE(t.size(), 8u) << lo << " " << hi;
    double step = t[1] - t[0], tol = 1e-6 * step;
    EXPECT_TRUE(is_125(step)) << step;
    EXPECT_LE(t.front(), lo + tol);
    EXPECT_GE(t.back(), hi - tol);
    for (size_t i = 0; i < t.size(); ++i) {
      EXPECT_NEAR(t[i] - t[0], double(i) * step, tol);
      double k = t[i] / step;
      EXPECT_NEAR(k, std::round(k), 1e-6);  // on multiples of the step
    }
  }
  EXPECT_TRUE(nice_ticks(NAN, 1).empty());
  EXPECT_TRUE(nice_ticks(0, INFINITY).empty());
}

TEST(Plot, LogTicks) {
  auto t = log_ticks(0.05, 2.3);
  ASSERT_GE(t.size(), 2u);
  EXPECT_LE(t.front(), 0.05);
  EXPECT_GE(t.back(), 2.3);
  for (double v : t) EXPECT_TRUE(v > 0 && is_125(v)) << v;
  auto wide = log_ticks(1e-6, 1e3);
  EXPECT_LE(wide.size(), 10u);
  for (double v : wide) EXPECT_NEAR(std::log10(v), std::round(std::log10(v)), 1e-9);
  EXPECT_LE(wide.front(), 1e-6 * (1 + 1e-9));
  EXPECT_GE(wide.back(), 1e3 * (1 - 1e-9));
  EXPECT_TRUE(log_ticks(-1, 10).empty());
}

TEST(Plot, XmlEscape) {
  EXPECT_EQ(xml_escape("a<b & \"c\" > 'd'"), "a&lt;b &amp; &quot;c&quot; &gt; &apos;d&apos;");
  EXPECT_EQ(xml_escape(std::string("x\x01y")), "x?y");
}

TEST(Plot, TrainingCurvesSvgWellFormed) {
  Panel loss = panel("loss <train & val>", "step", "loss");
  loss.log_y = true;
  loss.series = {ramp("train <a&b>", 300, 2.3), ramp("val", 300, 2.5)};
  loss.series[1].dashed = true;
  Panel acc = panel("test top-1", "epoch", "top-1 (%)", {ramp("top-1", 30, 80)});
  acc.series[0].color = "#000";
  std::string svg = render_svg({loss, acc}, 2, "run \"x\" <1>");
  EXPECT_EQ(xml_problem(svg), "");
  EXPECT_EQ(svg.rfind("<svg", 0), 0u);
  EXPECT_EQ(count(svg, "<svg"), 1u);
  EXPECT_EQ(count(svg, "</svg>"), 1u);
  EXPECT_NE(svg.find("train &lt;a&amp;b&gt;"), std::string::npos);
  EXPECT_NE(svg.find(">val<"), std::string::npos);
  EXPECT_NE(svg.find(">top-1<"), std::string::npos);
  EXPECT_NE(svg.find("run &quot;x&quot; &lt;1&gt;"), std::string::npos);
  EXPECT_NE(svg.find("stroke-dasharray"), std::string::npos);
  EXPECT_NE(svg.find("stroke=\"#000\""), std::string::npos);
  EXPECT_NE(svg.find("width=\"840\""), std::string::npos);
  EXPECT_EQ(svg.find("nan"), std::string::npos);
  EXPECT_EQ(count(svg, "no data"), 0u);
}

TEST(Plot, NaNAndInfBreakTheLine) {
  Panel p = panel("broken", "x", "y", {series("s", {0, 1, 2, 3, 4, 5, 6}, {1, 2, NAN, 4, 5, INFINITY, 7})});
  p.series[0].color = "#123456";
  std::string svg = render_svg({p}, 1, "");
  EXPECT_EQ(xml_problem(svg), "");
  size_t at = svg.rfind("<path", svg.find("stroke=\"#123456\""));  // series path precedes legend
  ASSERT_NE(at, std::string::npos);
  std::string d = svg.substr(at, svg.find('>', at) - at);
  EXPECT_EQ(count(d, "M"), 2u) << d;     // segments [1,2] and [4,5]
  EXPECT_EQ(count(svg, "<circle"), 1u);  // the isolated 7
  EXPECT_EQ(svg.find("nan"), std::string::npos);
  EXPECT_EQ(svg.find("inf"), std::string::npos);
}

TEST(Plot, EmptyPanelsSayNoData) {
  Panel none = panel("none"), empty = panel("empty", "", "", {series("e", {}, {})});
  Panel allnan = panel("allnan", "", "", {series("a", {1, 2}, {NAN, NAN})});
  Panel neg = panel("neg", "", "", {series("n", {1, 2, 3}, {-1, 0, -5})});
  neg.log_y = true;
  std::string svg = render_svg({none, empty, allnan, neg}, 3, "empty");
  EXPECT_EQ(xml_problem(svg), "");
  EXPECT_EQ(count(svg, "no data"), 4u);
  EXPECT_EQ(xml_problem(render_svg({}, 2, "nothing")), "");
}

TEST(Plot, LogAxisAndFixedBounds) {
  Panel p = panel("log", "step", "loss");
  p.log_y = true;
  p.series = {series("l", {1, 2, 3, 4, 5}, {10, -1, 1, 0.1, 0.01})};
  Panel q = panel("fixed", "x", "y");
  q.y_min = 0;
  q.y_max = 1;
  q.series = {series("big", {0, 1, 2}, {-5, 0.5, 50})};
  std::string svg = render_svg({p, q}, 2, "t");
  EXPECT_EQ(xml_problem(svg), "");
  EXPECT_NE(svg.find(">0.01<"), std::string::npos);
  EXPECT_NE(svg.find(">10<"), std::string::npos);
  EXPECT_NE(svg.find("clip-path=\"url(#kp1)\""), std::string::npos);
  EXPECT_NE(svg.find(">0.5<"), std::string::npos);
  EXPECT_EQ(svg.find("nan"), std::string::npos);
}

TEST(Plot, ActivationGridStaysSmall) {
  std::vector<Panel> panels;
  for (int b = 0; b < 12; ++b)
    for (int a = 1; a <= 2; ++a) {
      Panel p = panel("block " + std::to_string(b) + " act" + std::to_string(a), "x", "F(x)");
      for (int g = 0; g < 8; ++g) {
        Series s = series("group " + std::to_string(g), {}, {});
        for (int i = 0; i < 200; ++i) {
          double x = -3 + 6.0 * i / 199;
          s.x.push_back(x);
          s.y.push_back(x / (1 + std::abs(0.1 * g * x)) + 0.01 * b * x * x);
        }
        p.series.push_back(std::move(s));
      }
      panels.push_back(std::move(p));
    }
  std::string svg = render_svg(panels, 4, "learned rational functions");
  EXPECT_LT(svg.size(), 1u << 20);
  EXPECT_EQ(xml_problem(svg), "");
  EXPECT_NE(svg.find(">block 11 act2<"), std::string::npos);
  EXPECT_NE(svg.find("width=\"1680\" height=\"1834\""), std::string::npos);
}

TEST(Plot, WriteFileAndErrors) {
  namespace fs = std::filesystem;
  fs::path dir = fs::temp_directory_path() / ("kat_plot_test_" + std::to_string(::getpid()));
  fs::create_directories(dir);
  std::vector<Panel> panels = {panel("p", "x", "y", {ramp("r", 10, 1)})};
  std::string path = (dir / "fig.svg").string();
  write_svg(path, panels, 1, "fig");
  std::ifstream f(path, std::ios::binary);
  std::stringstream ss;
  ss << f.rdbuf();
  EXPECT_EQ(ss.str(), render_svg(panels, 1, "fig"));
  EXPECT_FALSE(fs::exists(path + ".tmp"));
  fs::remove_all(dir);

  const std::string bad = "/nonexistent_kat_dir/sub/fig.svg";
  try {
    write_svg(bad, panels, 1, "fig");
    FAIL() << "expected kat::Error";
  } catch (const kat::Error& e) {
    EXPECT_NE(std::string(e.what()).find(bad), std::string::npos) << e.what();
  }
  EXPECT_THROW(render_svg(panels, 0, "x"), kat::Error);
  Panel mism = panel("m", "", "", {series("s", {1, 2, 3}, {1, 2})});
  EXPECT_THROW(render_svg({mism}, 1, "x"), kat::Error);
}

// PNG output (librsvg + cairo): the raster has the SVG's size, is not blank, shows the first
// palette color where a series is drawn; a bad SVG and an unwritable path are clear errors.
TEST(Plot, PngRasterizesTheSvg) {
  if (!png_supported()) GTEST_SKIP() << "built without librsvg";
  Panel p;
  p.title = "png";
  Series s;
  s.label = "line";
  for (int i = 0; i < 50; ++i) s.y.push_back(std::sin(i * 0.2));
  p.series.push_back(s);
  const std::string svg = render_svg({p}, 1, "title", 200, 150);
  const auto dir = std::filesystem::temp_directory_path() / ("kat_png_" + std::to_string(getpid()));
  std::filesystem::create_directories(dir);
  const std::string path = (dir / "a.png").string();
  svg_to_png(svg, path);
  int h = 0, w = 0, c = 0;
  std::vector<uint8_t> px;
  std::string err;
  ASSERT_TRUE(kat::data::decode_image_file(path, h, w, c, px, &err)) << err;
  EXPECT_EQ(w, 200);
  EXPECT_EQ(h, 150 + 34);  // panel + title band
  ASSERT_GE(c, 3);
  size_t nonwhite = 0, blue = 0;
  for (size_t i = 0; i + 2 < px.size(); i += size_t(c)) {
    const int r = px[i], g = px[i + 1], b = px[i + 2];
    nonwhite += (r < 250 || g < 250 || b < 250);
    blue += (std::abs(r - 0x1f) < 40 && std::abs(g - 0x77) < 40 && std::abs(b - 0xb4) < 40);  // palette 0
  }
  EXPECT_GT(nonwhite, 500u);
  EXPECT_GT(blue, 50u);
  svg_to_png(svg, (dir / "b.png").string(), 2.0);  // scale
  ASSERT_TRUE(kat::data::decode_image_file((dir / "b.png").string(), h, w, c, px, &err)) << err;
  EXPECT_EQ(w, 400);
  try {
    svg_to_png("<svg this is not xml", (dir / "c.png").string());
    FAIL() << "bad SVG accepted";
  } catch (const kat::Error& e) {
    EXPECT_NE(std::string(e.what()).find("c.png"), std::string::npos) << e.what();
  }
  EXPECT_FALSE(std::filesystem::exists(dir / "c.png"));
  EXPECT_THROW(svg_to_png(svg, "/nonexistent-dir/x.png"), kat::Error);
  std::filesystem::remove_all(dir);
}
