// Flash-style attention core for short sequences (see attention_cuda.h).
#include "ops/cuda/attention_cuda.h"

#include <cuda_bf16.h>
#include <mma.h>

#include <cstdlib>

#include <cmath>

#include "core/error.h"
#include "ops/cuda/cuda_check.h"

namespace kat::cuda {

namespace {

constexpr int kTpr = 4;                 // threads per row (each owns channels c = d*4 + part)
constexpr int kRows = 64;               // rows (queries or keys) per block
constexpr int kThreads = kRows * kTpr;  // 256

__device__ __forceinline__ float ld(const float* p) { return *p; }
__device__ __forceinline__ float ld(const __nv_bfloat16* p) { return __bfloat162float(*p); }
__device__ __forceinline__ void st(float* p, float v) { *p = v; }
__device__ __forceinline__ void st(__nv_bfloat16* p, float v) { *p = __float2bfloat16_rn(v); }

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
    dst[idx] = ld(base + int64_t(j) * ld_row + c);
  }
}

template <typename T, int DH, int VEC>
__global__ void __launch_bounds__(kThreads) attn_fwd_kernel(int N, int D, int H, float scale,
                                                            const T* __restrict__ qkv, T* __restrict__ out,
                                                            float* __restrict__ lse) {
  constexpr int HD = DH * kTpr;
  extern __shared__ __align__(16) float smem[];
  float* Ks = smem;
  float* Vs = smem + N * HD;
  const int b = blockIdx.z, h = blockIdx.y;
  const int64_t ld3 = 3 * int64_t(D);
  const T* base = qkv + int64_t(b) * N * ld3 + h * HD;
  stage<T, HD>(base + D, ld3, N, Ks);
  stage<T, HD>(base + 2 * D, ld3, N, Vs);
  __syncthreads();
  const int r = threadIdx.x / kTpr, part = threadIdx.x % kTpr;
  const int i = blockIdx.x * kRows + r;
  const bool valid = i < N;
  float q[DH], o[DH];
#pragma unroll
  for (int d = 0; d < DH; ++d) {
    q[d] = valid ? ld(base + int64_t(i) * ld3 + chan<VEC>(d, part)) : 0.f;
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
  for (int d = 0; d < DH; ++d) st(orow + chan<VEC>(d, part), o[d] * inv);
  if (part == 0) lse[(int64_t(b) * H + h) * N + i] = m + logf(l);
}

// dq and the row terms Dv_i = dout_i . out_i.
template <typename T, int DH, int VEC>
__global__ void __launch_bounds__(kThreads) attn_bwd_dq_kernel(int N, int D, int H, float scale,
                                                               const T* __restrict__ qkv, const T* __restrict__ out,
                                                               const float* __restrict__ lse,
                                                               const T* __restrict__ dout, T* __restrict__ dqkv,
                                                               float* __restrict__ dvec) {
  constexpr int HD = DH * kTpr;
  extern __shared__ __align__(16) float smem[];
  float* Ks = smem;
  float* Vs = smem + N * HD;
  const int b = blockIdx.z, h = blockIdx.y;
  const int64_t ld3 = 3 * int64_t(D);
  const T* base = qkv + int64_t(b) * N * ld3 + h * HD;
  stage<T, HD>(base + D, ld3, N, Ks);
  stage<T, HD>(base + 2 * D, ld3, N, Vs);
  __syncthreads();
  const int r = threadIdx.x / kTpr, part = threadIdx.x % kTpr;
  const int i = blockIdx.x * kRows + r;
  const bool valid = i < N;
  const int64_t orow = (int64_t(b) * N + (valid ? i : 0)) * D + h * HD;
  float q[DH], g[DH], dq[DH];
  float dv = 0.f;
#pragma unroll
  for (int d = 0; d < DH; ++d) {
    const int c = chan<VEC>(d, part);
    q[d] = valid ? ld(base + int64_t(i) * ld3 + c) : 0.f;
    g[d] = valid ? ld(dout + orow + c) : 0.f;
    dv += valid ? g[d] * ld(out + orow + c) : 0.f;
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
  for (int d = 0; d < DH; ++d) st(drow + chan<VEC>(d, part), dq[d] * scale);
  if (part == 0) dvec[(int64_t(b) * H + h) * N + i] = dv;
}

// dk, dv: one thread group per key j, Q and dout of the (image, head) in smem.
template <typename T, int DH, int VEC>
__global__ void __launch_bounds__(kThreads) attn_bwd_dkv_kernel(int N, int D, int H, float scale,
                                                                const T* __restrict__ qkv,
                                                                const float* __restrict__ lse,
                                                                const T* __restrict__ dout,
                                                                const float* __restrict__ dvec,
                                                                T* __restrict__ dqkv) {
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
    k[d] = valid ? ld(base + int64_t(j) * ld3 + D + c) : 0.f;
    v[d] = valid ? ld(base + int64_t(j) * ld3 + 2 * D + c) : 0.f;
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
    st(drow + D + c, dk[d] * scale);
    st(drow + 2 * D + c, dv[d]);
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
  attn_fwd_kernel<T, DH, VEC><<<grid, kThreads, smem, s>>>(N, D, H, scale, static_cast<const T*>(qkv),
                                                      static_cast<T*>(out), lse);
  KAT_CUDA_CHECK_LAUNCH();
}

template <typename T, int DH, int VEC = (DH % 4 == 0 ? 4 : 1)>
void launch_bwd(int64_t B, int N, int D, int H, float scale, const void* qkv, const void* out,
                const float* lse, const void* dout, void* dqkv, float* dvec, cudaStream_t s) {
  constexpr int HD = DH * kTpr;
  const dim3 grid((N + kRows - 1) / kRows, H, unsigned(B));
  const std::size_t smem1 = std::size_t(2) * N * HD * sizeof(float);
  set_smem(attn_bwd_dq_kernel<T, DH, VEC>, smem1);
  attn_bwd_dq_kernel<T, DH, VEC><<<grid, kThreads, smem1, s>>>(
      N, D, H, scale, static_cast<const T*>(qkv), static_cast<const T*>(out), lse,
      static_cast<const T*>(dout), static_cast<T*>(dqkv), dvec);
  KAT_CUDA_CHECK_LAUNCH();
  const std::size_t smem2 = (std::size_t(2) * N * HD + 2 * N) * sizeof(float);
  set_smem(attn_bwd_dkv_kernel<T, DH, VEC>, smem2);
  attn_bwd_dkv_kernel<T, DH, VEC><<<grid, kThreads, smem2, s>>>(
      N, D, H, scale, static_cast<const T*>(qkv), lse, static_cast<const T*>(dout), dvec,
      static_cast<T*>(dqkv));
  KAT_CUDA_CHECK_LAUNCH();
}


// ---- tensor-core path (bf16 storage, hd % 16 == 0) ---------------------------------------------
// WMMA 16x16x16 bf16 -> fp32. Blocks of 4 warps, each warp owns 16 rows of a 64-row tile.
// Sequences are padded to a multiple of 64 rows in shared memory (zeros), padded keys/queries are
// masked out of every softmax / gradient term. Differences from the fp32 SIMT path: P (forward),
// P^T and dS (backward) are rounded to bf16 before their second GEMM, as in FlashAttention.
namespace wm = nvcuda::wmma;
using FragA = wm::fragment<wm::matrix_a, 16, 16, 16, __nv_bfloat16, wm::row_major>;
using FragBc = wm::fragment<wm::matrix_b, 16, 16, 16, __nv_bfloat16, wm::col_major>;
using FragBr = wm::fragment<wm::matrix_b, 16, 16, 16, __nv_bfloat16, wm::row_major>;
using FragC = wm::fragment<wm::accumulator, 16, 16, 16, float>;
constexpr int kTcWarps = 4, kTcThreads = 32 * kTcWarps, kTcRows = 16 * kTcWarps;  // 64 rows/block

__host__ __device__ constexpr int pad64(int n) { return (n + 63) / 64 * 64; }
// Padded shared-memory leading dimensions (break the 128/256-byte row strides that put every row
// of a WMMA tile in the same banks): bf16 tiles HD + 8, fp32 16x64 chunks 68, bf16 chunks 72.
template <int HD>
__host__ __device__ constexpr int ldh() { return HD + 8; }
constexpr int kLdS = 68, kLdC = 72;

// Copy rows [0, n) of a (rows x HD) strided bf16 matrix into smem (rows x LD), zero rows [n, rows).
template <int HD>
__device__ __forceinline__ void stage_bf16(const __nv_bfloat16* src, int64_t ld_row, int n, int rows,
                                           __nv_bfloat16* dst) {
  constexpr int V = HD / 8;  // 16-byte chunks per row
  for (int idx = threadIdx.x; idx < rows * V; idx += blockDim.x) {
    const int r = idx / V, c = idx - r * V;
    uint4 v = make_uint4(0, 0, 0, 0);
    if (r < n) v = *reinterpret_cast<const uint4*>(src + int64_t(r) * ld_row + c * 8);
    *reinterpret_cast<uint4*>(dst + r * ldh<HD>() + c * 8) = v;
  }
}

// S (16 x 64 chunk, fp32, ld ldS) = A rows (16 x HD) . B rows (64 x HD)^T (smem, ld ldh).
template <int HD>
__device__ __forceinline__ void mm_abt_chunk(const __nv_bfloat16* A, const __nv_bfloat16* Brows, float* S, int ldS) {
  constexpr int LD = ldh<HD>();
#pragma unroll
  for (int nt = 0; nt < 4; ++nt) {
    FragC acc;
    wm::fill_fragment(acc, 0.f);
#pragma unroll
    for (int kk = 0; kk < HD / 16; ++kk) {
      FragA a;
      FragBc b;
      wm::load_matrix_sync(a, A + kk * 16, LD);
      wm::load_matrix_sync(b, Brows + nt * 16 * LD + kk * 16, LD);
      wm::mma_sync(acc, a, b, acc);
    }
    wm::store_matrix_sync(S + nt * 16, acc, ldS, wm::mem_row_major);
  }
}

// acc[dt] += P (16 x 64 chunk, bf16, ld ldP) . Vrows (64 x HD, smem, ld ldh).
template <int HD>
__device__ __forceinline__ void mm_pv_chunk(FragC (&acc)[HD / 16], const __nv_bfloat16* P, int ldP,
                                            const __nv_bfloat16* Vrows) {
  constexpr int LD = ldh<HD>();
#pragma unroll
  for (int kt = 0; kt < 4; ++kt) {
    FragA a;
    wm::load_matrix_sync(a, P + kt * 16, ldP);
#pragma unroll
    for (int dt = 0; dt < HD / 16; ++dt) {
      FragBr b;
      wm::load_matrix_sync(b, Vrows + kt * 16 * LD + dt * 16, LD);
      wm::mma_sync(acc[dt], a, b, acc[dt]);
    }
  }
}

template <int HD>
std::size_t fwd_tc_smem(int N) {
  const int NP = pad64(N);
  return std::size_t(2) * NP * ldh<HD>() * 2 + std::size_t(kTcRows) * ldh<HD>() * 2 +
         std::size_t(kTcRows) * (NP + 4) * 4 + std::size_t(kTcRows) * (NP + 8) * 2 + std::size_t(kTcRows) * (HD + 4) * 4 +
         kTcRows * 4;
}

template <int HD>
__global__ void __launch_bounds__(kTcThreads) attn_fwd_tc_kernel(int N, int D, int H, float scale,
                                                                 const __nv_bfloat16* __restrict__ qkv,
                                                                 __nv_bfloat16* __restrict__ out,
                                                                 float* __restrict__ lse) {
  constexpr int LD = ldh<HD>();
  const int NP = pad64(N), LDSF = NP + 4, LDP = NP + 8;
  extern __shared__ __align__(128) unsigned char smem_raw[];
  __nv_bfloat16* Ks = reinterpret_cast<__nv_bfloat16*>(smem_raw);
  __nv_bfloat16* Vs = Ks + NP * LD;
  __nv_bfloat16* Qs = Vs + NP * LD;                                          // 64 x LD
  float* Sall = reinterpret_cast<float*>(Qs + kTcRows * LD);                 // 4 x (16 x LDSF)
  __nv_bfloat16* Pall = reinterpret_cast<__nv_bfloat16*>(Sall + kTcRows * LDSF);  // 4 x (16 x LDP)
  float* Oall = reinterpret_cast<float*>(Pall + kTcRows * LDP);              // 4 x (16 x (HD+4))
  float* Lall = Oall + kTcRows * (HD + 4);                                   // 64 lse
  const int b = blockIdx.z, h = blockIdx.y, q0 = blockIdx.x * kTcRows;
  const int64_t ld3 = 3 * int64_t(D);
  const __nv_bfloat16* base = qkv + int64_t(b) * N * ld3 + h * HD;
  stage_bf16<HD>(base + D, ld3, N, NP, Ks);
  stage_bf16<HD>(base + 2 * D, ld3, N, NP, Vs);
  stage_bf16<HD>(base + int64_t(q0) * ld3, ld3, min(kTcRows, N - q0), kTcRows, Qs);
  __syncthreads();
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  float* S = Sall + warp * 16 * LDSF;
  __nv_bfloat16* P = Pall + warp * 16 * LDP;
  float* O = Oall + warp * 16 * (HD + 4);
  const __nv_bfloat16* Qw = Qs + warp * 16 * LD;
  for (int c = 0; c < NP; c += 64) mm_abt_chunk<HD>(Qw, Ks + c * LD, S + c, LDSF);
  __syncwarp();
  // Softmax: one row at a time across the warp (conflict-free), butterfly reductions (every lane
  // gets the same value; fixed order).
  for (int r = 0; r < 16; ++r) {
    const float* srow = S + r * LDSF;
    float m = -INFINITY;
    for (int j = lane; j < N; j += 32) m = fmaxf(m, srow[j] * scale);
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) m = fmaxf(m, __shfl_xor_sync(0xffffffffu, m, o));
    float l = 0.f;
    for (int j = lane; j < N; j += 32) l += expf(srow[j] * scale - m);
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) l += __shfl_xor_sync(0xffffffffu, l, o);
    const float inv = 1.f / l;
    __nv_bfloat16* prow = P + r * LDP;
    for (int j = lane; j < NP; j += 32) prow[j] = __float2bfloat16_rn(j < N ? expf(srow[j] * scale - m) * inv : 0.f);
    if (lane == 0) Lall[warp * 16 + r] = m + logf(l);
  }
  __syncwarp();
  FragC acc[HD / 16];
#pragma unroll
  for (int dt = 0; dt < HD / 16; ++dt) wm::fill_fragment(acc[dt], 0.f);
  for (int c = 0; c < NP; c += 64) mm_pv_chunk<HD>(acc, P + c, LDP, Vs + c * LD);
#pragma unroll
  for (int dt = 0; dt < HD / 16; ++dt) wm::store_matrix_sync(O + dt * 16, acc[dt], HD + 4, wm::mem_row_major);
  __syncwarp();
  for (int idx = lane; idx < 16 * HD; idx += 32) {
    const int r = idx / HD, cc = idx - r * HD, i = q0 + warp * 16 + r;
    if (i < N) out[(int64_t(b) * N + i) * D + h * HD + cc] = __float2bfloat16_rn(O[r * (HD + 4) + cc]);
  }
  if (lane < 16) {
    const int i = q0 + warp * 16 + lane;
    if (i < N) lse[(int64_t(b) * H + h) * N + i] = Lall[warp * 16 + lane];
  }
}

