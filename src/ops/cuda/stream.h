// What every public CUDA op header (ops/cuda/*.h) needs without pulling in a CUDA header: the
// cudaStream_t handle type and the element type kat::DType.
//
// Conventions of the CUDA ops (as on the CPU, ops/cpu/gemm.h, plus):
//  - Activation tensors (x, y, dy, dx, logits, ...) are device memory of DType element type (F32 or
//    BF16); parameters (gamma, beta, rational coefficients), saved statistics (mean, rstd, lse),
//    targets, per-row losses, optimizer state and drop-path scales are always fp32. All arithmetic
//    is fp32; a bf16 result is the fp32 value rounded once (to nearest even).
//  - Input gradients are OVERWRITTEN unless the argument is named `dx_acc` (then +=); parameter
//    gradients are ACCUMULATED (+=).
//  - Every reduction runs in a fixed order that depends only on the shape, on whether the pointers
//    allow 16-byte access, and on the device's multiprocessor count: results are bitwise identical
//    across runs. No float atomics anywhere.
//  - Everything is enqueued on `stream` (nothing synchronises). Most kernels use programmatic
//    dependent launch (ops/cuda/launch.cuh); stream order holds as usual.
//  - 16-byte vector access is used when every pointer of the call is 16-byte aligned and the row
//    width is a multiple of the vector (8 bf16 / 4 fp32); otherwise a scalar path computes the
//    same thing.
//  - Bad arguments throw kat::Error; CUDA failures std::runtime_error (KAT_CUDA_CHECK).
//    Zero rows / zero elements is a no-op.
#pragma once
#include "kat/core/dtype.h"

// Same declaration as CUDA's driver_types.h, so includers need no CUDA header.
struct CUstream_st;
typedef struct CUstream_st* cudaStream_t;
