// Every CPU op of the transformer (the reference backend and the CPU production path), one header
// per op family under ops/cpu/ (the CUDA versions under ops/cuda/ carry the same file names):
//   gemm.h           gemm, linear_forward / linear_backward
//   layernorm.h      layernorm_forward / layernorm_backward
//   attention.h      attention_forward / attention_backward
//   elementwise.h    gelu_forward / gelu_backward, scale_rows
//   cross_entropy.h  softmax_xent
//   embed.h          im2col_patches
//   grkan.h          grkan_forward / grkan_backward (contract: ops/grkan.h)
//   optim.h          adamw_step, ema_update, clip_grad_norm over flat arrays
//   fp8.h            fp8_amax, fp8_quantize / dequantize / fake_quantize, linear_forward_fp8 /
//                    linear_backward_fp8 (the FP8 recipe's reference, ops/fp8.h)
// Conventions of all of them: ops/cpu/gemm.h.
#pragma once
#include "ops/cpu/attention.h"
#include "ops/cpu/cross_entropy.h"
#include "ops/cpu/elementwise.h"
#include "ops/cpu/embed.h"
#include "ops/cpu/fp8.h"
#include "ops/cpu/gemm.h"
#include "ops/cpu/grkan.h"
#include "ops/cpu/layernorm.h"
#include "ops/cpu/optim.h"
