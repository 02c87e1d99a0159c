// kat plot DIR: training curves (loss, test accuracy) and the learned rational functions of every
// GR-KAN activation, as SVG (and PNG when the build has librsvg) in DIR. Same files the trainer
// refreshes after every epoch; this command redraws them, e.g. for another checkpoint.
#include <cstdio>
#include <filesystem>
#include <memory>

#include "commands.h"
#include "kat/core/error.h"
#include "kat/train/inference.h"
#include "kat/train/run_plots.h"
#include "kat/train/trainer.h"
#include "viz/raster.h"

namespace kat::cli {

void register_plot(CLI::App& app) {
  auto* sub = app.add_subcommand(
      "plot",
      "Render a run's plots: DIR/curves.svg (loss and accuracy) and DIR/rationals.svg (the learned\n"
      "rational function of every GR-KAN activation, per layer, one curve per group, over [-3, 3]),\n"
      "each also as .png when this build has librsvg. `kat train` writes the same files after every epoch.");
  auto dir = std::make_shared<std::string>();
  auto ckpt = std::make_shared<std::string>();
  sub->add_option("dir", *dir, "Training run directory")->required();
  sub->add_option("--weights,-w", *ckpt,
                  "Checkpoint for the rational plot (default: DIR/best.safetensors, else newest)");
  registry().push_back({sub, [dir, ckpt] {
                          KAT_CHECK(std::filesystem::is_directory(*dir), "kat plot: ", *dir,
                                    " is not a directory");
                          std::vector<std::string> written = write_curves(*dir);
                          std::string c = *ckpt;
                          if (c.empty())
                            c = std::filesystem::exists(*dir + "/best.safetensors") ? *dir + "/best.safetensors"
                                                                                    : latest_checkpoint(*dir);
                          if (c.empty()) {
                            std::printf("no checkpoint in %s: skipped the rational-function plot\n", dir->c_str());
                          } else {
                            LoadedModel lm = load_model_for_inference(c, "", {}, false);
                            if (!lm.model->config().is_kat()) {
                              std::printf("%s is a DeiT (no GR-KAN): no rational-function plot\n", c.c_str());
                            } else {
                              auto r = write_rationals(*dir, *lm.model, c);
                              written.insert(written.end(), r.begin(), r.end());
                            }
                          }
                          for (const auto& f : written) std::printf("wrote %s\n", f.c_str());
                          if (!viz::png_supported())
                            std::printf("(PNG output needs librsvg: install librsvg2-dev and rebuild)\n");
                          return 0;
                        }});
}

}  // namespace kat::cli
