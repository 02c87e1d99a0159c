// Flash-style attention core for short sequences (see attention.h).
#include <cuda_bf16.h>

#include <cmath>

#include "kat/core/error.h"
#include "ops/cuda/attention.h"
#include "ops/cuda/attention_mma.h"
#include "ops/cuda/cuda_check.h"
#include "ops/cuda/vec_io.cuh"

namespace kat::cuda {

namespace {
using vecio::ld_f;
using vecio::st_f;

constexpr int kTpr = 4;                 // threads per row (each owns channels c = d*4 + part)
constexpr int kRows = 64;               // rows (queries or keys) per block
constexpr int kThreads = kRows * kTpr;  // 256

// Sum over the 4 parts of a row; every part gets the same value ((s0+s1)+(s2+s3) up to commuting).
__device__ __forceinline__ float row_sum(float s) {
  s += __shfl_xor_sync(0xffffffffu, s, 1);
  s += __shfl_xor_sync(0xffffffffu, s, 2);
  return s;
}

// Channel owned by (register slot d, part): VEC = 4 -> 4 consecutive channels per slot group
// ((d/4)*4 + part)*4 + d%4 (16-byte shared-memory loads); VEC = 1 -> d*4 + part.
template <int VEC>
__device__ __forceinline__ int chan(int d, int part) {
  if constexpr (VEC == 4)
    return (((d >> 2) * kTpr + part) << 2) + (d & 3);
  else
    return d * kTpr + part;
}

// Partial dot product of x (this part's DH channels) with a shared-memory row.
template <int DH, int VEC>
__device__ __forceinline__ float dot_row(const float (&x)[DH], const float* row, int part) {
  float s = 0.f;
  if constexpr (VEC == 4) {
#pragma unroll
    for (int g = 0; g < DH / 4; ++g) {
      const float4 v = *reinterpret_cast<const float4*>(row + ((g * kTpr + part) << 2));
      s += x[4 * g] * v.x;
      s += x[4 * g + 1] * v.y;
      s += x[4 * g + 2] * v.z;
      s += x[4 * g + 3] * v.w;
    }
  } else {
#pragma unroll
    for (int d = 0; d < DH; ++d) s += x[d] * row[d * kTpr + part];
  }
  return s;
}

// acc = acc * c + a * row (c = 1: plain axpy).
template <int DH, int VEC>
__device__ __forceinline__ void axpy_row(float (&acc)[DH], float c, float a, const float* row, int part) {
  if constexpr (VEC == 4) {
#pragma unroll
    for (int g = 0; g < DH / 4; ++g) {
      const float4 v = *reinterpret_cast<const float4*>(row + ((g * kTpr + part) << 2));
      acc[4 * g] = acc[4 * g] * c + a * v.x;
      acc[4 * g + 1] = acc[4 * g + 1] * c + a * v.y;
      acc[4 * g + 2] = acc[4 * g + 2] * c + a * v.z;
      acc[4 * g + 3] = acc[4 * g + 3] * c + a * v.w;
    }
  } else {
#pragma unroll
    for (int d = 0; d < DH; ++d) acc[d] = acc[d] * c + a * row[d * kTpr + part];
  }
}

// Stage rows [0, N) of one head's section `sec` (0 q, 1 k, 2 v) of qkv into smem (N x HD fp32).
template <typename T, int HD>
__device__ __forceinline__ void stage(const T* base, int64_t ld_row, int N, float* dst) {
  for (int idx = threadIdx.x; idx < N * HD; idx += blockDim.x) {
    const int j = idx / HD, c = idx - j * HD;
    dst[idx] = ld_f(base + int64_t(j) * ld_row + c);
  }
}

// Prologue of the forward and dq kernels: K and V of this block's (image, head) = (blockIdx.z,
// blockIdx.y) staged as fp32 in shared memory (Ks, Vs: N x HD each; ends with a barrier). Returns
// the (image, head) base pointer into qkv (its q columns; k at + D, v at + 2 D).
template <typename T, int HD>
__device__ __forceinline__ const T* stage_kv(const T* __restrict__ qkv, int N, int D, float* smem, float*& Ks,
                                             float*& Vs) {
  Ks = smem;
  Vs = smem + N * HD;
  const int64_t ld3 = 3 * int64_t(D);
  const T* base = qkv + int64_t(blockIdx.z) * N * ld3 + blockIdx.y * HD;
  stage<T, HD>(base + D, ld3, N, Ks);
  stage<T, HD>(base + 2 * D, ld3, N, Vs);
  __syncthreads();
  return base;
}

template <typename T, int DH, int VEC>
__global__ void __launch_bounds__(kThreads)
    attn_fwd_kernel(int N, int D, int H, float scale, const T* __restrict__ qkv, T* __restrict__ out,
                    float* __restrict__ lse) {
  constexpr int HD = DH * kTpr;
  extern __shared__ __align__(16) float smem[];
  float *Ks, *Vs;
  const T* base = stage_kv<T, HD>(qkv, N, D, smem, Ks, Vs);
  const int b = blockIdx.z, h = blockIdx.y;
  const int64_t ld3 = 3 * int64_t(D);
  const int r = threadIdx.x / kTpr, part = threadIdx.x % kTpr;
  const int i = blockIdx.x * kRows + r;
  const bool valid = i < N;
  float q[DH], o[DH];
#pragma unroll
  for (int d = 0; d < DH; ++d) {
    q[d] = valid ? ld_f(base + int64_t(i) * ld3 + chan<VEC>(d, part)) : 0.f;
    o[d] = 0.f;
  }
  // Online softmax over chunks of 4 keys (one rescale per chunk).
  float m = -INFINITY, l = 0.f;
  int j = 0;
  for (; j + 4 <= N; j += 4) {
    float s[4];
#pragma unroll
    for (int t = 0; t < 4; ++t) s[t] = row_sum(dot_row<DH, VEC>(q, Ks + (j + t) * HD, part)) * scale;
    const float mn = fmaxf(m, fmaxf(fmaxf(s[0], s[1]), fmaxf(s[2], s[3])));
    const float corr = expf(m - mn);
    float p[4];
#pragma unroll
    for (int t = 0; t < 4; ++t) p[t] = expf(s[t] - mn);
    l = l * corr + ((p[0] + p[1]) + (p[2] + p[3]));
    axpy_row<DH, VEC>(o, corr, p[0], Vs + j * HD, part);
#pragma unroll
    for (int t = 1; t < 4; ++t) axpy_row<DH, VEC>(o, 1.f, p[t], Vs + (j + t) * HD, part);
    m = mn;
  }
  for (; j < N; ++j) {
    const float s = row_sum(dot_row<DH, VEC>(q, Ks + j * HD, part)) * scale;
    const float mn = fmaxf(m, s);
    const float corr = expf(m - mn), p = expf(s - mn);
    l = l * corr + p;
    axpy_row<DH, VEC>(o, corr, p, Vs + j * HD, part);
    m = mn;
  }
  if (!valid) return;
  const float inv = 1.f / l;
  T* orow = out + (int64_t(b) * N + i) * D + h * HD;
#pragma unroll
  for (int d = 0; d < DH; ++d) st_f(orow + chan<VEC>(d, part), o[d] * inv);
  if (part == 0) lse[(int64_t(b) * H + h) * N + i] = m + logf(l);
}

// dq and the row terms Dv_i = dout_i . out_i.
template <typename T, int DH, int VEC>
__global__ void __launch_bounds__(kThreads)
    attn_bwd_dq_kernel(int N, int D, int H, float scale, const T* __restrict__ qkv, const T* __restrict__ out,
                       const float* __restrict__ lse, const T* __restrict__ dout, T* __restrict__ dqkv,
                       float* __restrict__ dvec) {
  constexpr int HD = DH * kTpr;
  extern __shared__ __align__(16) float smem[];
  float *Ks, *Vs;
  const T* base = stage_kv<T, HD>(qkv, N, D, smem, Ks, Vs);
  const int b = blockIdx.z, h = blockIdx.y;
  const int64_t ld3 = 3 * int64_t(D);
  const int r = threadIdx.x / kTpr, part = threadIdx.x % kTpr;
  const int i = blockIdx.x * kRows + r;
  const bool valid = i < N;
  const int64_t orow = (int64_t(b) * N + (valid ? i : 0)) * D + h * HD;
  float q[DH], g[DH], dq[DH];
  float dv = 0.f;
#pragma unroll
  for (int d = 0; d < DH; ++d) {
    const int c = chan<VEC>(d, part);
    q[d] = valid ? ld_f(base + int64_t(i) * ld3 + c) : 0.f;
    g[d] = valid ? ld_f(dout + orow + c) : 0.f;
    dv += valid ? g[d] * ld_f(out + orow + c) : 0.f;
    dq[d] = 0.f;
  }
  dv = row_sum(dv);
  const float li = valid ? lse[(int64_t(b) * H + h) * N + i] : 0.f;
  for (int j = 0; j < N; ++j) {
    const float s = row_sum(dot_row<DH, VEC>(q, Ks + j * HD, part)) * scale;
    const float dp = row_sum(dot_row<DH, VEC>(g, Vs + j * HD, part));
    const float p = expf(s - li);
    axpy_row<DH, VEC>(dq, 1.f, p * (dp - dv), Ks + j * HD, part);
  }
  if (!valid) return;
  T* drow = dqkv + (int64_t(b) * N + i) * ld3 + h * HD;
#pragma unroll
  for (int d = 0; d < DH; ++d) st_f(drow + chan<VEC>(d, part), dq[d] * scale);
  if (part == 0) dvec[(int64_t(b) * H + h) * N + i] = dv;
}

// dk, dv: one thread group per key j, Q and dout of the (image, head) in smem.
template <typename T, int DH, int VEC>
__global__ void __launch_bounds__(kThreads)
    attn_bwd_dkv_kernel(int N, int D, int H, float scale, const T* __restrict__ qkv, const float* __restrict__ lse,
                        const T* __restrict__ dout, const float* __restrict__ dvec, T* __restrict__ dqkv) {
  constexpr int HD = DH * kTpr;
  extern __shared__ __align__(16) float smem[];
  float* Qs = smem;
  float* Gs = smem + N * HD;
  float* Ls = smem + 2 * N * HD;
  float* Ds = Ls + N;
  const int b = blockIdx.z, h = blockIdx.y;
  const int64_t ld3 = 3 * int64_t(D);
  const T* base = qkv + int64_t(b) * N * ld3 + h * HD;
  stage<T, HD>(base, ld3, N, Qs);
  stage<T, HD>(dout + int64_t(b) * N * D + h * HD, D, N, Gs);
  const int64_t rowbase = (int64_t(b) * H + h) * N;
  for (int idx = threadIdx.x; idx < N; idx += blockDim.x) {
    Ls[idx] = lse[rowbase + idx];
    Ds[idx] = dvec[rowbase + idx];
  }
  __syncthreads();
  const int r = threadIdx.x / kTpr, part = threadIdx.x % kTpr;
  const int j = blockIdx.x * kRows + r;
  const bool valid = j < N;
  float k[DH], v[DH], dk[DH], dv[DH];
#pragma unroll
  for (int d = 0; d < DH; ++d) {
    const int c = chan<VEC>(d, part);
    k[d] = valid ? ld_f(base + int64_t(j) * ld3 + D + c) : 0.f;
    v[d] = valid ? ld_f(base + int64_t(j) * ld3 + 2 * D + c) : 0.f;
    dk[d] = dv[d] = 0.f;
  }
  for (int i = 0; i < N; ++i) {
    const float* qi = Qs + i * HD;
    const float* gi = Gs + i * HD;
    const float s = row_sum(dot_row<DH, VEC>(k, qi, part)) * scale;
    const float dp = row_sum(dot_row<DH, VEC>(v, gi, part));
    const float p = expf(s - Ls[i]);
    axpy_row<DH, VEC>(dv, 1.f, p, gi, part);
    axpy_row<DH, VEC>(dk, 1.f, p * (dp - Ds[i]), qi, part);
  }
  if (!valid) return;
  T* drow = dqkv + (int64_t(b) * N + j) * ld3 + h * HD;
#pragma unroll
  for (int d = 0; d < DH; ++d) {
    const int c = chan<VEC>(d, part);
    st_f(drow + D + c, dk[d] * scale);
    st_f(drow + 2 * D + c, dv[d]);
  }
}

template <typename K>
void set_smem(K kernel, std::size_t bytes) {
  if (bytes > 48 * 1024)
    KAT_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, int(bytes)));
}

