// KatModel's FP8 emulation (--precision fp8 on the CPU): enabling it, its amax history, and the
// block linears in FP8, per the recipe of ops/fp8.h over the reference ops of ops/cpu/fp8.h.
#include "model/kat_model_fp8.h"

#include <string>

#include "kat/core/error.h"
#include "ops/cpu/fp8.h"

namespace kat {

KatModel::~KatModel() = default;
KatModel::KatModel(KatModel&&) noexcept = default;
KatModel& KatModel::operator=(KatModel&&) noexcept = default;

void KatModel::enable_fp8() {
  const ops::Fp8Recipe r;
  enable_fp8(r.history, r.margin);
}

void KatModel::enable_fp8(int history, int margin) {
  KAT_CHECK(history >= 0, "FP8: the amax history length must be >= 0 (0: current scaling), got ", history);
  auto st = std::make_unique<Fp8State>();
  st->recipe.history = history;
  st->recipe.margin = margin;
  st->history.reset(cfg_.depth * ops::kFp8SlotsPerBlock, history);
  const int64_t D = cfg_.embed_dim, Hd = cfg_.mlp_hidden;
  const int64_t sizes[4] = {3 * D * D, D * D, Hd * D, D * Hd};
  for (int l = 0; l < 4; ++l) st->wq_offset[l] = st->wq_block, st->wq_block += sizes[l];
  st->wq.assign(size_t(st->wq_block * cfg_.depth), 0.0f);
  fp8_ = std::move(st);
}

int KatModel::fp8_history_slots() const { return fp8_ ? fp8_->history.slots : 0; }
int KatModel::fp8_history_length() const { return fp8_ ? fp8_->history.length : 0; }

void KatModel::get_fp8_history(std::vector<float>& amax, std::vector<int64_t>& seen) const {
  KAT_CHECK(fp8_ != nullptr, "KatModel::get_fp8_history: FP8 is not enabled (enable_fp8)");
  amax = fp8_->history.amax;
  seen = fp8_->history.seen;
}

void KatModel::set_fp8_history(const std::vector<float>& amax, const std::vector<int64_t>& seen) {
  KAT_CHECK(fp8_ != nullptr, "KatModel::set_fp8_history: FP8 is not enabled (enable_fp8)");
  ops::Fp8AmaxHistory& h = fp8_->history;
  ops::check_fp8_history(amax, seen, h.slots, h.length, cfg_.depth);
  h.amax = amax;
  h.seen = seen;
}

void KatModel::fp8_linear_forward(int block, int lin, int64_t rows, int64_t in, int64_t out, float* x,
                                  int64_t w_off, int64_t b_off, float* y) {
  Fp8State& st = *fp8_;
  const int margin = st.recipe.margin;
  const float* W = params.data() + w_off;
  float* wq = st.wq.data() + block * st.wq_block + st.wq_offset[lin];
  const float amax_x = ops::fp8_amax(rows * in, x);
  const int slot = block * ops::kFp8SlotsPerBlock + 2 * lin;  // Fp8Slot: x of linear lin
  const float s_x = fp8_train_pass_ ? ops::fp8_delayed_scale(st.history, slot, amax_x, Fp8Format::E4M3, margin)
                                    : ops::fp8_scale_for_amax(amax_x, Fp8Format::E4M3, margin);
  const float s_w = ops::fp8_scale_for_amax(ops::fp8_amax(out * in, W), Fp8Format::E4M3, margin);
  ops::linear_forward_fp8(rows, in, out, x, W, params.data() + b_off, s_x, s_w, x, wq, y);
}

void KatModel::fp8_linear_backward(int block, int lin, int64_t rows, int64_t in, int64_t out, const float* xq,
                                   float* dy, float* dx, int64_t w_off, int64_t b_off) {
  Fp8State& st = *fp8_;
  const int margin = st.recipe.margin;
  const float* wq = st.wq.data() + block * st.wq_block + st.wq_offset[lin];
  const float amax_dy = ops::fp8_amax(rows * out, dy);
  const int slot = block * ops::kFp8SlotsPerBlock + 2 * lin + 1;  // Fp8Slot: dy of linear lin
  const float s_dy = fp8_train_pass_ ? ops::fp8_delayed_scale(st.history, slot, amax_dy, Fp8Format::E5M2, margin)
                                     : ops::fp8_scale_for_amax(amax_dy, Fp8Format::E5M2, margin);
  float* G = grads.data();
  ops::linear_backward_fp8(rows, in, out, xq, wq, dy, s_dy, dy, dx, G + w_off, G + b_off);
}

}  // namespace kat
