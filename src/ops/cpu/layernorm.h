// LayerNorm on the CPU. Contract and shape check: ops/layernorm.h; CUDA: ops/cuda/layernorm.h.
// Conventions: ops/cpu/gemm.h.
#pragma once
#include <cstdint>

#include "ops/layernorm.h"

namespace kat::ops {

// LayerNorm over the last dim C: y = (x - mean) * rstd * gamma + beta. mean, rstd: (rows), saved.
template <typename T>
void layernorm_forward(int64_t rows, int64_t C, T eps, const T* x, const T* gamma, const T* beta, T* y, T* mean,
                       T* rstd);
// dx_acc (rows, C) += dL/dx; dgamma, dbeta (C) +=.
template <typename T>
void layernorm_backward(int64_t rows, int64_t C, const T* x, const T* gamma, const T* mean, const T* rstd,
                        const T* dy, T* dx_acc, T* dgamma, T* dbeta);

}  // namespace kat::ops