template <int HD>
std::size_t dq_tc_smem(int N) {
  const int NP = pad64(N);
  return std::size_t(2) * NP * ldh<HD>() * 2 + std::size_t(2) * kTcRows * ldh<HD>() * 2 +
         std::size_t(kTcRows) * kLdS * 4 * 2 + std::size_t(kTcRows) * kLdC * 2 + 2 * kTcRows * 4;
}

// dq (and the row terms Dv_i): block per 64-query tile; K, V of the (image, head) in smem.
template <int HD>
__global__ void __launch_bounds__(kTcThreads) attn_bwd_dq_tc_kernel(int N, int D, int H, float scale,
                                                                    const __nv_bfloat16* __restrict__ qkv,
                                                                    const __nv_bfloat16* __restrict__ out,
                                                                    const float* __restrict__ lse,
                                                                    const __nv_bfloat16* __restrict__ dout,
                                                                    __nv_bfloat16* __restrict__ dqkv,
                                                                    float* __restrict__ dvec) {
  constexpr int LD = ldh<HD>();
  const int NP = pad64(N);
  extern __shared__ __align__(128) unsigned char smem_raw[];
  __nv_bfloat16* Ks = reinterpret_cast<__nv_bfloat16*>(smem_raw);
  __nv_bfloat16* Vs = Ks + NP * LD;
  __nv_bfloat16* Qs = Vs + NP * LD;       // 64 x LD
  __nv_bfloat16* Gs = Qs + kTcRows * LD;  // 64 x LD (dout)
  float* Sall = reinterpret_cast<float*>(Gs + kTcRows * LD);  // 4 x (16 x kLdS)
  float* Pall = Sall + kTcRows * kLdS;                         // 4 x (16 x kLdS) dP
  __nv_bfloat16* dSall = reinterpret_cast<__nv_bfloat16*>(Pall + kTcRows * kLdS);  // 4 x (16 x kLdC)
  float* rowL = reinterpret_cast<float*>(dSall + kTcRows * kLdC);  // 64 lse
  float* rowD = rowL + kTcRows;                                    // 64 Dv
  const int b = blockIdx.z, h = blockIdx.y, q0 = blockIdx.x * kTcRows;
  const int nq = min(kTcRows, N - q0);
  const int64_t ld3 = 3 * int64_t(D);
  const __nv_bfloat16* base = qkv + int64_t(b) * N * ld3 + h * HD;
  stage_bf16<HD>(base + D, ld3, N, NP, Ks);
  stage_bf16<HD>(base + 2 * D, ld3, N, NP, Vs);
  stage_bf16<HD>(base + int64_t(q0) * ld3, ld3, nq, kTcRows, Qs);
  stage_bf16<HD>(dout + (int64_t(b) * N + q0) * D + h * HD, D, nq, kTcRows, Gs);
  {  // Row terms: 2 threads per row (128 threads, 64 rows), fixed order.
    const int r = threadIdx.x >> 1, half = threadIdx.x & 1, i = q0 + r;
    float dv = 0.f;
    if (i < N) {
      const __nv_bfloat16* orow = out + (int64_t(b) * N + i) * D + h * HD;
      const __nv_bfloat16* grow = dout + (int64_t(b) * N + i) * D + h * HD;
      for (int c = half; c < HD; c += 2) dv += __bfloat162float(grow[c]) * __bfloat162float(orow[c]);
    }
    dv += __shfl_xor_sync(0xffffffffu, dv, 1);
    if (half == 0) {
      rowD[r] = dv;
      rowL[r] = i < N ? lse[(int64_t(b) * H + h) * N + i] : 0.f;
      if (i < N) dvec[(int64_t(b) * H + h) * N + i] = dv;
    }
  }
  __syncthreads();
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  float* S = Sall + warp * 16 * kLdS;
  float* dP = Pall + warp * 16 * kLdS;
  __nv_bfloat16* dS = dSall + warp * 16 * kLdC;
  const __nv_bfloat16* Qw = Qs + warp * 16 * LD;
  const __nv_bfloat16* Gw = Gs + warp * 16 * LD;
  FragC acc[HD / 16];
#pragma unroll
  for (int dt = 0; dt < HD / 16; ++dt) wm::fill_fragment(acc[dt], 0.f);
  const bool any_row = q0 + warp * 16 < N;
  for (int c = 0; c < NP && any_row; c += 64) {
    mm_abt_chunk<HD>(Qw, Ks + c * LD, S, kLdS);
    mm_abt_chunk<HD>(Gw, Vs + c * LD, dP, kLdS);
    __syncwarp();
    for (int idx = lane; idx < 16 * 64; idx += 32) {
      const int r = idx >> 6, jj = idx & 63, j = c + jj;
      const int rr = warp * 16 + r;
      float v = 0.f;
      if (j < N && q0 + rr < N) {
        const float p = expf(S[r * kLdS + jj] * scale - rowL[rr]);
        v = p * (dP[r * kLdS + jj] - rowD[rr]);
      }
      dS[r * kLdC + jj] = __float2bfloat16_rn(v);
    }
    __syncwarp();
    mm_pv_chunk<HD>(acc, dS, kLdC, Ks + c * LD);
    __syncwarp();
  }
  // Store through the S buffer (16 x kLdS fp32 >= 16 x (HD + 4)).
#pragma unroll
  for (int dt = 0; dt < HD / 16; ++dt) wm::store_matrix_sync(S + dt * 16, acc[dt], HD + 4, wm::mem_row_major);
  __syncwarp();
  for (int idx = lane; idx < 16 * HD; idx += 32) {
    const int r = idx / HD, cc = idx - r * HD, i = q0 + warp * 16 + r;
    if (i < N) dqkv[(int64_t(b) * N + i) * ld3 + h * HD + cc] = __float2bfloat16_rn(S[r * (HD + 4) + cc] * scale);
  }
}

