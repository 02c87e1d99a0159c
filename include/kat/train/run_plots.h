// The plots of a training run: training curves from DIR/metrics.jsonl and the learned rational
// function of every GR-KAN activation, written as SVG and, when the build has librsvg, PNG.
// Used by `kat plot` and by the trainer (refreshed after every epoch).
#pragma once
#include <string>
#include <vector>

#include "kat/viz/plot.h"

namespace kat {

class KatModel;

// Two panels (loss; test accuracy) from a metrics.jsonl: train loss per logged step, test loss,
// test top-1 and EMA test top-1 per epoch. Throws kat::Error naming the file (and line) when it is
// missing or a line is not JSON.
std::vector<viz::Panel> curve_panels(const std::string& metrics_path);

// One panel per GR-KAN activation (block i act1 / act2), one curve per group, F(x) on [-3, 3].
// Throws for a DeiT model (no rational activations).
std::vector<viz::Panel> rational_panels(KatModel& model);

// Writes stem + ".svg" and, when viz::png_supported(), stem + ".png" (both atomically).
// Returns the paths written.
std::vector<std::string> write_plot(const std::string& stem, const std::vector<viz::Panel>& panels, int cols,
                                    const std::string& title);

// DIR/curves.{svg,png} from DIR/metrics.jsonl. Returns the paths written.
std::vector<std::string> write_curves(const std::string& dir);
// DIR/rationals.{svg,png} of a KAT model, labelled with `source` (the checkpoint).
std::vector<std::string> write_rationals(const std::string& dir, KatModel& model, const std::string& source);
// Both (the rationals only for a KAT model; model may be null). Returns the paths written.
std::vector<std::string> write_run_plots(const std::string& dir, KatModel* model, const std::string& source);

}  // namespace kat
