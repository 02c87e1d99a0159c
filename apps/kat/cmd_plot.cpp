// kat plot DIR: training curves (loss, test accuracy) and the learned rational functions of every
// GR-KAN activation, as SVG files in DIR.
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <memory>
#include <nlohmann/json.hpp>

#include "commands.h"
#include "core/error.h"
#include "io/safetensors.h"
#include "ops/grkan.h"
#include "train/inference.h"
#include "train/trainer.h"
#include "viz/plot.h"

namespace kat::cli {

namespace {

void plot_curves(const std::string& dir, const std::string& out) {
  const std::string path = dir + "/metrics.jsonl";
  std::ifstream in(path);
  KAT_CHECK(in.good(), "kat plot: ", path, " not found (is ", dir, " a training run directory?)");
  viz::Series loss{"train loss (per step)", {}, {}}, tl{"test loss", {}, {}}, top1{"test top-1", {}, {}},
      ema{"EMA test top-1", {}, {}};
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
  viz::write_svg(out, {p1, p2}, 2, "training curves: " + dir);
}

void plot_rationals(const std::string& ckpt, const std::string& out) {
  LoadedModel lm = load_model_for_inference(ckpt, "", {}, false);
  const ModelConfig& cfg = lm.model->config();
  KAT_CHECK(cfg.is_kat(), ckpt, ": model '", cfg.name, "' has no GR-KAN activations (DeiT); nothing to plot");
  std::vector<viz::Panel> panels;
  const int G = cfg.groups, npts = 121;
  for (int i = 0; i < cfg.depth; ++i)
    for (const char* act : {"act1", "act2"}) {
      const std::string base = "blocks." + std::to_string(i) + ".mlp." + act;
      const float* a = lm.model->param(base + ".weight_numerator");
      const float* b = lm.model->param(base + ".weight_denominator");
      viz::Panel p{"block " + std::to_string(i) + " " + act, "x", "F(x)", {}};
      p.legend = (panels.empty());
      for (int g = 0; g < G; ++g) {
        const int arow = cfg.shared_numerator ? 0 : g;
        double ad[6], bd[4];
        for (int k = 0; k < 6; ++k) ad[k] = a[arow * 6 + k];
        for (int k = 0; k < 4; ++k) bd[k] = b[g * 4 + k];
        viz::Series s{"group " + std::to_string(g), {}, {}};
        for (int t = 0; t < npts; ++t) {
          const double x = -3.0 + 6.0 * t / (npts - 1);
          s.x.push_back(x);
          s.y.push_back(ops::grkan_eval(ad, 5, bd, 4, x));
        }
        p.series.push_back(std::move(s));
      }
      panels.push_back(std::move(p));
    }
  viz::write_svg(out, panels, 4, "learned rational functions F(x) on [-3, 3], one curve per group: " + ckpt);
}

}  // namespace

void register_plot(CLI::App& app) {
  auto* sub = app.add_subcommand("plot",
      "Render a run's plots as SVG: DIR/curves.svg (loss and accuracy) and DIR/rationals.svg (the learned\n"
      "rational function of every GR-KAN activation, per layer, one curve per group, over [-3, 3])");
  auto dir = std::make_shared<std::string>();
  auto ckpt = std::make_shared<std::string>();
  sub->add_option("dir", *dir, "Training run directory")->required();
  sub->add_option("--weights,-w", *ckpt, "Checkpoint for the rational plot (default: DIR/best.safetensors, else newest)");
  registry().push_back({sub, [dir, ckpt] {
    plot_curves(*dir, *dir + "/curves.svg");
    std::printf("wrote %s/curves.svg\n", dir->c_str());
    std::string c = *ckpt;
    if (c.empty()) c = std::filesystem::exists(*dir + "/best.safetensors") ? *dir + "/best.safetensors" : latest_checkpoint(*dir);
    if (c.empty()) {
      std::printf("no checkpoint in %s: skipped the rational-function plot\n", dir->c_str());
      return 0;
    }
    const ModelConfig cfg = load_model_for_inference(c, "", {}, false).model->config();
    if (!cfg.is_kat()) {
      std::printf("%s is a DeiT (no GR-KAN): no rational-function plot\n", c.c_str());
      return 0;
    }
    plot_rationals(c, *dir + "/rationals.svg");
    std::printf("wrote %s/rationals.svg\n", dir->c_str());
    return 0;
  }});
}

}  // namespace kat::cli