template <int HD>
std::size_t dkv_tc_smem(int N) {
  const int NP = pad64(N);
  return std::size_t(2) * NP * ldh<HD>() * 2 + std::size_t(2) * kTcRows * ldh<HD>() * 2 +
         std::size_t(kTcRows) * kLdS * 4 * 2 + std::size_t(kTcRows) * kLdC * 2 * 2 + std::size_t(2) * NP * 4;
}

// dk, dv: block per 64-key tile; Q, dout of the (image, head) in smem; chunks of 64 queries.
template <int HD>
__global__ void __launch_bounds__(kTcThreads) attn_bwd_dkv_tc_kernel(int N, int D, int H, float scale,
                                                                     const __nv_bfloat16* __restrict__ qkv,
                                                                     const float* __restrict__ lse,
                                                                     const __nv_bfloat16* __restrict__ dout,
                                                                     const float* __restrict__ dvec,
                                                                     __nv_bfloat16* __restrict__ dqkv) {
  constexpr int LD = ldh<HD>();
  const int NP = pad64(N);
  extern __shared__ __align__(128) unsigned char smem_raw[];
  __nv_bfloat16* Qs = reinterpret_cast<__nv_bfloat16*>(smem_raw);
  __nv_bfloat16* Gs = Qs + NP * LD;
  __nv_bfloat16* Kt = Gs + NP * LD;       // 64 x LD
  __nv_bfloat16* Vt = Kt + kTcRows * LD;  // 64 x LD
  float* Sall = reinterpret_cast<float*>(Vt + kTcRows * LD);  // 4 x (16 x kLdS) S^T
  float* Pall = Sall + kTcRows * kLdS;                         // 4 x (16 x kLdS) dP^T
  __nv_bfloat16* PTall = reinterpret_cast<__nv_bfloat16*>(Pall + kTcRows * kLdS);  // 4 x (16 x kLdC)
  __nv_bfloat16* dSall = PTall + kTcRows * kLdC;                                    // 4 x (16 x kLdC)
  float* Ls = reinterpret_cast<float*>(dSall + kTcRows * kLdC);  // NP
  float* Ds = Ls + NP;                                           // NP
  const int b = blockIdx.z, h = blockIdx.y, k0 = blockIdx.x * kTcRows;
  const int nk = min(kTcRows, N - k0);
  const int64_t ld3 = 3 * int64_t(D);
  const __nv_bfloat16* base = qkv + int64_t(b) * N * ld3 + h * HD;
  stage_bf16<HD>(base, ld3, N, NP, Qs);
  stage_bf16<HD>(dout + int64_t(b) * N * D + h * HD, D, N, NP, Gs);
  stage_bf16<HD>(base + int64_t(k0) * ld3 + D, ld3, nk, kTcRows, Kt);
  stage_bf16<HD>(base + int64_t(k0) * ld3 + 2 * D, ld3, nk, kTcRows, Vt);
  const int64_t rowbase = (int64_t(b) * H + h) * N;
  for (int idx = threadIdx.x; idx < NP; idx += blockDim.x) {
    Ls[idx] = idx < N ? lse[rowbase + idx] : 0.f;
    Ds[idx] = idx < N ? dvec[rowbase + idx] : 0.f;
  }
  __syncthreads();
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  float* S = Sall + warp * 16 * kLdS;
  float* dP = Pall + warp * 16 * kLdS;
  __nv_bfloat16* PT = PTall + warp * 16 * kLdC;
  __nv_bfloat16* dS = dSall + warp * 16 * kLdC;
  const __nv_bfloat16* Kw = Kt + warp * 16 * LD;
  const __nv_bfloat16* Vw = Vt + warp * 16 * LD;
  FragC dk[HD / 16], dv[HD / 16];
#pragma unroll
  for (int dt = 0; dt < HD / 16; ++dt) {
    wm::fill_fragment(dk[dt], 0.f);
    wm::fill_fragment(dv[dt], 0.f);
  }
  const bool any_key = k0 + warp * 16 < N;
  for (int c = 0; c < NP && any_key; c += 64) {
    mm_abt_chunk<HD>(Kw, Qs + c * LD, S, kLdS);   // S^T (keys x queries)
    mm_abt_chunk<HD>(Vw, Gs + c * LD, dP, kLdS);  // dP^T
    __syncwarp();
    for (int idx = lane; idx < 16 * 64; idx += 32) {
      const int r = idx >> 6, ii = idx & 63, i = c + ii;
      float p = 0.f, ds = 0.f;
      if (i < N && k0 + warp * 16 + r < N) {
        p = expf(S[r * kLdS + ii] * scale - Ls[i]);
        ds = p * (dP[r * kLdS + ii] - Ds[i]);
      }
      PT[r * kLdC + ii] = __float2bfloat16_rn(p);
      dS[r * kLdC + ii] = __float2bfloat16_rn(ds);
    }
    __syncwarp();
    mm_pv_chunk<HD>(dv, PT, kLdC, Gs + c * LD);
    mm_pv_chunk<HD>(dk, dS, kLdC, Qs + c * LD);
    __syncwarp();
  }
#pragma unroll
  for (int dt = 0; dt < HD / 16; ++dt) {
    wm::store_matrix_sync(S + dt * 16, dk[dt], HD + 4, wm::mem_row_major);
    wm::store_matrix_sync(dP + dt * 16, dv[dt], HD + 4, wm::mem_row_major);
  }
  __syncwarp();
  for (int idx = lane; idx < 16 * HD; idx += 32) {
    const int r = idx / HD, cc = idx - r * HD, j = k0 + warp * 16 + r;
    if (j < N) {
      __nv_bfloat16* drow = dqkv + (int64_t(b) * N + j) * ld3 + h * HD + cc;
      drow[D] = __float2bfloat16_rn(S[r * (HD + 4) + cc] * scale);
      drow[2 * D] = __float2bfloat16_rn(dP[r * (HD + 4) + cc]);
    }
  }
}

