#include "kat/train/evaluate.h"

#include <algorithm>
#include <cmath>
#include <string>

#include "kat/core/error.h"
#include "ops/cpu_ops.h"
#include "train/progress.h"

#ifdef KAT_HAVE_NVJPEG
#include "data/cuda/gpu_loader.h"
#endif

namespace kat {

double EvalResult::class_accuracy(int c) const {
  int64_t row = 0;
  for (int j = 0; j < classes; ++j) row += confusion[c * classes + j];
  return row ? 100.0 * confusion[c * classes + c] / row : 0.0;
}

namespace {

// Running totals of an evaluation.
class Tally {
 public:
  explicit Tally(int classes) : K_(classes) {
    r_.classes = classes;
    r_.confusion.assign(size_t(classes) * classes, 0);
  }
  // Logits z (n, K) of samples with these labels.
  void add(const float* z, const int32_t* labels, int n) {
    onehot_.assign(size_t(n) * K_, 0.0f);
    rowloss_.resize(n);
    for (int i = 0; i < n; ++i) onehot_[size_t(i) * K_ + labels[i]] = 1.0f;
    ops::softmax_xent<float>(n, K_, z, onehot_.data(), 0.0f, nullptr, rowloss_.data());
    for (int i = 0; i < n; ++i) {
      const float* zi = z + size_t(i) * K_;
      const int y = labels[i];
      int pred = int(std::max_element(zi, zi + K_) - zi), rank = 0;
      for (int k = 0; k < K_; ++k) rank += (zi[k] > zi[y]) || (zi[k] == zi[y] && k < y);
      c1_ += pred == y;
      c5_ += rank < 5;
      r_.confusion[size_t(y) * K_ + pred]++;
      loss_sum_ += rowloss_[i];
    }
    r_.count += n;
  }
  // A job of several processes, each having evaluated its shard of every batch: the totals of all
  // (counts exact in doubles below 2^53; the loss sum in another order than one process's).
  void reduce(Engine& engine) {
    if (engine.process_count() == 1) return;
    std::vector<double> v = {double(r_.count), double(c1_), double(c5_), loss_sum_};
    v.insert(v.end(), r_.confusion.begin(), r_.confusion.end());
    engine.all_reduce_sum(v.data(), int(v.size()));
    r_.count = int64_t(v[0]);
    c1_ = int64_t(v[1]);
    c5_ = int64_t(v[2]);
    loss_sum_ = v[3];
    for (size_t i = 0; i < r_.confusion.size(); ++i) r_.confusion[i] = int64_t(v[4 + i]);
  }
  EvalResult finish(const std::string& source) {
    KAT_CHECK(r_.count > 0, source, ": no samples to evaluate");
    r_.top1 = 100.0 * c1_ / r_.count;
    r_.top5 = 100.0 * c5_ / r_.count;
    r_.loss = loss_sum_ / r_.count;
    return r_;
  }

 private:
  int K_;
  EvalResult r_;
  double loss_sum_ = 0;
  int64_t c1_ = 0, c5_ = 0;
  std::vector<float> onehot_, rowloss_;
};

void check_geometry(const ModelConfig& mc, const data::Dataset& ds, int c, int h, int w) {
  KAT_CHECK(c == mc.in_chans && h == mc.img_size && w == mc.img_size, ds.source, ": images are ", c, "x", h, "x",
            w, " but model '", mc.name, "' expects ", mc.in_chans, "x", mc.img_size, "x", mc.img_size);
}

void check_classes(const ModelConfig& mc, const data::Dataset& ds) {
  KAT_CHECK(ds.num_classes <= mc.num_classes, ds.source, ": dataset has ", ds.num_classes, " classes but model '",
            mc.name, "' has ", mc.num_classes, " outputs");
}

}  // namespace

EvalResult evaluate(Engine& engine, const data::Dataset& ds, const data::LoaderConfig& eval_cfg,
                    bool show_progress, const char* label) {
  const ModelConfig& mc = engine.config();
  check_classes(mc, ds);
  data::Loader loader(ds, eval_cfg);
  loader.start_epoch(0, 0);
  Tally tally(mc.num_classes);
  Progress bar(label, loader.batches_per_epoch(), show_progress);
  data::Batch b;
  int64_t done = 0;
  while (loader.next(b)) {
    check_geometry(mc, ds, b.c, b.h, b.w);
    // (A process of a job may have no rows of a short last batch: eval_cfg.shard_world.)
    if (b.n > 0) tally.add(engine.logits(b.images.data(), b.n), b.labels.data(), b.n);
    bar.update(++done, "", double(b.n));
  }
  bar.finish();
  tally.reduce(engine);
  return tally.finish(ds.source);
}

EvalResult evaluate_gpu_decode(Engine& engine, const data::Dataset& ds, const data::LoaderConfig& eval_cfg,
                               int device, bool skip_bad, int64_t* skipped, bool show_progress,
                               const char* label) {
#ifdef KAT_HAVE_NVJPEG
  const ModelConfig& mc = engine.config();
  check_classes(mc, ds);
  data::cuda::GpuLoaderOptions o;
  o.device = device;
  o.skip_bad = skip_bad;
  data::cuda::GpuLoader loader(ds, eval_cfg, o);
  loader.start_epoch(0, 0);
  Tally tally(mc.num_classes);
  Progress bar(label, loader.batches_per_epoch(), show_progress);
  data::cuda::GpuBatch b;
  int64_t done = 0;
  while (loader.next(b)) {
    check_geometry(mc, ds, b.c, b.h, b.w);
    tally.add(engine.logits_device(b.images, b.n), b.labels.data(), b.n);
    bar.update(++done, "", double(b.n));
  }
  bar.finish();
  if (skipped) *skipped = loader.bad_files();
  return tally.finish(ds.source);
#else
  (void)engine, (void)ds, (void)eval_cfg, (void)device, (void)skip_bad, (void)skipped, (void)show_progress,
      (void)label;
  throw Error("GPU decoding needs a build with CUDA and nvJPEG (KAT_NVJPEG); use --decode cpu");
#endif
}

}  // namespace kat
