// Deterministic threaded batch loader.
//
// Batch b of epoch e is a pure function of (seed, e, b, dataset, config):
//   order      = Fisher-Yates permutation from Rng(seed_hash({seed, e, seed_tag("perm")}))  (shuffle)
//   sample i   = augment(ds[i]) with Rng(seed_hash({seed, e, i, seed_tag("aug")}))
//   mix        = mix_batch with Rng(seed_hash({seed, e, b, seed_tag("mix")}))
// independent of num_workers, timing and of the batch an epoch was started at. Workers build whole
// batches into a bounded ring of `prefetch` slots; next() hands them out strictly in order.
#pragma once
#include <condition_variable>
#include <cstdint>
#include <exception>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

#include "kat/data/augment.h"
#include "kat/data/dataset.h"

namespace kat::data {

struct Batch {
  int n = 0, c = 0, h = 0, w = 0, classes = 0;
  std::vector<float> images;     // (n, c, h, w), normalized
  std::vector<int32_t> labels;   // (n) original labels (before mixing)
  std::vector<float> targets;    // (n, classes) soft targets incl. smoothing / mixing
  std::vector<int64_t> indices;  // (n) dataset indices
  int64_t epoch = 0, batch = 0;  // which batch this is
  MixResult mix;                 // what mixing did (lam, cutmix box)
};

struct LoaderConfig {
  int batch_size = 128;
  bool shuffle = true;
  bool drop_last = true;
  uint64_t seed = 0;
  int num_workers = 1;  // 0: build batches synchronously inside next()
  int prefetch = 4;     // batches buffered ahead (at least num_workers are used)
  AugmentConfig aug;
  MixConfig mix;
  // One process of a multi-process job: every batch is the global batch b (batch_size rows, the
  // one-process order, augmentation and mixing), of which this loader builds only the rows
  // shard_rows(rows, shard_world, shard_rank) (make_batch_rows). 1 / 0: the whole batch (make_batch).
  int shard_world = 1, shard_rank = 0;

  // Eval loader matching a training config: same out_size / mean / std / eval_crop_pct / fill,
  // train = false, no shuffle, keep the last partial batch, no mixing, no smoothing; the same
  // shard (a rank may get no rows of a short last batch).
  static LoaderConfig eval(const LoaderConfig& train_cfg, int batch_size = 0);
};

// Epoch order (identity when !shuffle).
std::vector<int64_t> epoch_order(size_t n, uint64_t seed, int64_t epoch, bool shuffle);
// Build batch `b` of `epoch` given that epoch's order (what the workers run).
void make_batch(const Dataset& ds, const LoaderConfig& cfg, int64_t epoch, int64_t b,
                const std::vector<int64_t>& order, Batch& out);
// Rows [lo, hi) of that batch, bitwise the same rows as make_batch's (images, labels, indices,
// targets; `mix` is the whole batch's decision), augmenting only those rows and their mixing
// partners (Mixup / CutMix pair row i with row n-1-i): what one process of a multi-process job
// loads of the global batch (out.n = hi - lo).
void make_batch_rows(const Dataset& ds, const LoaderConfig& cfg, int64_t epoch, int64_t b,
                     const std::vector<int64_t>& order, int lo, int hi, Batch& out);
// Number of rows of batch `b` (batch_size, or fewer for a last partial batch).
int batch_rows(const LoaderConfig& cfg, size_t dataset_size, int64_t b);
// The rows of a batch of n that rank `rank` of `world` takes: [n * rank / world, n * (rank + 1) /
// world), so every row goes to exactly one rank, in order, and shard sizes differ by at most one.
struct RowRange {
  int lo = 0, hi = 0;
};
RowRange shard_rows(int n, int world, int rank);

class Loader {
 public:
  Loader(const Dataset& ds, LoaderConfig cfg);  // keeps a reference to ds
  ~Loader();                                    // joins threads cleanly
  Loader(const Loader&) = delete;
  Loader& operator=(const Loader&) = delete;

  int64_t batches_per_epoch() const { return batches_per_epoch_; }
  const LoaderConfig& config() const { return cfg_; }
  const Dataset& dataset() const { return ds_; }
  // Output image geometry.
  int out_channels() const { return ds_.channels; }
  int out_height() const { return aug_out_h(cfg_.aug, ds_.height); }
  int out_width() const { return aug_out_w(cfg_.aug, ds_.width); }

  // Begin epoch `epoch`, starting at batch `first_batch` (for bit-exact resume). Discards any
  // batches still buffered from a previous epoch.
  void start_epoch(int64_t epoch, int64_t first_batch = 0);
  // Next batch in order; false at the end of the epoch. Exceptions thrown while building the batch
  // are rethrown here (in batch order).
  bool next(Batch& out);
  // Index of the batch the next call to next() returns.
  int64_t position() const { return next_deliver_; }
  int64_t epoch() const { return epoch_; }

 private:
  struct Slot {
    int64_t batch = -1;
    bool ready = false;
    Batch data;
    std::exception_ptr err;
  };
  void worker_loop();

  const Dataset& ds_;
  LoaderConfig cfg_;
  int64_t batches_per_epoch_ = 0;

  std::mutex mu_;
  std::condition_variable cv_work_, cv_ready_;
  std::vector<Slot> slots_;
  std::vector<std::thread> workers_;
  std::shared_ptr<const std::vector<int64_t>> order_;
  bool started_ = false, stop_ = false;
  uint64_t generation_ = 0;
  int64_t epoch_ = 0, next_claim_ = 0, next_deliver_ = 0;
};

}  // namespace kat::data
