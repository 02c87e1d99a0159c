// FP8 linear layers: the recipe, one description for both backends (CPU reference: emulation in
// fp32 over the exact FP8 values, ops/cpu/fp8.h, in the model: model/kat_model_fp8.cpp; CUDA:
// cuBLASLt FP8 GEMMs on Hopper, ops/cuda/gemm_fp8.h, in the model: model/kat_model_cuda_fp8.cpp).
// Formats and their encoding: core/fp8.h.
//
// Which GEMMs: the four linear layers of every block (qkv, proj, fc1, fc2), forward and both
// backward GEMMs. The patch embedding and the head stay in the run's working precision (the first
// and last layers are the ones FP8 training recipes keep in higher precision: the head's few
// columns are cheap and its logits feed the loss directly).
//
// Per GEMM (shapes as ops/gemm.h: x (rows, in), W (out, in), dy (rows, out)):
//   forward          y  = (q(x)·s_x^-1) (q(W)·s_W^-1)^T + b     q(x), q(W): E4M3
//   backward data    dx = (q(dy)·s_dy^-1) (q(W)·s_W^-1)          q(dy): E5M2
//   backward weight  dW += (q(dy)·s_dy^-1)^T (q(x)·s_x^-1)
// with q(t) = encode(t · s_t) (round to nearest even, saturating: core/fp8.h) and products summed
// in fp32. The backward GEMMs reuse the forward's q(x) and q(W) (no requantisation). The bias is
// added in fp32, and db = Σ_rows dy is taken over the unquantised dy (a column sum, no GEMM; as
// Transformer Engine's fused cast + dbias).
//
// Scales are powers of two, so q(t)·s_t^-1 is exact and both backends quantise to the same bytes
// (an fp32 multiply by 2^k is exact away from fp32's limits): s = 2^e with e the largest integer
// for which amax · 2^e <= the format's largest finite value, minus `margin`; amax = 0 (or a
// non-finite amax, which the loss check reports anyway) gives s = 1. e is clamped to [-120, 120].
//
// Which amax (per tensor, "per-tensor scaling"):
//   weights:                current: the amax of W as it is now (W is quantised once per
//                           optimizer step, after the update; eval quantises the weights it uses).
//   x and dy when training: delayed: the largest amax of the last `history` training passes
//                           (micro-batches) of that tensor, recorded when it was quantised; with
//                           no history yet (the first pass), the tensor's own amax. Delayed scaling
//                           lets the kernel that produces x or dy write FP8 directly (the scale is
//                           known before the tensor exists). A value beyond s's range saturates.
//   x in eval / inference:  current (no history is read or written: evaluation cannot change the
//                           training trajectory).
//   history = 0: current scaling for every tensor.
// The histories are training state: saved in checkpoints, so a resumed run is bitwise the same.
#pragma once
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>

#include "kat/core/error.h"
#include "kat/core/fp8.h"

namespace kat::ops {

struct Fp8Recipe {
  int history = 16;  // amax history length of x and dy (training passes); 0: current scaling
  int margin = 0;    // scale exponent reduced by this many bits (headroom against growth)
};

// The power-of-two scale for a tensor of this amax (see above).
inline float fp8_scale_for_amax(float amax, Fp8Format f, int margin) {
  if (!(amax > 0.0f) || !std::isfinite(amax)) return 1.0f;
  const float max_finite = fp8_traits(f).max_finite;
  int e = std::ilogb(max_finite) - std::ilogb(amax);
  if (std::ldexp(amax, e) > max_finite) --e;
  e = std::clamp(e - margin, -120, 120);
  return std::ldexp(1.0f, e);
}

// The quantised tensors of one block's linear layers whose amax history is kept, in the order of
// the checkpoint's history table: per block, x then dy of qkv, proj, fc1, fc2.
enum class Fp8Slot : int { qkv_x, qkv_dy, proj_x, proj_dy, fc1_x, fc1_dy, fc2_x, fc2_dy, count };
inline constexpr int kFp8SlotsPerBlock = static_cast<int>(Fp8Slot::count);

// Amax histories of every delayed-scaled tensor: slots (depth * kFp8SlotsPerBlock) rings of
// `history` floats, plus each ring's fill count. Host side; the CUDA engine keeps the same table in
// device memory and downloads it into this layout for checkpoints.
struct Fp8AmaxHistory {
  int slots = 0, length = 0;
  std::vector<float> amax;    // (slots, length): entry [s * length + (pass % length)]
  std::vector<int64_t> seen;  // (slots): passes recorded per slot

  void reset(int num_slots, int history_length) {
    KAT_CHECK(num_slots >= 0 && history_length >= 0, "fp8 amax history: bad size");
    slots = num_slots, length = history_length;
    amax.assign(static_cast<std::size_t>(slots) * length, 0.0f);
    seen.assign(slots, 0);
  }
  bool has_history(int slot) const { return length > 0 && seen[slot] > 0; }
  // The largest recorded amax of slot (valid only when has_history).
  float max_amax(int slot) const {
    const int n = static_cast<int>(std::min<int64_t>(seen[slot], length));
    float m = 0.0f;
    for (int i = 0; i < n; ++i) m = std::max(m, amax[static_cast<std::size_t>(slot) * length + i]);
    return m;
  }
  void record(int slot, float a) {
    if (length == 0) return;
    amax[static_cast<std::size_t>(slot) * length + seen[slot] % length] = a;
    ++seen[slot];
  }
};

// The scale of a delayed-scaled tensor (x or dy in a training pass, see above) whose own amax is
// `amax`, and the history's record of it: the largest amax of the slot's earlier passes, or `amax`
// itself when there are none (the first pass, or history = 0: current scaling); then `amax` is
// recorded, so the next pass sees it. Call once per slot and pass.
inline float fp8_delayed_scale(Fp8AmaxHistory& h, int slot, float amax, Fp8Format f, int margin) {
  const float a = h.has_history(slot) ? h.max_amax(slot) : amax;
  h.record(slot, amax);
  return fp8_scale_for_amax(a, f, margin);
}

// Checks an amax history handed in for restoring (a checkpoint's fp8.amax_history / fp8.amax_seen)
// against the table of a model of this depth keeping `slots` rings of `length`: sizes and
// non-negative counts; the error names both shapes.
inline void check_fp8_history(const std::vector<float>& amax, const std::vector<int64_t>& seen, int slots,
                              int length, int depth) {
  KAT_CHECK(amax.size() == std::size_t(slots) * std::size_t(length) && seen.size() == std::size_t(slots),
            "FP8 amax history of ", amax.size(), " values and ", seen.size(), " counts, but this model (depth ",
            depth, ", history ", length, ") keeps ", slots, " slots x ", length, " values and ", slots, " counts");
  for (int64_t s : seen) KAT_CHECK(s >= 0, "FP8 amax history: a negative pass count (", s, ")");
}

}  // namespace kat::ops
