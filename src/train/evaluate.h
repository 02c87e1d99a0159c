// Evaluation of a classifier on a dataset: top-1, top-5, mean loss, per-class accuracy and the
// confusion matrix. Used after every epoch by the trainer and by `kat eval`.
#pragma once
#include <cstdint>
#include <functional>
#include <vector>

#include "data/dataset.h"
#include "data/loader.h"
#include "model/kat_model.h"

namespace kat {

struct EvalResult {
  int64_t count = 0;
  double top1 = 0, top5 = 0, loss = 0;   // percent, percent, mean cross-entropy (no smoothing)
  std::vector<int64_t> confusion;        // (classes, classes): row = true label, column = prediction
  int classes = 0;
  double class_accuracy(int c) const;    // percent
};

// Optional replacement of the model's forward (e.g. the GPU): images (B,C,H,W) -> host logits.
using ForwardFn = std::function<const float*(const float* images, int B)>;

class GpuRunner;
// The runner's logits() as a ForwardFn; null gpu gives an empty one (evaluate uses the CPU model).
ForwardFn gpu_forward(GpuRunner* gpu);

// Runs the model in eval mode over the whole dataset with the loader's eval transform.
EvalResult evaluate(KatModel& model, const data::Dataset& ds, const data::LoaderConfig& eval_cfg,
                    bool show_progress, const char* label = "eval", const ForwardFn& forward = {});

}  // namespace kat
