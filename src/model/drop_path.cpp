#include "kat/model/drop_path.h"

namespace kat {

void draw_drop_path(const ModelConfig& cfg, int64_t B, Rng& rng, float* scales) {
  for (int i = 0; i < cfg.depth; ++i) {
    const double rate = cfg.depth > 1 ? cfg.drop_path_rate * i / (cfg.depth - 1) : cfg.drop_path_rate;
    float* attn = scales + int64_t(i) * 2 * B;
    float* ffn = attn + B;
    for (int64_t b = 0; b < B; ++b) {
      attn[b] = ffn[b] = 1.0f;
      if (rate > 0) {
        const float keep = float(1.0 / (1.0 - rate));
        attn[b] = rng.uniform() < rate ? 0.0f : keep;
        ffn[b] = rng.uniform() < rate ? 0.0f : keep;
      }
    }
  }
}

}  // namespace kat
