// Deterministic column sums on CUDA: db (N, fp32) += the sums over the M rows of dy (M, N), for the
// bias gradients of the linear layers (ops/cuda/gemm.h) and GR-KAN's fused bias gradient fallback
// (ops/cuda/grkan.h). Two stages with a fixed summation order, no atomics, no cuBLAS (so the GR-KAN
// Python module links without it). dy: F32 or BF16 (ops/cuda/stream.h conventions), or F16 (the
// GR-KAN op's fp16).
#pragma once
#include <cstddef>
#include <cstdint>

#include "ops/cuda/stream.h"

namespace kat::cuda {

// Bytes of workspace column_sum_accumulate needs for (M, N) (4-byte alignment suffices).
std::size_t column_sum_workspace_bytes(int64_t M, int64_t N);
// db (N, fp32) += sum over the M rows of dy (M, N, storage st). Fixed summation order that depends
// only on (M, N): bitwise reproducible.
void column_sum_accumulate(int64_t M, int64_t N, DType st, const void* dy, float* db, void* workspace,
                           cudaStream_t stream);

}  // namespace kat::cuda