template <typename T, int DH, int VEC = (DH % 4 == 0 ? 4 : 1)>
void launch_fwd(int64_t B, int N, int D, int H, float scale, const void* qkv, void* out, float* lse,
                cudaStream_t s) {
  constexpr int HD = DH * kTpr;
  const std::size_t smem = std::size_t(2) * N * HD * sizeof(float);
  set_smem(attn_fwd_kernel<T, DH, VEC>, smem);
  const dim3 grid((N + kRows - 1) / kRows, H, unsigned(B));
  attn_fwd_kernel<T, DH, VEC>
      <<<grid, kThreads, smem, s>>>(N, D, H, scale, static_cast<const T*>(qkv), static_cast<T*>(out), lse);
  KAT_CUDA_CHECK_LAUNCH();
}

template <typename T, int DH, int VEC = (DH % 4 == 0 ? 4 : 1)>
void launch_bwd(int64_t B, int N, int D, int H, float scale, const void* qkv, const void* out, const float* lse,
                const void* dout, void* dqkv, float* dvec, cudaStream_t s) {
  constexpr int HD = DH * kTpr;
  const dim3 grid((N + kRows - 1) / kRows, H, unsigned(B));
  const std::size_t smem1 = std::size_t(2) * N * HD * sizeof(float);
  set_smem(attn_bwd_dq_kernel<T, DH, VEC>, smem1);
  attn_bwd_dq_kernel<T, DH, VEC>
      <<<grid, kThreads, smem1, s>>>(N, D, H, scale, static_cast<const T*>(qkv), static_cast<const T*>(out), lse,
                                     static_cast<const T*>(dout), static_cast<T*>(dqkv), dvec);
  KAT_CUDA_CHECK_LAUNCH();
  const std::size_t smem2 = (std::size_t(2) * N * HD + 2 * N) * sizeof(float);
  set_smem(attn_bwd_dkv_kernel<T, DH, VEC>, smem2);
  attn_bwd_dkv_kernel<T, DH, VEC><<<grid, kThreads, smem2, s>>>(
      N, D, H, scale, static_cast<const T*>(qkv), lse, static_cast<const T*>(dout), dvec, static_cast<T*>(dqkv));
  KAT_CUDA_CHECK_LAUNCH();
}

