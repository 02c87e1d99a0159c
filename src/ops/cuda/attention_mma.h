// Tensor-core (mma.sync) attention core for bf16 storage; internal to attention_cuda.cu, which
// checks shapes and dispatches. See attention_mma.cu for the design.
#pragma once
#include <cuda_runtime.h>

#include <cstdint>

namespace kat::cuda {

// Head dims with a tensor-core path (multiples of 16 up to 64).
bool attention_mma_supported(int64_t hd);

// qkv, out: bf16, 16-byte aligned rows. lse: (B, H, N) fp32.
void attention_mma_forward(int64_t B, int64_t N, int64_t D, int64_t H, const void* qkv, void* out, float* lse,
                           cudaStream_t stream);

// dvec: B*H*N fp32 workspace (row terms Dv_i). dqkv overwritten.
void attention_mma_backward(int64_t B, int64_t N, int64_t D, int64_t H, const void* qkv, const void* out,
                            const float* lse, const void* dout, void* dqkv, float* dvec, cudaStream_t stream);

}  // namespace kat::cuda