template <int HD>
void launch_tc(bool backward, int64_t B, int N, int D, int H, float scale, const void* qkv, const void* out,
               float* lse, const void* dout, void* dqkv, float* dvec, void* out_fwd, cudaStream_t s) {
  const dim3 grid((N + kTcRows - 1) / kTcRows, H, unsigned(B));
  const auto* q = static_cast<const __nv_bfloat16*>(qkv);
  if (!backward) {
    const std::size_t smem = fwd_tc_smem<HD>(N);
    set_smem(attn_fwd_tc_kernel<HD>, smem);
    attn_fwd_tc_kernel<HD><<<grid, kTcThreads, smem, s>>>(N, D, H, scale, q, static_cast<__nv_bfloat16*>(out_fwd), lse);
    KAT_CUDA_CHECK_LAUNCH();
    return;
  }
  const std::size_t smem1 = dq_tc_smem<HD>(N);
  set_smem(attn_bwd_dq_tc_kernel<HD>, smem1);
  attn_bwd_dq_tc_kernel<HD><<<grid, kTcThreads, smem1, s>>>(N, D, H, scale, q, static_cast<const __nv_bfloat16*>(out), lse,
                                                            static_cast<const __nv_bfloat16*>(dout),
                                                            static_cast<__nv_bfloat16*>(dqkv), dvec);
  KAT_CUDA_CHECK_LAUNCH();
  const std::size_t smem2 = dkv_tc_smem<HD>(N);
  set_smem(attn_bwd_dkv_tc_kernel<HD>, smem2);
  attn_bwd_dkv_tc_kernel<HD><<<grid, kTcThreads, smem2, s>>>(N, D, H, scale, q, lse, static_cast<const __nv_bfloat16*>(dout),
                                                             dvec, static_cast<__nv_bfloat16*>(dqkv));
  KAT_CUDA_CHECK_LAUNCH();
}

