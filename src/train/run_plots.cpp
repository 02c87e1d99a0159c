#include "kat/train/run_plots.h"

#include <fstream>
#include <nlohmann/json.hpp>

#include "kat/core/error.h"
#include "kat/model/kat_model.h"
#include "kat/ops/grkan.h"
#include "viz/raster.h"

namespace kat {

std::vector<viz::Panel> curve_panels(const std::string& path) {
  std::ifstream in(path);
  KAT_CHECK(in.good(), path, " not found (is its directory a training run directory?)");
  viz::Series loss, tl, top1, ema;
  loss.label = "train loss (per step)";
  tl.label = "test loss";
  top1.label = "test top-1";
  ema.label = "EMA test top-1";
  std::string line;
  int ln = 0;
  while (std::getline(in, line)) {
    ++ln;
    if (line.empty()) continue;
    nlohmann::json j;
    try {
      j = nlohmann::json::parse(line);
    } catch (const std::exception& e) {
      throw Error(detail::concat(path, ":", ln, ": not JSON (", e.what(), ")"));
    }
    if (j.contains("test_top1")) {
      const double ep = j.value("epoch", 0.0);
      top1.x.push_back(ep);
      top1.y.push_back(j["test_top1"].get<double>());
      tl.x.push_back(ep);
      tl.y.push_back(j.value("test_loss", NAN));
      if (j.contains("ema_test_top1")) {
        ema.x.push_back(ep);
        ema.y.push_back(j["ema_test_top1"].get<double>());
      }
    } else if (j.contains("loss")) {
      loss.x.push_back(j.value("epoch", 0.0));
      loss.y.push_back(j["loss"].get<double>());
    }
  }
  viz::Panel p1{"loss", "epoch", "cross-entropy", {loss, tl}};
  viz::Panel p2{"test accuracy", "epoch", "top-1 (%)", {top1}};
  if (!ema.x.empty()) p2.series.push_back(ema);
  return {p1, p2};
}

std::vector<viz::Panel> rational_panels(KatModel& model) {
  const ModelConfig& cfg = model.config();
  KAT_CHECK(cfg.is_kat(), "model '", cfg.name, "' has no GR-KAN activations (DeiT); no rational-function plot");
  std::vector<viz::Panel> panels;
  const int G = cfg.groups, npts = 121;
  for (int i = 0; i < cfg.depth; ++i)
    for (const char* act : {"act1", "act2"}) {
      const std::string base = "blocks." + std::to_string(i) + ".mlp." + act;
      const float* a = model.param(base + ".weight_numerator");
      const float* b = model.param(base + ".weight_denominator");
      viz::Panel p{"block " + std::to_string(i) + " " + act, "x", "F(x)", {}};
      p.legend = panels.empty();
      for (int g = 0; g < G; ++g) {
        const int arow = cfg.shared_numerator ? 0 : g;
        double ad[6], bd[4];
        for (int k = 0; k < 6; ++k) ad[k] = a[arow * 6 + k];
        for (int k = 0; k < 4; ++k) bd[k] = b[g * 4 + k];
        viz::Series s;
        s.label = "group " + std::to_string(g);
        for (int t = 0; t < npts; ++t) {
          const double x = -3.0 + 6.0 * t / (npts - 1);
          s.x.push_back(x);
          s.y.push_back(ops::grkan_eval(ad, 5, bd, 4, x));
        }
        p.series.push_back(std::move(s));
      }
      panels.push_back(std::move(p));
    }
  return panels;
}

std::vector<std::string> write_plot(const std::string& stem, const std::vector<viz::Panel>& panels, int cols,
                                    const std::string& title) {
  const std::string svg = viz::render_svg(panels, cols, title);
  viz::write_svg_text(stem + ".svg", svg);
  std::vector<std::string> out{stem + ".svg"};
  if (viz::png_supported()) {
    viz::svg_to_png(svg, stem + ".png");
    out.push_back(stem + ".png");
  }
  return out;
}

std::vector<std::string> write_curves(const std::string& dir) {
  return write_plot(dir + "/curves", curve_panels(dir + "/metrics.jsonl"), 2, "training curves: " + dir);
}

std::vector<std::string> write_rationals(const std::string& dir, KatModel& model, const std::string& source) {
  return write_plot(dir + "/rationals", rational_panels(model), 4,
                    "learned rational functions F(x) on [-3, 3], one curve per group: " + source);
}

std::vector<std::string> write_run_plots(const std::string& dir, KatModel* model, const std::string& source) {
  auto out = write_curves(dir);
  if (model && model->config().is_kat()) {
    auto r = write_rationals(dir, *model, source);
    out.insert(out.end(), r.begin(), r.end());
  }
  return out;
}

}  // namespace kat
