// Evaluation of a classifier on a dataset: top-1, top-5, mean loss, per-class accuracy and the
// confusion matrix. Used after every epoch by the trainer and by `kat eval`.
#pragma once
#include <cstdint>
#include <vector>

#include "kat/data/dataset.h"
#include "kat/data/loader.h"
#include "kat/train/engine.h"

namespace kat {

struct EvalResult {
  int64_t count = 0;
  double top1 = 0, top5 = 0, loss = 0;  // percent, percent, mean cross-entropy (no smoothing)
  std::vector<int64_t> confusion;       // (classes, classes): row = true label, column = prediction
  int classes = 0;
  double class_accuracy(int c) const;  // percent
};

// Runs the engine's model in eval mode (Engine::logits) over the whole dataset with the loader's
// eval transform: CpuEngine, GpuRunner or GpuGroup alike. A process of a job (eval_cfg.shard_world
// > 1, Engine::process_count() > 1) evaluates its rows of every batch and the counts are summed over
// the processes: every process returns the whole dataset's result.
EvalResult evaluate(Engine& engine, const data::Dataset& ds, const data::LoaderConfig& eval_cfg,
                    bool show_progress, const char* label = "eval");
// The same with the GPU data pipeline (nvJPEG + GPU eval transform, data/cuda/gpu_loader.h) on
// GPU `device`: a lazy folder dataset and an engine on that GPU (Engine::logits_device).
// skip_bad: unreadable files are left out and counted in *skipped. Builds without nvJPEG throw.
EvalResult evaluate_gpu_decode(Engine& engine, const data::Dataset& ds, const data::LoaderConfig& eval_cfg,
                               int device, bool skip_bad, int64_t* skipped, bool show_progress,
                               const char* label = "eval");

}  // namespace kat
