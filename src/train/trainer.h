// The training loop (SPEC.md §4 recipe, scaled to the data at hand): AdamW + cosine/warm-up,
// label smoothing, mixup/cutmix, augmentation, drop-path, EMA, clipping, accumulation; evaluation
// after every epoch; atomic checkpoints with bit-exact resume; progress bar, metrics.jsonl,
// config.json.
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

#include "model/config.h"
#include "train/train_config.h"

namespace kat {

struct TrainResult {
  int64_t steps = 0;
  int epochs_done = 0;
  double final_top1 = 0, final_loss = 0, best_top1 = 0;
  double final_ema_top1 = -1;
  bool interrupted = false;         // stopped by Ctrl-C or max_steps, checkpoint written
  std::string last_checkpoint;
  std::vector<double> step_losses;  // loss of every optimizer step run in this call
};

// Set by the SIGINT handler; the trainer checks it after each step.
extern std::atomic<bool> g_stop_requested;
void install_sigint_handler();

// Runs a fresh training run (resume_dir empty) or resumes the newest checkpoint in resume_dir.
TrainResult train(const TrainConfig& cfg, const std::string& resume_dir = "");

// The newest checkpoint file in dir ("" when none).
std::string latest_checkpoint(const std::string& dir);

}  // namespace kat
