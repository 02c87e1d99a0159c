// The attention core of ops/cuda/attention.h computed by cuDNN's fused attention: the cudnn-frontend
// SDPA graphs (forward in training mode, which also writes the softmax statistics, and backward),
// bf16 storage, fp32 softmax and accumulation, scale 1/sqrt(hd), no mask, no dropout. Chosen at run
// time (ops/attention_backend.h); KatModelCuda falls back to ours wherever these calls refuse.
//
// Same tensors as ours, in place, with no copies: cuDNN's logical (B, H, N, hd) tensors are described
// by strides over the engine's own layout:
//   q, k, v   = qkv + {0, D, 2D} elements, strides (N*3D, hd, 3D, 1)   [qkv: (B, N, 3D) rows q|k|v]
//   out, dout : strides (N*D, hd, D, 1)                                [(B, N, D), head h at h*hd]
//   dq,dk,dv  = dqkv + {0, D, 2D}, strides as q, k, v                  [dqkv: (B, N, 3D), overwritten]
//   lse       : (B, H, N, 1) fp32, strides (H*N, N, 1, 1)              [(B, H, N), as ours]
// cuDNN's statistics tensor is the natural-log log-sum-exp of each row of the scaled scores, which is
// what our kernels save, so a forward of one and a backward of the other agree (tested).
// Determinism: the backward is built with set_deterministic_algorithm(true). On Hopper that makes
// cuDNN keep dP/dS in its workspace (bf16, B*H*pad(N)^2 elements) and compute dQ with a plain GEMM
// instead of accumulating it with fp32 atomics: bitwise reproducible, at the cost of that workspace
// (~400 MB for kat_tiny at batch 1024) and one more pass over dS (ours does the same). The forward
// has no atomics.
// Graphs are built once per (device, B, N, H, hd, dtype, forward/backward), on first use, and cached
// for the life of the process (building takes milliseconds to tens of milliseconds), as are refusals.
// The workspace is the caller's: cudnn_attention_workspace_bytes says how much.
// Without cuDNN in the build (KAT_CUDNN off) every function is here and says so: available() is false.
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>

#include "kat/core/dtype.h"
#include "ops/cuda/attention.h"
#include "ops/cuda/stream.h"

namespace kat::cuda {

// The oldest cuDNN these graphs are used with (9.0.0: the v9 API; older 9.x refusals of the SDPA
// graph itself come from the frontend, per shape, with its reason).
constexpr int kCudnnMinVersion = 90000;

// True when this build has cuDNN, the loaded library is >= kCudnnMinVersion and a handle can be made
// on the current device; else false and *why says which is missing.
bool cudnn_attention_available(std::string* why = nullptr);
// "cuDNN 9.13.0 (CUDA runtime 13.0) with headers 9.28.1, cudnn-frontend 1.32.0", or why there is none.
std::string cudnn_attention_version();

// Whether cuDNN runs this problem on the current device: builds and caches the forward graph (and,
// with `backward`, the backward graph). false + *why when cuDNN is unavailable or refuses (fp32
// storage, a head dim it has no kernel for, ...). Shapes must pass attention_check_shape.
bool cudnn_attention_supported(int64_t B, int64_t N, int64_t D, int64_t H, DType dtype, bool backward,
                               std::string* why = nullptr);
// Device workspace the graphs of a supported problem need (forward, and the larger of the two with
// `backward`). A kat::Error when not supported.
std::size_t cudnn_attention_workspace_bytes(int64_t B, int64_t N, int64_t D, int64_t H, DType dtype,
                                            bool backward);

// attention_forward / attention_backward (ops/cuda/attention.h) through cuDNN, enqueued on `stream`.
// Return false, enqueuing nothing, when cuDNN refuses the problem or needs more than workspace_bytes
// of workspace (*why says which): the caller then runs ours. Argument errors and failed launches are
// kat::Errors. Pointers must be 16-byte aligned (cudaMalloc'd or the model's 256-byte aligned arena;
// D % 8 == 0 keeps k and v aligned).
bool cudnn_attention_forward(const AttentionForwardArgs& a, void* workspace, std::size_t workspace_bytes,
                             cudaStream_t stream, std::string* why = nullptr);
// Workspace: a.workspace, workspace_bytes of it.
bool cudnn_attention_backward(const AttentionBackwardArgs& a, std::size_t workspace_bytes, cudaStream_t stream,
                              std::string* why = nullptr);

// Prints `line` on stderr the first time it is given (the model's notes on falling back to ours,
// and the one line saying cuDNN runs the attention), so a training loop does not repeat it.
void cudnn_attention_note(const std::string& line);

}  // namespace kat::cuda
