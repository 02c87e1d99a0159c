// LayerNorm over the last dim C, the op family's contract for both backends (CPU:
// ops/cpu/layernorm.h, CUDA: ops/cuda/layernorm.h; test: the OpHarness cases "layernorm_*" in
// tests/gpu/test_op_harness.cu, CPU gradients in tests/test_ops.cpp):
//   forward:  mean_r = Σ_c x_rc / C,  var_r = Σ_c (x_rc - mean_r)^2 / C  (two passes, biased),
//             rstd_r = 1 / sqrt(var_r + eps),  y_rc = (x_rc - mean_r) * rstd_r * gamma_c + beta_c;
//             mean, rstd (rows) are saved for the backward.
//   backward: dx_acc (rows, C) += dL/dx;  dgamma, dbeta (C) += (accumulated, like every parameter
//             gradient).
#pragma once
#include <cstdint>

#include "kat/core/error.h"

namespace kat::ops {

// Shape check shared by both backends (the CUDA op adds its row-width limit).
inline void check_layernorm_shape(int64_t rows, int64_t C, const char* where) {
  KAT_CHECK(rows >= 0, where, ": rows must be >= 0, got ", rows);
  KAT_CHECK(C >= 1, where, ": C must be >= 1, got ", C);
}

}  // namespace kat::ops