bool g_force_simt = false;

bool use_tc(Storage st, int hd) {
  if (st != Storage::BF16 || hd % 16 != 0 || g_force_simt) return false;
  static const bool env_simt = [] {
    const char* e = std::getenv("KAT_ATTN_SIMT");
    return e && *e && *e != '0';
  }();
  return !env_simt;
}

void dispatch_tc(bool backward, int hd, int64_t B, int N, int D, int H, float scale, const void* qkv, const void* out,
                 float* lse, const void* dout, void* dqkv, float* dvec, void* out_fwd, cudaStream_t s) {
  switch (hd) {
    case 16: launch_tc<16>(backward, B, N, D, H, scale, qkv, out, lse, dout, dqkv, dvec, out_fwd, s); break;
    case 32: launch_tc<32>(backward, B, N, D, H, scale, qkv, out, lse, dout, dqkv, dvec, out_fwd, s); break;
    case 48: launch_tc<48>(backward, B, N, D, H, scale, qkv, out, lse, dout, dqkv, dvec, out_fwd, s); break;
    case 64: launch_tc<64>(backward, B, N, D, H, scale, qkv, out, lse, dout, dqkv, dvec, out_fwd, s); break;
    default: KAT_CHECK(false, "attention: no tensor-core path for head dim ", hd);
  }
}

