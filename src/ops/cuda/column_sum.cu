// Deterministic column sums on CUDA (the bias gradients of the linear layers, and of the layer
// feeding a GR-KAN). Contract: ops/cuda/column_sum.h.
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <algorithm>
#include <cstdint>
#include <type_traits>

#include "kat/core/error.h"
#include "ops/cuda/column_sum.h"
#include "ops/cuda/cuda_check.h"
#include "ops/cuda/launch.cuh"
#include "ops/cuda/vec_io.cuh"
#include "ops/gemm.h"  // check_column_sum_shape

namespace kat::cuda {

namespace {

// Column sums db[c] += sum_r dy[r, c] (bias gradients), deterministic, two stages:
// Stage 1: block = 32 column lanes x 8 row lanes over one chunk of kRowsPerChunk rows; a thread owns
// VEC consecutive columns (one 16-byte load per row: 8 bf16 / 4 fp32; VEC = 1 when N or the
// pointer does not allow it), sums its rows in order (fp32), then the 8 row lanes are added in
// order through shared memory: partial[chunk][col].
// Stage 2: block = 32 columns x 8 chunk lanes; each thread sums chunks lane, lane + 8, ... in order,
// then the 8 lanes in order; db[col] += total.
// (Session 1 used scalar 2-byte loads in stage 1 and one thread per column looping over all 99
// 512-row chunks in stage 2 on a handful of blocks; stage 2 took as long as stage 1.)
constexpr int kColLanes = 32, kRowLanes = 8, kRowsPerChunk = 256;

template <typename T, int VEC>
__global__ void __launch_bounds__(kColLanes* kRowLanes)
    colsum_stage1(int64_t M, int64_t N, const T* __restrict__ dy, float* __restrict__ partial) {
  __shared__ float red[kRowLanes][kColLanes * VEC];
  const int64_t c0 = (int64_t(blockIdx.x) * kColLanes + threadIdx.x) * VEC;
  const int64_t r0 = int64_t(blockIdx.y) * kRowsPerChunk;
  const int64_t r1 = std::min<int64_t>(M, r0 + kRowsPerChunk);
  float s[VEC];
#pragma unroll
  for (int e = 0; e < VEC; ++e) s[e] = 0.f;
  if (c0 < N) {
#pragma unroll 4
    for (int64_t r = r0 + threadIdx.y; r < r1; r += kRowLanes) {
      const T* row = dy + r * N + c0;
      if constexpr (VEC == 1) {
        s[0] += float(row[0]);
      } else if constexpr (sizeof(T) == 2) {  // 8 bf16 or 8 fp16
        const uint4 v = __ldg(reinterpret_cast<const uint4*>(row));
        const uint32_t w[4] = {v.x, v.y, v.z, v.w};
#pragma unroll
        for (int i = 0; i < 4; ++i) {
          if constexpr (std::is_same_v<T, __half>) {
            s[2 * i] += vecio::f16_lo(w[i]);
            s[2 * i + 1] += vecio::f16_hi(w[i]);
          } else {
            s[2 * i] += __uint_as_float(w[i] << 16);
            s[2 * i + 1] += __uint_as_float(w[i] & 0xffff0000u);
          }
        }
      } else {  // 4 fp32
        const float4 v = __ldg(reinterpret_cast<const float4*>(row));
        s[0] += v.x, s[1] += v.y, s[2] += v.z, s[3] += v.w;
      }
    }
  }
#pragma unroll
  for (int e = 0; e < VEC; ++e) red[threadIdx.y][threadIdx.x * VEC + e] = s[e];
  __syncthreads();
  // Thread (x, y) finalises columns x + 32 k of the block's 32 VEC columns, k = y, y + 8, ...
  const int nb = kColLanes * VEC;
  for (int j = threadIdx.y * kColLanes + threadIdx.x; j < nb; j += kColLanes * kRowLanes) {
    const int64_t col = int64_t(blockIdx.x) * nb + j;
    if (col >= N) continue;
    float t = red[0][j];
#pragma unroll
    for (int l = 1; l < kRowLanes; ++l) t += red[l][j];
    partial[int64_t(blockIdx.y) * N + col] = t;
  }
}

__global__ void __launch_bounds__(kColLanes* kRowLanes)
    colsum_stage2(int64_t chunks, int64_t N, const float* __restrict__ partial, float* __restrict__ db) {
  __shared__ float red[kRowLanes][kColLanes];
  const int64_t col = int64_t(blockIdx.x) * kColLanes + threadIdx.x;
  float t = 0.f;
  if (col < N)
    for (int64_t c = threadIdx.y; c < chunks; c += kRowLanes) t += partial[c * N + col];
  red[threadIdx.y][threadIdx.x] = t;
  __syncthreads();
  if (threadIdx.y == 0 && col < N) {
    float u = red[0][threadIdx.x];
#pragma unroll
    for (int l = 1; l < kRowLanes; ++l) u += red[l][threadIdx.x];
    db[col] += u;
  }
}

int64_t colsum_chunks(int64_t M) { return (M + kRowsPerChunk - 1) / kRowsPerChunk; }

}  // namespace

std::size_t column_sum_workspace_bytes(int64_t M, int64_t N) {
  return std::size_t(std::max<int64_t>(colsum_chunks(M), 1) * std::max<int64_t>(N, 1)) * sizeof(float);
}

void column_sum_accumulate(int64_t M, int64_t N, DType st, const void* dy, float* db, void* workspace,
                           cudaStream_t stream) {
  kat::ops::check_column_sum_shape(M, N, "column_sum_accumulate");
  KAT_CHECK(st == DType::F32 || st == DType::BF16 || st == DType::F16,
            "column_sum_accumulate: unknown element type");
  if (M == 0 || N == 0) return;
  const int64_t chunks = colsum_chunks(M);
  KAT_CHECK(chunks < 65536, "column_sum_accumulate: too many rows (", M, ")");
  float* partial = static_cast<float*>(workspace);
  const dim3 block(kColLanes, kRowLanes);
  // 16-byte loads when every row start is 16-byte aligned.
  const bool vec_ok = (reinterpret_cast<uintptr_t>(dy) % 16 == 0) && (N * int64_t(dtype_size(st))) % 16 == 0;
  auto grid1 = [&](int vec) {
    return dim3(unsigned((N + int64_t(kColLanes) * vec - 1) / (int64_t(kColLanes) * vec)), unsigned(chunks));
  };
  if (st == DType::F32) {
    const auto* p = static_cast<const float*>(dy);
    if (vec_ok)
      colsum_stage1<float, 4><<<grid1(4), block, 0, stream>>>(M, N, p, partial);
    else
      colsum_stage1<float, 1><<<grid1(1), block, 0, stream>>>(M, N, p, partial);
  } else if (st == DType::BF16) {
    const auto* p = static_cast<const __nv_bfloat16*>(dy);
    if (vec_ok)
      colsum_stage1<__nv_bfloat16, 8><<<grid1(8), block, 0, stream>>>(M, N, p, partial);
    else
      colsum_stage1<__nv_bfloat16, 1><<<grid1(1), block, 0, stream>>>(M, N, p, partial);
  } else {  // F16 (GR-KAN's dx column sums on fp16 tensors)
    const auto* p = static_cast<const __half*>(dy);
    if (vec_ok)
      colsum_stage1<__half, 8><<<grid1(8), block, 0, stream>>>(M, N, p, partial);
    else
      colsum_stage1<__half, 1><<<grid1(1), block, 0, stream>>>(M, N, p, partial);
  }
  KAT_CUDA_CHECK_LAUNCH();
  colsum_stage2<<<unsigned((N + kColLanes - 1) / kColLanes), block, 0, stream>>>(chunks, N, partial, db);
  KAT_CUDA_CHECK_LAUNCH();
}

}  // namespace kat::cuda
