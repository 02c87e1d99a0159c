// Multi-head self-attention core on the CPU (the reference: saves the probabilities).
// Contract and shape check: ops/attention.h; CUDA (flash-style, saves lse): ops/cuda/attention.h.
#pragma once
#include <cstdint>

#include "ops/attention.h"

namespace kat::ops {

// qkv: (B, N, 3D) with rows [q | k | v], each split into H heads of hd = D/H consecutive channels.
// out: (B, N, D). probs: (B, H, N, N) softmax(q k^T / sqrt(hd)), saved.
template <typename T>
void attention_forward(int64_t B, int64_t N, int64_t D, int64_t H, const T* qkv, T* out, T* probs);
// dqkv (B, N, 3D) overwritten.
template <typename T>
void attention_backward(int64_t B, int64_t N, int64_t D, int64_t H, const T* qkv, const T* probs, const T* dout,
                        T* dqkv);

}  // namespace kat::ops
