// Mimetic attention init of the public KAT code (init = "timm"). See mimetic_init.cpp.
#pragma once
#include "kat/core/rng.h"

namespace kat {

// qkv_w: (3D, D) rows [q; k; v]; proj_w: (D, D). Overwrites both.
void mimetic_attention_init(int D, int heads, float* qkv_w, float* proj_w, Rng& rng);

}  // namespace kat
