// Drop-path (stochastic depth, docs/MODEL.md §2): the per-block, per-sample scales of the two residual
// branches, drawn on the host for every backend so that the CPU and the GPU drop the same samples
// for the same Rng state.
#pragma once
#include <cstdint>

#include "kat/core/rng.h"
#include "kat/model/config.h"

namespace kat {

// Floats of the scale buffer for a batch of B: (depth, 2, B).
inline int64_t drop_path_scale_count(const ModelConfig& cfg, int64_t B) { return int64_t(cfg.depth) * 2 * B; }

// Whether a forward draws drop-path scales: training with drop_path_rate > 0.
inline bool drop_path_active(const ModelConfig& cfg, bool train) { return train && cfg.drop_path_rate > 0; }

// scales (depth, 2, B): [i][0][b] scales block i's attention branch for sample b, [i][1][b] its FFN
// branch; 0 (dropped) or 1/(1-rate) (kept). The rate grows linearly from 0 (block 0) to
// drop_path_rate (last block); a block at rate 0 gets 1 without drawing. Draw order: block, sample,
// then attention before FFN (two rng.uniform() per sample of a block with rate > 0).
void draw_drop_path(const ModelConfig& cfg, int64_t B, Rng& rng, float* scales);

}  // namespace kat
