// The training loop (docs/MODEL.md §4 recipe, scaled to the data at hand): AdamW + cosine/warm-up,
// label smoothing, mixup/cutmix, augmentation, drop-path, EMA, clipping, accumulation; evaluation
// after every epoch; atomic checkpoints with bit-exact resume; progress bar, metrics.jsonl,
// config.json.
//
// Structure (trainer.cpp): resume_run (the config and step a run continues from), load_run_data
// (datasets, loaders, step counts), init_host_state + make_engine (the host model and training
// state, and the Engine that computes on it: CpuEngine, or GpuGroup over TrainConfig::devices),
// then one loop, Run::train_epoch (the optimizer steps through the Engine interface, the same
// sequence on every backend) and Run::end_epoch (evaluation, log, checkpoint, plots).
//
// Determinism: every random choice is a pure function of (seed, position): data order and
// augmentation of (seed, epoch, index) in the loader, drop-path of (seed, optimizer step). A
// checkpoint therefore only needs the step counter besides weights, moments and EMA, and a resumed
// run replays exactly the same losses as an uninterrupted one.
#pragma once
#include <atomic>
#include <cstdint>
#include <string>
#include <vector>

#include "kat/data/loader.h"
#include "kat/model/config.h"
#include "kat/train/gpu_group.h"
#include "kat/train/train_config.h"

namespace kat {

struct TrainResult {
  int64_t steps = 0;
  int epochs_done = 0;
  double final_top1 = 0, final_loss = 0, best_top1 = 0;
  double final_ema_top1 = -1;
  bool interrupted = false;  // stopped by Ctrl-C or max_steps, checkpoint written
  std::string last_checkpoint;
  std::vector<double> step_losses;  // loss of every optimizer step run in this call
  // Seconds of this call spent in training epochs (evaluation, checkpoints of epoch ends and plots
  // excluded), and of those, how long the training waited for its loader to deliver a batch: a
  // large share means the data pipeline, not the model, sets the pace (`kat train` says so).
  double train_seconds = 0, data_wait_seconds = 0;
};

// Set by the SIGINT handler; the trainer checks it after each step.
extern std::atomic<bool> g_stop_requested;
// Ctrl-C stops at the next step boundary with a checkpoint (twice: at once); SIGUSR1 writes where
// the run is ("kat: SIGUSR1 at step N: <phase> for S s") and lets it go on.
void install_sigint_handler();

// Runs a fresh training run (resume_dir empty) or resumes the newest checkpoint in resume_dir.
TrainResult train(const TrainConfig& cfg, const std::string& resume_dir = "");

// The line `kat train` ends with: how long the training waited for its loader (r.data_wait_seconds
// of r.train_seconds) and, when that is 10 % or more (the data pipeline, not the model, sets the
// pace), what to try: decode "gpu" (the GPU pipeline) or "cpu" (the loader's workers; lazy: a
// folder decoded per batch, which --decode gpu can take).
std::string data_wait_summary(const TrainResult& r, const TrainConfig& tc, const std::string& decode, bool lazy);

// The training loader's configuration of a run: the global batch (tc.batch) of which a process of a
// job (tc.procs) loads its shard (LoaderConfig::shard_world / shard_rank).
data::LoaderConfig train_loader_config(const TrainConfig& tc, const ModelConfig& mc);

// This process's place in a job (tc.procs, world_size > 1) as GpuGroup takes it: rank 0's NCCL id
// handed over by the rendezvous of tc.procs.rendezvous (dist/rendezvous.h).
ProcessGroup make_process_group(const TrainConfig& tc);

// The newest checkpoint file in dir ("" when none).
std::string latest_checkpoint(const std::string& dir);

}  // namespace kat
