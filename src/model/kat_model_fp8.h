// KatModel's FP8 state (enable_fp8; --precision fp8 on the CPU), complete here for the files that
// construct or destroy a KatModel (kat_model.cpp) and the one that uses it (kat_model_fp8.cpp).
#pragma once
#include <cstdint>
#include <vector>

#include "kat/model/kat_model.h"
#include "ops/fp8.h"

namespace kat {

struct KatModel::Fp8State {
  ops::Fp8Recipe recipe;
  ops::Fp8AmaxHistory history;  // (depth * kFp8SlotsPerBlock) rings of recipe.history passes
  // The blocks' weights as E4M3 values, written by every forward (current scaling: W's own amax)
  // and read by its backward: per block qkv (3D, D), proj (D, D), fc1 (Hd, D), fc2 (D, Hd).
  std::vector<float> wq;
  int64_t wq_block = 0;  // floats per block
  int64_t wq_offset[4] = {};
};

}  // namespace kat