bool g_force_simt = false;

bool use_tc(DType st, int hd) { return st == DType::BF16 && attention_mma_supported(hd) && !g_force_simt; }

#define KAT_ATTN_DISPATCH(HDV, CALL)                                    \
  switch (HDV) {                                                        \
    case 16: CALL(4); break;                                            \
    case 24: CALL(6); break;                                            \
    case 32: CALL(8); break;                                            \
    case 40: CALL(10); break;                                           \
    case 48: CALL(12); break;                                           \
    case 56: CALL(14); break;                                           \
    case 64: CALL(16); break;                                           \
    default: KAT_CHECK(false, "attention: unsupported head dim ", HDV); \
  }

}  // namespace

void attention_check_shape(int64_t N, int64_t D, int64_t H) {
  kat::ops::check_attention_shape(0, N, D, H, "attention (CUDA)");
  KAT_CHECK(N <= 256, "attention (CUDA): N = ", N, " tokens, supported 1..256");
  const int64_t hd = D / H;
  KAT_CHECK(hd >= 16 && hd <= 64 && hd % 8 == 0, "attention (CUDA): head dim ", hd,
            " unsupported (16..64, multiple of 8)");
}

void attention_forward(const AttentionForwardArgs& a, cudaStream_t stream) {
  const int64_t B = a.B, N = a.N, D = a.D, H = a.H;
  const DType st = a.dtype;
  const void* qkv = a.qkv;
  void* out = a.out;
  float* lse = a.lse;
  KAT_CHECK(B >= 0, "attention_forward (CUDA): B must be >= 0, got ", B);
  attention_check_shape(N, D, H);
  if (B == 0) return;
  const int hd = int(D / H);
  const float scale = 1.0f / std::sqrt(float(hd));
  if (use_tc(st, hd)) {
    attention_mma_forward(B, N, D, H, qkv, out, lse, stream);
    return;
  }
#define KAT_FWD(DH)                                                                 \
  if (st == DType::F32)                                                             \
    launch_fwd<float, DH>(B, int(N), int(D), int(H), scale, qkv, out, lse, stream); \
  else                                                                              \
    launch_fwd<__nv_bfloat16, DH>(B, int(N), int(D), int(H), scale, qkv, out, lse, stream);
  KAT_ATTN_DISPATCH(hd, KAT_FWD)
#undef KAT_FWD
}