#define KAT_ATTN_DISPATCH(HDV, CALL)                                       \
  switch (HDV) {                                                           \
    case 16: CALL(4); break;                                               \
    case 24: CALL(6); break;                                               \
    case 32: CALL(8); break;                                               \
    case 40: CALL(10); break;                                              \
    case 48: CALL(12); break;                                              \
    case 56: CALL(14); break;                                              \
    case 64: CALL(16); break;                                              \
    default: KAT_CHECK(false, "attention: unsupported head dim ", HDV);   \
  }

}  // namespace

void attention_check_shape(int64_t N, int64_t D, int64_t H) {
  KAT_CHECK(N >= 1 && N <= 256, "attention (CUDA): N = ", N, " tokens, supported 1..256");
  KAT_CHECK(H >= 1 && D % H == 0, "attention (CUDA): D = ", D, " not divisible by H = ", H);
  const int64_t hd = D / H;
  KAT_CHECK(hd >= 16 && hd <= 64 && hd % 8 == 0, "attention (CUDA): head dim ", hd,
            " unsupported (16..64, multiple of 8)");
}

void attention_forward(int64_t B, int64_t N, int64_t D, int64_t H, Storage st, const void* qkv,
                       void* out, float* lse, cudaStream_t stream) {
  attention_check_shape(N, D, H);
  if (B == 0) return;
  const int hd = int(D / H);
  const float scale = 1.0f / std::sqrt(float(hd));
  if (use_tc(st, hd)) {
    KAT_CHECK(reinterpret_cast<uintptr_t>(qkv) % 16 == 0 && D % 8 == 0, "attention: tensor-core path needs 16-byte rows");
    dispatch_tc(false, hd, B, int(N), int(D), int(H), scale, qkv, nullptr, lse, nullptr, nullptr, nullptr, out, stream);
    return;
  }
#define KAT_FWD(DH)                                                                                   \
  if (st == Storage::F32)                                                                             \
    launch_fwd<float, DH>(B, int(N), int(D), int(H), scale, qkv, out, lse, stream);                   \
  else                                                                                                \
    launch_fwd<__nv_bfloat16, DH>(B, int(N), int(D), int(H), scale, qkv, out, lse, stream);
  KAT_ATTN_DISPATCH(hd, KAT_FWD)
#undef KAT_FWD
}

