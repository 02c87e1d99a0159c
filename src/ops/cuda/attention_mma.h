// Tensor-core (mma.sync) attention core for bf16 storage; internal to attention.cu, which
// checks shapes and dispatches. See attention_mma.cu for the design.
#pragma once
#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>

namespace kat::cuda {

// Head dims with a tensor-core path (multiples of 16 up to 64).
bool attention_mma_supported(int64_t hd);

// qkv, out: bf16, 16-byte aligned rows. lse: (B, H, N) fp32.
void attention_mma_forward(int64_t B, int64_t N, int64_t D, int64_t H, const void* qkv, void* out, float* lse,
                           cudaStream_t stream);

// dvec: B*H*N fp32 workspace (row terms Dv_i); ds_buf: attention_mma_ds_bytes(B, N, H) of
// workspace for dS^T (stored by the dk/dv kernel, read by the dq kernel). dqkv overwritten.
void attention_mma_backward(int64_t B, int64_t N, int64_t D, int64_t H, const void* qkv, const void* out,
                            const float* lse, const void* dout, void* dqkv, float* dvec, void* ds_buf,
                            cudaStream_t stream);
// bf16 dS^T of every (image, head): N keys x pad16(N) queries.
inline std::size_t attention_mma_ds_bytes(int64_t B, int64_t N, int64_t H) {
  const int64_t np = (N + 15) / 16 * 16;
  return std::size_t(B * H * N * np) * 2;
}

}  // namespace kat::cuda
