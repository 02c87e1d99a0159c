#include "kat/data/loader.h"

#include <algorithm>

#include "data/augment_plan.h"
#include "kat/core/error.h"

namespace kat::data {

LoaderConfig LoaderConfig::eval(const LoaderConfig& t, int batch_size) {
  LoaderConfig e;
  e.batch_size = batch_size > 0 ? batch_size : t.batch_size;
  e.shuffle = false;
  e.drop_last = false;
  e.seed = t.seed;
  e.num_workers = t.num_workers;
  e.prefetch = t.prefetch;
  e.aug.train = false;
  e.aug.out_size = t.aug.out_size;
  e.aug.eval_crop_pct = t.aug.eval_crop_pct;
  e.aug.fill = t.aug.fill;
  e.aug.mean = t.aug.mean;
  e.aug.std = t.aug.std;
  e.shard_world = t.shard_world;
  e.shard_rank = t.shard_rank;
  return e;
}

std::vector<int64_t> epoch_order(size_t n, uint64_t seed, int64_t epoch, bool shuffle) {
  std::vector<int64_t> order(n);
  for (size_t i = 0; i < n; ++i) order[i] = static_cast<int64_t>(i);
  if (shuffle && n > 1) {
    Rng rng(seed_hash({seed, static_cast<uint64_t>(epoch), seed_tag("perm")}));
    for (size_t i = n - 1; i > 0; --i) std::swap(order[i], order[rng.below(i + 1)]);
  }
  return order;
}

int batch_rows(const LoaderConfig& cfg, size_t dataset_size, int64_t b) {
  const int64_t N = static_cast<int64_t>(dataset_size), begin = b * cfg.batch_size;
  KAT_ASSERT(begin >= 0 && begin < N);
  return static_cast<int>(std::min<int64_t>(cfg.batch_size, N - begin));
}

RowRange shard_rows(int n, int world, int rank) {
  KAT_CHECK(world >= 1 && rank >= 0 && rank < world, "shard_rows: rank ", rank, " of a world of ", world);
  KAT_CHECK(n >= 0, "shard_rows: ", n, " rows");
  return {static_cast<int>(int64_t(n) * rank / world), static_cast<int>(int64_t(n) * (rank + 1) / world)};
}

void make_batch(const Dataset& ds, const LoaderConfig& cfg, int64_t epoch, int64_t b,
                const std::vector<int64_t>& order, Batch& out) {
  make_batch_rows(ds, cfg, epoch, b, order, 0, batch_rows(cfg, order.size(), b), out);
}

namespace {
// What a Loader delivers as batch b: the whole batch, or this process's shard of it.
void make_loader_batch(const Dataset& ds, const LoaderConfig& cfg, int64_t epoch, int64_t b,
                       const std::vector<int64_t>& order, Batch& out) {
  if (cfg.shard_world == 1) return make_batch(ds, cfg, epoch, b, order, out);
  const RowRange r = shard_rows(batch_rows(cfg, order.size(), b), cfg.shard_world, cfg.shard_rank);
  make_batch_rows(ds, cfg, epoch, b, order, r.lo, r.hi, out);
}
}  // namespace

void make_batch_rows(const Dataset& ds, const LoaderConfig& cfg, int64_t epoch, int64_t b,
                     const std::vector<int64_t>& order, int lo, int hi, Batch& out) {
  const int64_t begin = b * cfg.batch_size;
  const int n = batch_rows(cfg, order.size(), b);
  KAT_CHECK(0 <= lo && lo <= hi && hi <= n, "make_batch_rows: rows [", lo, ", ", hi, ") of a batch of ", n);
  const int c = ds.channels, h = aug_out_h(cfg.aug, ds.height), w = aug_out_w(cfg.aug, ds.width);
  const size_t img = static_cast<size_t>(c) * h * w, classes = static_cast<size_t>(ds.num_classes);
  const int rows = hi - lo;
  out.n = rows;
  out.c = c;
  out.h = h;
  out.w = w;
  out.classes = ds.num_classes;
  out.epoch = epoch;
  out.batch = b;
  out.images.resize(img * rows);
  out.labels.resize(rows);
  out.indices.resize(rows);
  out.targets.resize(rows * classes);
  // Normalization table: cached per thread for the last config seen.
  static thread_local std::vector<float> lut;
  static thread_local std::vector<float> lut_mean, lut_std;
  static thread_local int lut_c = -1;
  if (lut_c != c || lut_mean != cfg.aug.mean || lut_std != cfg.aug.std) {
    lut = make_norm_lut(cfg.aug, c);
    lut_mean = cfg.aug.mean;
    lut_std = cfg.aug.std;
    lut_c = c;
  }
  static thread_local AugScratch scratch;
  static thread_local std::vector<uint8_t> lazy_px;  // lazy folders: the decoded image
  // A part of the batch is built in a whole-batch buffer (the rows it needs filled), so the mixing
  // below is make_batch's own code on the same values; the whole batch goes straight into `out`.
  static thread_local std::vector<float> part_images, part_targets;
  const bool whole = lo == 0 && hi == n;
  if (!whole) {
    part_images.resize(img * n);
    part_targets.resize(n * classes);
  }
  float* images = whole ? out.images.data() : part_images.data();
  float* targets = whole ? out.targets.data() : part_targets.data();
  // The mixing decision depends only on the batch (its own stream), so it is known before the
  // pixels: with mixing on, row i also needs its partner n-1-i.
  const MixResult mix = plan_batch_mix(cfg, epoch, b, n, h, w);
  auto needed = [&](int i) { return (i >= lo && i < hi) || (mix.applied && n - 1 - i >= lo && n - 1 - i < hi); };
  // Lazy folders in training with RandomResizedCrop crop from the original image (eager datasets
  // hold only the image fitted to the model's size, so they crop from that).
  const bool original_rrc = ds.lazy() && cfg.aug.train && cfg.aug.crop == "rrc" && cfg.aug.out_size > 0;
  std::vector<int32_t> labels(n);
  for (int i = 0; i < n; ++i) {
    const int64_t idx = order[begin + i];
    labels[i] = ds.labels[idx];
    KAT_CHECK(labels[i] >= 0 && labels[i] < ds.num_classes, ds.source, ": label ", labels[i], " at index ", idx,
              " out of range [0, ", ds.num_classes, ")");
    if (i >= lo && i < hi) {
      out.indices[i - lo] = idx;
      out.labels[i - lo] = labels[i];
    }
    if (!needed(i)) continue;
    const uint8_t* src = ds.lazy() ? nullptr : ds.image(idx);
    int sh = ds.height, sw = ds.width;
    if (!src && original_rrc) {  // RandomResizedCrop from the file's full image, as timm
      ds.read_original(size_t(idx), lazy_px, sh, sw);
      src = lazy_px.data();
    } else if (!src) {
      lazy_px.resize(ds.image_bytes());
      ds.read_image(size_t(idx), lazy_px.data());
      src = lazy_px.data();
    }
    // Draw every decision of the sample, then apply them. The lazy fitted read (read_image) has
    // already fitted the image to sh x sw, so only the augmentation part of the plan is applied.
    const SamplePlan plan = plan_sample(cfg, ds, epoch, idx, sh, sw, c);
    apply_augment(src, plan, cfg.aug, lut.data(), scratch, images + img * i);
  }
  out.mix = mix;
  // Pairs (i, n-1-i) of which neither row is needed mix whatever the buffer holds; no row of
  // [lo, hi) reads them.
  apply_mix(mix, images, n, c, h, w);
  mix_targets(batch_mix_config(cfg), mix, labels.data(), n, ds.num_classes, targets);
  if (!whole) {
    std::copy(images + img * lo, images + img * hi, out.images.begin());
    std::copy(targets + classes * lo, targets + classes * hi, out.targets.begin());
  }
}

Loader::Loader(const Dataset& ds, LoaderConfig cfg) : ds_(ds), cfg_(std::move(cfg)) {
  const std::string who = "loader for " + (ds.source.empty() ? std::string("dataset") : ds.source);
  KAT_CHECK(ds.size() > 0, who, ": dataset is empty");
  KAT_CHECK(ds.channels >= 1 && ds.height >= 1 && ds.width >= 1 && ds.num_classes >= 1, who,
            ": bad dataset geometry ", ds.height, "x", ds.width, "x", ds.channels, ", ", ds.num_classes,
            " classes");
  if (ds.lazy())
    KAT_CHECK(ds.files.size() == ds.size() && ds.decode_size == ds.height && ds.height == ds.width, who,
              ": lazy dataset with ", ds.files.size(), " files for ", ds.size(), " labels, decode size ",
              ds.decode_size, " for ", ds.height, "x", ds.width, " images");
  else
    KAT_CHECK(ds.pixels.size() == ds.size() * ds.image_bytes(), who, ": pixel buffer holds ", ds.pixels.size(),
              " bytes, expected ", ds.size() * ds.image_bytes());
  KAT_CHECK(cfg_.batch_size >= 1, who, ": batch_size must be >= 1, got ", cfg_.batch_size);
  KAT_CHECK(cfg_.num_workers >= 0 && cfg_.num_workers <= 256, who, ": num_workers must be in [0, 256], got ",
            cfg_.num_workers);
  KAT_CHECK(cfg_.prefetch >= 1, who, ": prefetch must be >= 1, got ", cfg_.prefetch);
  KAT_CHECK(cfg_.shard_world >= 1 && cfg_.shard_rank >= 0 && cfg_.shard_rank < cfg_.shard_world, who, ": shard ",
            cfg_.shard_rank, " of ", cfg_.shard_world, " (rank must be in [0, world))");
  KAT_CHECK(cfg_.mix.prob >= 0 && cfg_.mix.prob <= 1 && cfg_.mix.switch_prob >= 0 && cfg_.mix.switch_prob <= 1 &&
                cfg_.mix.mixup_alpha >= 0 && cfg_.mix.cutmix_alpha >= 0,
            who, ": bad mix config (alphas must be >= 0, probabilities in [0, 1])");
  KAT_CHECK(cfg_.mix.label_smoothing >= 0 && cfg_.mix.label_smoothing < 1, who,
            ": label_smoothing must be in [0, 1), got ", cfg_.mix.label_smoothing);
  validate(cfg_.aug, ds.height, ds.width, ds.channels);
  for (size_t i = 0; i < ds.size(); ++i)
    KAT_CHECK(ds.labels[i] >= 0 && ds.labels[i] < ds.num_classes, who, ": label ", ds.labels[i], " at index ", i,
              " out of range [0, ", ds.num_classes, ")");
  const int64_t N = static_cast<int64_t>(ds.size()), B = cfg_.batch_size;
  batches_per_epoch_ = cfg_.drop_last ? N / B : (N + B - 1) / B;
  KAT_CHECK(batches_per_epoch_ > 0, who, ": ", N, " samples is fewer than one batch of ", B,
            " with drop_last (lower the batch size)");
  if (cfg_.num_workers > 0) {
    slots_.resize(static_cast<size_t>(std::max(cfg_.prefetch, cfg_.num_workers)));
    workers_.reserve(cfg_.num_workers);
    for (int i = 0; i < cfg_.num_workers; ++i) workers_.emplace_back([this] { worker_loop(); });
  }
}

Loader::~Loader() {
  {
    std::lock_guard<std::mutex> lk(mu_);
    stop_ = true;
  }
  cv_work_.notify_all();
  cv_ready_.notify_all();
  for (auto& t : workers_)
    if (t.joinable()) t.join();
}

void Loader::start_epoch(int64_t epoch, int64_t first_batch) {
  KAT_CHECK(epoch >= 0, "loader: epoch must be >= 0, got ", epoch);
  KAT_CHECK(first_batch >= 0 && first_batch <= batches_per_epoch_, "loader: first batch ", first_batch,
            " out of range [0, ", batches_per_epoch_, "]");
  auto order =
      std::make_shared<const std::vector<int64_t>>(epoch_order(ds_.size(), cfg_.seed, epoch, cfg_.shuffle));
  {
    std::lock_guard<std::mutex> lk(mu_);
    ++generation_;
    order_ = std::move(order);
    epoch_ = epoch;
    next_claim_ = next_deliver_ = first_batch;
    for (auto& s : slots_) {
      s.batch = -1;
      s.ready = false;
      s.err = nullptr;
    }
    started_ = true;
  }
  cv_work_.notify_all();
}

void Loader::worker_loop() {
  std::unique_lock<std::mutex> lk(mu_);
  const int64_t depth = static_cast<int64_t>(slots_.size());
  for (;;) {
    cv_work_.wait(lk, [&] {
      return stop_ || (started_ && next_claim_ < batches_per_epoch_ && next_claim_ < next_deliver_ + depth);
    });
    if (stop_) return;
    const int64_t b = next_claim_++;
    const uint64_t gen = generation_;
    const int64_t epoch = epoch_;
    auto order = order_;
    Slot& slot = slots_[static_cast<size_t>(b % depth)];
    slot.batch = b;
    slot.ready = false;
    slot.err = nullptr;
    Batch local;
    std::swap(local, slot.data);  // reuse the slot's buffers
    lk.unlock();
    std::exception_ptr err;
    try {
      make_loader_batch(ds_, cfg_, epoch, b, *order, local);
    } catch (...) {
      err = std::current_exception();
    }
    lk.lock();
    if (gen != generation_ || stop_) continue;  // epoch restarted meanwhile: drop the result
    std::swap(slot.data, local);
    slot.err = err;
    slot.ready = true;
    cv_ready_.notify_all();
  }
}

bool Loader::next(Batch& out) {
  KAT_CHECK(started_, "loader: next() called before start_epoch()");
  if (next_deliver_ >= batches_per_epoch_) return false;
  if (workers_.empty()) {
    const int64_t b = next_deliver_++;  // like the threaded path: a failed batch is skipped, not retried
    make_loader_batch(ds_, cfg_, epoch_, b, *order_, out);
    return true;
  }
  std::exception_ptr err;
  {
    std::unique_lock<std::mutex> lk(mu_);
    const int64_t b = next_deliver_;
    Slot& slot = slots_[static_cast<size_t>(b % static_cast<int64_t>(slots_.size()))];
    cv_ready_.wait(lk, [&] { return slot.batch == b && slot.ready; });
    std::swap(out, slot.data);
    err = slot.err;
    slot.err = nullptr;
    slot.batch = -1;
    slot.ready = false;
    ++next_deliver_;
  }
  cv_work_.notify_all();
  if (err) std::rethrow_exception(err);
  return true;
}

}  // namespace kat::data