std::size_t attention_backward_workspace_bytes(int64_t B, int64_t N, int64_t H) {
  return std::size_t(B * N * H) * sizeof(float);
}

void attention_backward(int64_t B, int64_t N, int64_t D, int64_t H, Storage st, const void* qkv,
                        const void* out, const float* lse, const void* dout, void* dqkv,
                        void* workspace, cudaStream_t stream) {
  attention_check_shape(N, D, H);
  if (B == 0) return;
  const int hd = int(D / H);
  const float scale = 1.0f / std::sqrt(float(hd));
  float* dvec = static_cast<float*>(workspace);
  if (use_tc(st, hd)) {
    KAT_CHECK(reinterpret_cast<uintptr_t>(qkv) % 16 == 0 && reinterpret_cast<uintptr_t>(dout) % 16 == 0 && D % 8 == 0,
              "attention: tensor-core path needs 16-byte rows");
    dispatch_tc(true, hd, B, int(N), int(D), int(H), scale, qkv, out, const_cast<float*>(lse), dout, dqkv, dvec, nullptr, stream);
    return;
  }
#define KAT_BWD(DH)                                                                                       \
  if (st == Storage::F32)                                                                                 \
    launch_bwd<float, DH>(B, int(N), int(D), int(H), scale, qkv, out, lse, dout, dqkv, dvec, stream);     \
  else                                                                                                    \
    launch_bwd<__nv_bfloat16, DH>(B, int(N), int(D), int(H), scale, qkv, out, lse, dout, dqkv, dvec, stream);
  KAT_ATTN_DISPATCH(hd, KAT_BWD)
#undef KAT_BWD
}

void attention_force_simt(bool on) { g_force_simt = on; }

}  // namespace kat::cuda
