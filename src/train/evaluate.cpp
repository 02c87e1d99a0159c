#include "kat/train/evaluate.h"

#include <algorithm>
#include <cmath>

#include "kat/core/error.h"
#include "ops/cpu_ops.h"
#include "train/progress.h"

namespace kat {

double EvalResult::class_accuracy(int c) const {
  int64_t row = 0;
  for (int j = 0; j < classes; ++j) row += confusion[c * classes + j];
  return row ? 100.0 * confusion[c * classes + c] / row : 0.0;
}

EvalResult evaluate(Engine& engine, const data::Dataset& ds, const data::LoaderConfig& eval_cfg,
                    bool show_progress, const char* label) {
  const ModelConfig& mc = engine.config();
  const int K = mc.num_classes;
  KAT_CHECK(ds.num_classes <= K, ds.source, ": dataset has ", ds.num_classes, " classes but model '", mc.name,
            "' has ", K, " outputs");
  data::Loader loader(ds, eval_cfg);
  loader.start_epoch(0, 0);
  EvalResult r;
  r.classes = K;
  r.confusion.assign(size_t(K) * K, 0);
  double loss_sum = 0;
  int64_t c1 = 0, c5 = 0;
  Progress bar(label, loader.batches_per_epoch(), show_progress);
  data::Batch b;
  std::vector<float> onehot, rowloss;
  int64_t done = 0;
  while (loader.next(b)) {
    KAT_CHECK(b.c == mc.in_chans && b.h == mc.img_size && b.w == mc.img_size, ds.source, ": images are ", b.c, "x",
              b.h, "x", b.w, " but model '", mc.name, "' expects ", mc.in_chans, "x", mc.img_size, "x",
              mc.img_size);
    const float* z = engine.logits(b.images.data(), b.n);
    onehot.assign(size_t(b.n) * K, 0.0f);
    rowloss.resize(b.n);
    for (int i = 0; i < b.n; ++i) onehot[size_t(i) * K + b.labels[i]] = 1.0f;
    ops::softmax_xent<float>(b.n, K, z, onehot.data(), 0.0f, nullptr, rowloss.data());
    for (int i = 0; i < b.n; ++i) {
      const float* zi = z + size_t(i) * K;
      const int y = b.labels[i];
      int pred = int(std::max_element(zi, zi + K) - zi), rank = 0;
      for (int k = 0; k < K; ++k) rank += (zi[k] > zi[y]) || (zi[k] == zi[y] && k < y);
      c1 += pred == y;
      c5 += rank < 5;
      r.confusion[size_t(y) * K + pred]++;
      loss_sum += rowloss[i];
    }
    r.count += b.n;
    bar.update(++done, "", double(b.n));
  }
  bar.finish();
  KAT_CHECK(r.count > 0, ds.source, ": no samples to evaluate");
  r.top1 = 100.0 * c1 / r.count;
  r.top5 = 100.0 * c5 / r.count;
  r.loss = loss_sum / r.count;
  return r;
}

}  // namespace kat