// dvec (B*H*N fp32), then (tensor-core path) dS^T for the dq-from-dS kernel, 256-byte aligned.
static std::size_t dvec_bytes_aligned(int64_t B, int64_t N, int64_t H) {
  return (std::size_t(B * N * H) * sizeof(float) + 255) / 256 * 256;
}

std::size_t attention_backward_workspace_bytes(int64_t B, int64_t N, int64_t H) {
  return dvec_bytes_aligned(B, N, H) + attention_mma_ds_bytes(B, N, H);
}

void attention_backward(const AttentionBackwardArgs& a, cudaStream_t stream) {
  const int64_t B = a.B, N = a.N, D = a.D, H = a.H;
  const DType st = a.dtype;
  const void *qkv = a.qkv, *out = a.out, *dout = a.dout;
  const float* lse = a.lse;
  void *dqkv = a.dqkv, *workspace = a.workspace;
  KAT_CHECK(B >= 0, "attention_backward (CUDA): B must be >= 0, got ", B);
  attention_check_shape(N, D, H);
  if (B == 0) return;
  const int hd = int(D / H);
  const float scale = 1.0f / std::sqrt(float(hd));
  float* dvec = static_cast<float*>(workspace);
  if (use_tc(st, hd)) {
    void* ds_buf = static_cast<char*>(workspace) + dvec_bytes_aligned(B, N, H);
    attention_mma_backward(B, N, D, H, qkv, out, lse, dout, dqkv, dvec, ds_buf, stream);
    return;
  }
#define KAT_BWD(DH)                                                                                   \
  if (st == DType::F32)                                                                               \
    launch_bwd<float, DH>(B, int(N), int(D), int(H), scale, qkv, out, lse, dout, dqkv, dvec, stream); \
  else                                                                                                \
    launch_bwd<__nv_bfloat16, DH>(B, int(N), int(D), int(H), scale, qkv, out, lse, dout, dqkv, dvec, stream);
  KAT_ATTN_DISPATCH(hd, KAT_BWD)
#undef KAT_BWD
}

void attention_force_simt(bool on) { g_force_simt = on; }

}  // namespace kat::cuda
