// Tensor-core attention core (bf16 storage, head dim 16/32/48/64, N <= 256), FlashAttention-2
// style with mma.sync m16n8k16 (see mma_bf16.cuh for the fragment layouts). Same contract as
// attention.h; called from attention.cu.
//
// Blocks of W = 8 warps; a warp owns 16 rows (queries in the forward
// and dq kernels, keys in the dk/dv kernel) and keeps everything of those rows in registers: its
// A fragments (Q, dout or K, V), the fp32 accumulators (O, dq or dk, dv) and one 16 x 64 chunk of
// scores. The other operand of the
// (image, head) — K, V or Q, dout: at most 256 x 64 bf16 each — is staged once per block in shared
// memory (rows padded to a multiple of 16 with zeros, leading dimension HD + 8 so the 8 row
// addresses of an ldmatrix fall in 8 different bank quads) with cp.async in 64-row chunks, one
// group per chunk, so compute starts on chunk 0 while the rest arrives, and read with ldmatrix
// (.trans for the operand of the second GEMM). Keys/queries are walked in chunks of 64, the last chunk only
// over its valid 16-row subtiles (N = 197 -> 13 subtiles, not 16).
//
// Forward: online softmax in the log2 domain (S * scale * log2 e, exp2f), P rounded to bf16 for
// P V, lse stored in natural log. Backward, three kernels: the row terms Dv_i = dout_i . out_i; dk/dv
// (recomputes S^T and dP^T per key block) which also stores dS^T (bf16) to the workspace; dq = dS K
// from that dS^T (staged in shared memory, A fragments by ldmatrix.trans) instead of recomputing S
// and dP a second time (FlashAttention-2 accumulates dq with atomics instead; this stays
// deterministic; H200 kat_tiny b256: +1.2 % training throughput over the recomputing dq kernel,
// for B*H*N*pad16(N) bf16 of workspace, 66 MB). P, P^T and dS are rounded to bf16 before their
// second GEMM, as FlashAttention does. All sums in fixed order, no atomics: bitwise reproducible.
#include <cuda_bf16.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <utility>

#include "kat/core/error.h"
#include "ops/cuda/attention_mma.h"
#include "ops/cuda/cuda_check.h"
#include "ops/cuda/mma_bf16.cuh"

namespace kat::cuda {

namespace {

using bf16 = __nv_bfloat16;
using mma::ldsm_x4;
using mma::ldsm_x4_trans;
using mma::mma_bf16;
using mma::smem_addr;
using mma::to_a;

// Warps per block (W, 16 rows each): a template parameter of every kernel, launched with W = 8
// (128 rows per block: half the blocks restaging the same K/V compared with W = 4).
// H200, kat_tiny b256 (2026-11-30, same call): W = 8 train 15,784 / infer 57,811 img/s,
// W = 4 14,670 / 49,584; both pass the attention and model tests.
constexpr int kWarpsPerBlock = 8;
constexpr float kLog2e = 1.4426950408889634f, kLn2 = 0.6931471805599453f;

__host__ __device__ constexpr int pad16(int n) { return (n + 15) / 16 * 16; }
template <int HD>
__host__ __device__ constexpr int ld_smem() {
  return HD + 8;
}

// cp.async copies of rows [r_begin, r_end) of a strided bf16 matrix (HD columns) into shared
// memory (ld HD + 8); rows >= n are zero-filled. Nothing waits here: see wait_chunk.
template <int HD>
__device__ __forceinline__ void stage_rows_async(const bf16* __restrict__ src, int64_t ld_row, int n, int r_begin,
                                                 int r_end, bf16* dst) {
  constexpr int V = HD / 8;  // 16-byte chunks per row
  for (int idx = r_begin * V + threadIdx.x; idx < r_end * V; idx += blockDim.x) {
    const int r = idx / V, c = idx - r * V;
    const bool ok = r < n;
    mma::cp_async16(smem_addr(dst + r * ld_smem<HD>() + c * 8), src + int64_t(ok ? r : 0) * ld_row + c * 8,
                    ok ? 16 : 0);
  }
}

// The staged operands are copied in 64-row chunks, one cp.async group per chunk (issued at the
// kernel start, all in flight at once), so the block computes on chunk 0 while later chunks are
// still arriving. wait_chunk(ci, nc): chunk ci has landed for every thread of the block.
constexpr int kChunkRows = 64;
__device__ __forceinline__ void wait_chunk(int ci, int nc) {
  const int later = nc - 1 - ci;  // groups that may stay in flight (nc <= 4 for N <= 256)
  if (later >= 3)
    mma::cp_async_wait<3>();
  else if (later == 2)
    mma::cp_async_wait<2>();
  else if (later == 1)
    mma::cp_async_wait<1>();
  else
    mma::cp_async_wait<0>();
  __syncthreads();
}

// Issues the chunked copies of two (N x HD) operands (rows padded to NP with zeros).
template <int HD>
__device__ __forceinline__ void stage_two_async(const bf16* a, int64_t lda, const bf16* b, int64_t ldb, int N,
                                                int NP, bf16* as, bf16* bs) {
  for (int c = 0; c < NP; c += kChunkRows) {
    const int e = min(c + kChunkRows, NP);
    stage_rows_async<HD>(a, lda, N, c, e, as);
    stage_rows_async<HD>(b, ldb, N, c, e, bs);
    mma::cp_async_commit();
  }
}

__device__ __forceinline__ uint32_t ld32(const bf16* p) { return *reinterpret_cast<const uint32_t*>(p); }

// A fragments of rows [r0, r0 + 16) x cols [0, HD) of a row-major bf16 matrix in global memory;
// rows >= n read as zero.
template <int HD>
__device__ __forceinline__ void load_a_global(uint32_t (&a)[HD / 16][4], const bf16* __restrict__ base,
                                              int64_t ld_row, int r0, int n) {
  const int lane = threadIdx.x & 31, g = lane >> 2, t = lane & 3;
  const int ra = r0 + g, rb = r0 + g + 8;
  const bf16* pa = base + int64_t(ra) * ld_row + 2 * t;
  const bf16* pb = base + int64_t(rb) * ld_row + 2 * t;
#pragma unroll
  for (int kk = 0; kk < HD / 16; ++kk) {
    a[kk][0] = ra < n ? ld32(pa + kk * 16) : 0u;
    a[kk][1] = rb < n ? ld32(pb + kk * 16) : 0u;
    a[kk][2] = ra < n ? ld32(pa + kk * 16 + 8) : 0u;
    a[kk][3] = rb < n ? ld32(pb + kk * 16 + 8) : 0u;
  }
}

// acc (16 x 16 NS: tiles of 8 columns) = A (16 x HD) . R^T, R = 16 NS consecutive rows of a staged
// smem matrix starting at R0; only the first nsub 16-row subtiles of R (the rest stay zero).
template <int HD, int NS>
__device__ __forceinline__ void mma_abt(float (&acc)[2 * NS][4], const uint32_t (&a)[HD / 16][4], const bf16* R0,
                                        int nsub) {
  constexpr int LD = ld_smem<HD>();
  const int lane = threadIdx.x & 31, m = lane >> 3, r = lane & 7;
#pragma unroll
  for (int nt = 0; nt < 2 * NS; ++nt) acc[nt][0] = acc[nt][1] = acc[nt][2] = acc[nt][3] = 0.f;
  const bf16* lane_row = R0 + ((m >> 1) * 8 + r) * LD + (m & 1) * 8;
#pragma unroll
  for (int j = 0; j < NS; ++j) {
    if (j < nsub) {
#pragma unroll
      for (int kk = 0; kk < HD / 16; ++kk) {
        uint32_t b[4];
        ldsm_x4(b, smem_addr(lane_row + j * 16 * LD + kk * 16));
        mma_bf16(acc[2 * j], a[kk], b[0], b[1]);
        mma_bf16(acc[2 * j + 1], a[kk], b[2], b[3]);
      }
    }
  }
}

// acc (16 x HD) += P (16 x 16 NS, A fragments p[j] for columns 16j..16j+15) . R (16 NS rows x HD
// of a staged smem matrix starting at R0); only the first nsub subtiles.
template <int HD, int NS>
__device__ __forceinline__ void mma_pr(float (&acc)[HD / 8][4], const uint32_t (&p)[NS][4], const bf16* R0,
                                       int nsub) {
  constexpr int LD = ld_smem<HD>();
  const int lane = threadIdx.x & 31, m = lane >> 3, r = lane & 7;
  const bf16* lane_row = R0 + ((m & 1) * 8 + r) * LD + (m >> 1) * 8;
#pragma unroll
  for (int j = 0; j < NS; ++j) {
    if (j < nsub) {
#pragma unroll
      for (int dp = 0; dp < HD / 16; ++dp) {
        uint32_t b[4];
        ldsm_x4_trans(b, smem_addr(lane_row + j * 16 * LD + dp * 16));
        mma_bf16(acc[2 * dp], p[j], b[0], b[1]);
        mma_bf16(acc[2 * dp + 1], p[j], b[2], b[3]);
      }
    }
  }
}

// Sum / max over the 4 lanes of a quad (the lanes sharing a fragment row); fixed order.
__device__ __forceinline__ float quad_sum(float v) {
  v += __shfl_xor_sync(0xffffffffu, v, 1);
  return v + __shfl_xor_sync(0xffffffffu, v, 2);
}
__device__ __forceinline__ float quad_max(float v) {
  v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, 1));
  return fmaxf(v, __shfl_xor_sync(0xffffffffu, v, 2));
}

// Stores rows g, g+8 of a 16 x HD fp32 accumulator (times mul) as bf16 at row r0 of a row-major matrix.
template <int HD>
__device__ __forceinline__ void store_rows(const float (&acc)[HD / 8][4], float mul0, float mul1, bf16* base,
                                           int64_t ld_row, int r0, int n) {
  const int lane = threadIdx.x & 31, g = lane >> 2, t = lane & 3;
  const int ra = r0 + g, rb = r0 + g + 8;
#pragma unroll
  for (int dt = 0; dt < HD / 8; ++dt) {
    const int col = dt * 8 + 2 * t;
    if (ra < n)
      *reinterpret_cast<uint32_t*>(base + int64_t(ra) * ld_row + col) =
          vecio::pack_bf16x2(acc[dt][0] * mul0, acc[dt][1] * mul0);
    if (rb < n)
      *reinterpret_cast<uint32_t*>(base + int64_t(rb) * ld_row + col) =
          vecio::pack_bf16x2(acc[dt][2] * mul1, acc[dt][3] * mul1);
  }
}

// Prologue of the forward and dq kernels: K and V of this block's (image, head) = (blockIdx.z,
// blockIdx.y) into dynamic shared memory (Ks, Vs: pad16(N) x (HD + 8) each), chunked cp.async (see
// wait_chunk). Returns the (image, head) base pointer into qkv (its q columns; k at + D, v at + 2 D).
template <int HD>
__device__ __forceinline__ const bf16* stage_kv(const bf16* __restrict__ qkv, int N, int D, unsigned char* smem,
                                                bf16*& Ks, bf16*& Vs) {
  const int NP = pad16(N);
  Ks = reinterpret_cast<bf16*>(smem);
  Vs = Ks + NP * ld_smem<HD>();
  const int64_t ld3 = 3 * int64_t(D);
  const bf16* base = qkv + int64_t(blockIdx.z) * N * ld3 + blockIdx.y * HD;
  stage_two_async<HD>(base + D, ld3, base + 2 * D, ld3, N, NP, Ks, Vs);
  return base;
}

template <int HD>
std::size_t two_operand_smem(int N) {
  return std::size_t(2) * pad16(N) * ld_smem<HD>() * sizeof(bf16);
}

// grid (ceil(N / (16 W)), H, B). smem: K, V of the (image, head).
template <int HD, int W>
__global__ void __launch_bounds__(32 * W)
    attn_fwd_mma_kernel(int N, int D, int H, float scale_log2, const bf16* __restrict__ qkv,
                        bf16* __restrict__ out, float* __restrict__ lse) {
  constexpr int LD = ld_smem<HD>();
  const int NP = pad16(N);
  extern __shared__ __align__(128) unsigned char smem_raw[];
  bf16 *Ks, *Vs;
  const bf16* base = stage_kv<HD>(qkv, N, D, smem_raw, Ks, Vs);
  const int b = blockIdx.z, h = blockIdx.y, warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const int g = lane >> 2, t = lane & 3;
  const int r0 = blockIdx.x * 16 * W + warp * 16;
  const int64_t ld3 = 3 * int64_t(D);
  uint32_t qa[HD / 16][4];
  load_a_global<HD>(qa, base, ld3, r0, N);
  const bool active = r0 < N;  // idle warps of the last block still take part in the barriers
  const int NC = (NP + kChunkRows - 1) / kChunkRows;

  float o[HD / 8][4];
#pragma unroll
  for (int dt = 0; dt < HD / 8; ++dt) o[dt][0] = o[dt][1] = o[dt][2] = o[dt][3] = 0.f;
  float mrow[2] = {-INFINITY, -INFINITY}, lrow[2] = {0.f, 0.f};  // rows g, g + 8 (this lane's part of l)
  for (int c = 0; c < NP; c += 64) {
    wait_chunk(c / 64, NC);
    if (!active) continue;
    const int nsub = min(4, (NP - c) / 16);
    float s[8][4];
    mma_abt<HD, 4>(s, qa, Ks + c * LD, nsub);
    float cmax[2] = {-INFINITY, -INFINITY};
#pragma unroll
    for (int nt = 0; nt < 8; ++nt) {
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const int key = c + nt * 8 + 2 * t + (e & 1);
        const float v = key < N ? s[nt][e] * scale_log2 : -INFINITY;
        s[nt][e] = v;
        cmax[e >> 1] = fmaxf(cmax[e >> 1], v);
      }
    }
    float corr[2];
#pragma unroll
    for (int i = 0; i < 2; ++i) {
      const float mnew = fmaxf(mrow[i], quad_max(cmax[i]));  // finite: key c < N is in this chunk
      corr[i] = exp2f(mrow[i] - mnew);
      mrow[i] = mnew;
      lrow[i] *= corr[i];
    }
#pragma unroll
    for (int dt = 0; dt < HD / 8; ++dt) {
      o[dt][0] *= corr[0];
      o[dt][1] *= corr[0];
      o[dt][2] *= corr[1];
      o[dt][3] *= corr[1];
    }
#pragma unroll
    for (int nt = 0; nt < 8; ++nt) {
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const float p = exp2f(s[nt][e] - mrow[e >> 1]);  // masked keys: exp2(-inf) = 0
        s[nt][e] = p;
        lrow[e >> 1] += p;
      }
    }
    uint32_t pa[4][4];
#pragma unroll
    for (int j = 0; j < 4; ++j) to_a(pa[j], s[2 * j], s[2 * j + 1]);
    mma_pr<HD, 4>(o, pa, Vs + c * LD, nsub);
  }
  if (!active) return;
  const float l0 = quad_sum(lrow[0]), l1 = quad_sum(lrow[1]);
  store_rows<HD>(o, 1.f / l0, 1.f / l1, out + int64_t(b) * N * D + h * HD, D, r0, N);
  if (t == 0) {
    float* lrow_out = lse + (int64_t(b) * H + h) * N;
    if (r0 + g < N) lrow_out[r0 + g] = (mrow[0] + log2f(l0)) * kLn2;
    if (r0 + g + 8 < N) lrow_out[r0 + g + 8] = (mrow[1] + log2f(l1)) * kLn2;
  }
}

// dk, dv. grid (ceil(N / (16 W)), H, B), a warp per 16 keys. smem: Q, dout of the (image, head), and
// lse * log2 e, Dv per query.
// Also stores dS^T of the (image, head) to dst, bf16, (keys < N) x (pad16(N) queries), row-major,
// for the dq kernel, which reads it instead of recomputing S and dP (attn_bwd_dq_ds_kernel).
template <int HD, int W, int NS, int MINB>
__global__ void __launch_bounds__(32 * W, MINB)
    attn_bwd_dkv_mma_kernel(int N, int D, int H, float scale, float scale_log2, const bf16* __restrict__ qkv,
                            const float* __restrict__ lse, const bf16* __restrict__ dout,
                            const float* __restrict__ dvec, bf16* __restrict__ dqkv, bf16* __restrict__ dst) {
  constexpr int LD = ld_smem<HD>();
  const int NP = pad16(N);
  extern __shared__ __align__(128) unsigned char smem_raw[];
  bf16* Qs = reinterpret_cast<bf16*>(smem_raw);
  bf16* Gs = Qs + NP * LD;
  // Per query, over whole 64-chunks (the unused subtiles of the last chunk read them too):
  const int NC = (N + 63) / 64 * 64;
  float* L2s = reinterpret_cast<float*>(Gs + NP * LD);  // NC: lse * log2 e (+inf past N)
  float* Ds = L2s + NC;                                 // NC: Dv (0 past N)
  const int b = blockIdx.z, h = blockIdx.y, warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const int t = lane & 3;
  const int r0 = blockIdx.x * 16 * W + warp * 16;
  const int64_t ld3 = 3 * int64_t(D);
  const bf16* base = qkv + int64_t(b) * N * ld3 + h * HD;
  stage_two_async<HD>(base, ld3, dout + int64_t(b) * N * D + h * HD, D, N, NP, Qs, Gs);
  const int64_t rowbase = (int64_t(b) * H + h) * N;
  for (int i = threadIdx.x; i < NC; i += blockDim.x) {
    L2s[i] = i < N ? lse[rowbase + i] * kLog2e : INFINITY;
    Ds[i] = i < N ? dvec[rowbase + i] : 0.f;
  }
  uint32_t ka[HD / 16][4], va[HD / 16][4];
  load_a_global<HD>(ka, base + D, ld3, r0, N);
  load_a_global<HD>(va, base + 2 * D, ld3, r0, N);
  const bool active = r0 < N;  // idle warps of the last block still take part in the barriers
  const int NCH = (NP + kChunkRows - 1) / kChunkRows;

  float dk[HD / 8][4], dvacc[HD / 8][4];
#pragma unroll
  for (int dt = 0; dt < HD / 8; ++dt) {
    dk[dt][0] = dk[dt][1] = dk[dt][2] = dk[dt][3] = 0.f;
    dvacc[dt][0] = dvacc[dt][1] = dvacc[dt][2] = dvacc[dt][3] = 0.f;
  }
  for (int c = 0; c < NP; c += 16 * NS) {
    if (c % kChunkRows == 0) wait_chunk(c / kChunkRows, NCH);  // (also publishes L2s / Ds)
    if (!active) continue;
    const int nsub = min(NS, (NP - c) / 16);
    float st[2 * NS][4], dpt[2 * NS][4];  // S^T, dP^T: rows = this warp's keys, columns = queries
    mma_abt<HD, NS>(st, ka, Qs + c * LD, nsub);
    mma_abt<HD, NS>(dpt, va, Gs + c * LD, nsub);
#pragma unroll
    for (int nt = 0; nt < 2 * NS; ++nt) {
      const int q = c + nt * 8 + 2 * t;  // columns q, q + 1 (< NC)
      const float2 l2 = *reinterpret_cast<const float2*>(L2s + q);
      const float2 dd = *reinterpret_cast<const float2*>(Ds + q);
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const float p = exp2f(st[nt][e] * scale_log2 - ((e & 1) ? l2.y : l2.x));  // 0 past N
        st[nt][e] = p;
        dpt[nt][e] = p * (dpt[nt][e] - ((e & 1) ? dd.y : dd.x));
      }
    }
    uint32_t pa[NS][4], dsa[NS][4];
#pragma unroll
    for (int j = 0; j < NS; ++j) {
      to_a(pa[j], st[2 * j], st[2 * j + 1]);
      to_a(dsa[j], dpt[2 * j], dpt[2 * j + 1]);
    }
    {  // the A fragments of dS^T as they are: (key g / g + 8, queries 2t, 2t + 1 (+8))
      const int lane = threadIdx.x & 31, g = lane >> 2;
      bf16* rowa =
          dst + (int64_t(blockIdx.z) * H + blockIdx.y) * int64_t(N) * NP + int64_t(r0 + g) * NP + c + 2 * t;
      bf16* rowb = rowa + 8 * NP;
      const bool oka = r0 + g < N, okb = r0 + g + 8 < N;
#pragma unroll
      for (int j = 0; j < NS; ++j) {
        if (j < nsub) {
          if (oka) {
            *reinterpret_cast<uint32_t*>(rowa + 16 * j) = dsa[j][0];
            *reinterpret_cast<uint32_t*>(rowa + 16 * j + 8) = dsa[j][2];
          }
          if (okb) {
            *reinterpret_cast<uint32_t*>(rowb + 16 * j) = dsa[j][1];
            *reinterpret_cast<uint32_t*>(rowb + 16 * j + 8) = dsa[j][3];
          }
        }
      }
    }
    mma_pr<HD, NS>(dvacc, pa, Gs + c * LD, nsub);
    mma_pr<HD, NS>(dk, dsa, Qs + c * LD, nsub);
  }
  if (!active) return;
  bf16* dbase = dqkv + int64_t(b) * N * ld3 + h * HD;
  store_rows<HD>(dk, scale, scale, dbase + D, ld3, r0, N);
  store_rows<HD>(dvacc, 1.f, 1.f, dbase + 2 * D, ld3, r0, N);
}

// Row terms Dv_i = dout_i . out_i for every (image, row, head): one thread each, fp32 sums over
// the head's HD channels in order (16-byte loads). Before the dk/dv kernel, which reads them.
template <int HD>
__global__ void attn_bwd_dvec_kernel(int64_t rows, int N, int D, int H, const bf16* __restrict__ out,
                                     const bf16* __restrict__ dout, float* __restrict__ dvec) {
  const int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;  // (b * N + n) * H + h
  if (i >= rows * H) return;
  const int h = int(i % H);
  const int64_t bn = i / H, b = bn / N, n = bn % N;
  const bf16* o = out + bn * D + h * HD;
  const bf16* g = dout + bn * D + h * HD;
  float sum = 0.f;
#pragma unroll
  for (int c = 0; c < HD; c += 8) {
    const uint4 ov = *reinterpret_cast<const uint4*>(o + c), gv = *reinterpret_cast<const uint4*>(g + c);
    const uint32_t ow[4] = {ov.x, ov.y, ov.z, ov.w}, gw[4] = {gv.x, gv.y, gv.z, gv.w};
#pragma unroll
    for (int k = 0; k < 4; ++k)
      sum += vecio::bf16_lo(gw[k]) * vecio::bf16_lo(ow[k]) + vecio::bf16_hi(gw[k]) * vecio::bf16_hi(ow[k]);
  }
  dvec[(b * H + h) * N + n] = sum;
}

// dq = scale dS K from the dS^T the dk/dv kernel stored (no recomputation of S and dP). grid
// (ceil(N / (16 W)), H, B), a warp per 16 queries. smem: K of the (image, head) (pad16(N) x HD + 8)
// and the block's 16 W query columns of dS^T for all keys (pad16(N) x 16 W + 8; keys >= N zero),
// both cp.async in 64-key chunks. dS A fragments come from dS^T with ldmatrix.trans.
template <int HD, int W, int NS>
__global__ void __launch_bounds__(32 * W)
    attn_bwd_dq_ds_kernel(int N, int D, int H, float scale, const bf16* __restrict__ qkv,
                          const bf16* __restrict__ dst, bf16* __restrict__ dqkv) {
  constexpr int LD = ld_smem<HD>();
  constexpr int QB = 16 * W;  // queries per block
  constexpr int LDS = QB + 8;
  const int NP = pad16(N);
  extern __shared__ __align__(128) unsigned char smem_raw[];
  bf16* Ks = reinterpret_cast<bf16*>(smem_raw);
  bf16* Ss = Ks + NP * LD;
  const int b = blockIdx.z, h = blockIdx.y, warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const int q0 = blockIdx.x * QB;
  const int r0 = q0 + warp * 16;
  const int64_t ld3 = 3 * int64_t(D);
  const bf16* kbase = qkv + int64_t(b) * N * ld3 + D + h * HD;
  // dS^T rows of this (image, head), columns from q0 (the buffer has slack past its last row).
  const bf16* sbase = dst + (int64_t(b) * H + h) * int64_t(N) * NP + q0;
  for (int c = 0; c < NP; c += kChunkRows) {
    const int e = min(c + kChunkRows, NP);
    stage_rows_async<HD>(kbase, ld3, N, c, e, Ks);
    {
      constexpr int V = QB / 8;
      for (int idx = c * V + threadIdx.x; idx < e * V; idx += blockDim.x) {
        const int r = idx / V, cc = idx - r * V;
        const bool ok = r < N && q0 + cc * 8 < NP;
        mma::cp_async16(smem_addr(Ss + r * LDS + cc * 8), sbase + int64_t(ok ? r : 0) * NP + (ok ? cc * 8 : 0),
                        ok ? 16 : 0);
      }
    }
    mma::cp_async_commit();
  }
  const bool active = r0 < N;
  const int NC = (NP + kChunkRows - 1) / kChunkRows;
  float dq[HD / 8][4];
#pragma unroll
  for (int dt = 0; dt < HD / 8; ++dt) dq[dt][0] = dq[dt][1] = dq[dt][2] = dq[dt][3] = 0.f;
  // ldmatrix.trans of the stored dS^T block (keys k.. k+15, queries of this warp): matrix m of the
  // x4 is keys +8 (m >> 1), queries +8 (m & 1), which transposed are a[0..3] of dS's A fragment.
  const int m = lane >> 3, rr = lane & 7;
  const bf16* lane_row = Ss + ((m >> 1) * 8 + rr) * LDS + warp * 16 + (m & 1) * 8;
  for (int c = 0; c < NP; c += 16 * NS) {
    if (c % kChunkRows == 0) wait_chunk(c / kChunkRows, NC);
    if (!active) continue;
    const int nsub = min(NS, (NP - c) / 16);
    uint32_t dsa[NS][4];
#pragma unroll
    for (int j = 0; j < NS; ++j)
      if (j < nsub) ldsm_x4_trans(dsa[j], smem_addr(lane_row + (c + 16 * j) * LDS));
    mma_pr<HD, NS>(dq, dsa, Ks + c * LD, nsub);
  }
  if (!active) return;
  store_rows<HD>(dq, scale, scale, dqkv + int64_t(b) * N * ld3 + h * HD, ld3, r0, N);
}

template <typename K>
void set_smem(K kernel, std::size_t bytes) {
  if (bytes > 48 * 1024)
    KAT_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, int(bytes)));
}

// Grid (ceil(N / (16 W)), H, B); a single row block per (image, head) gets only the warps it uses.
// (Measured and dropped, 2026-11-30: one 13-warp block per (image, head) at N = 197, K/V staged
// once instead of twice: forward 107 vs 100 us; the backward kernels forced to 2 blocks per SM
// (<= 128 registers, with spills): kat_tiny train 16,346 vs 17,860 img/s.)
template <int W>
std::pair<dim3, int> row_blocks(int64_t B, int N, int H) {
  const unsigned gx = unsigned((N + 16 * W - 1) / (16 * W));
  const int threads = gx == 1 ? 32 * std::min(W, (N + 15) / 16) : 32 * W;
  return {dim3(gx, unsigned(H), unsigned(B)), threads};
}

template <int HD, int W>
void launch_forward_w(int64_t B, int N, int D, int H, float scale, const void* qkv, void* out, float* lse,
                      cudaStream_t s) {
  const auto [grid, threads] = row_blocks<W>(B, N, H);
  const std::size_t smem = two_operand_smem<HD>(N);
  set_smem(attn_fwd_mma_kernel<HD, W>, smem);
  attn_fwd_mma_kernel<HD, W><<<grid, threads, smem, s>>>(N, D, H, scale * kLog2e, static_cast<const bf16*>(qkv),
                                                         static_cast<bf16*>(out), lse);
  KAT_CUDA_CHECK_LAUNCH();
}

// Backward: row terms Dv, then dk/dv (which also stores dS^T), then dq = scale dS K from it.
template <int HD, int W, int DKV_NS, int DKV_MINB>
void launch_backward_w(int64_t B, int N, int D, int H, float scale, const void* qkv, const void* out,
                       const float* lse, const void* dout, void* dqkv, float* dvec, void* ds_buf, cudaStream_t s) {
  const auto [grid, threads] = row_blocks<W>(B, N, H);
  const auto* q = static_cast<const bf16*>(qkv);
  const auto* g = static_cast<const bf16*>(dout);
  auto* dq = static_cast<bf16*>(dqkv);
  auto* dst = static_cast<bf16*>(ds_buf);
  const int64_t n_terms = B * N * H;
  attn_bwd_dvec_kernel<HD>
      <<<unsigned((n_terms + 255) / 256), 256, 0, s>>>(B * N, N, D, H, static_cast<const bf16*>(out), g, dvec);
  KAT_CUDA_CHECK_LAUNCH();
  const std::size_t smem2 = two_operand_smem<HD>(N) + std::size_t(2) * ((N + 63) / 64 * 64) * sizeof(float);
  const auto dkv_kernel = attn_bwd_dkv_mma_kernel<HD, W, DKV_NS, DKV_MINB>;
  set_smem(dkv_kernel, smem2);
  dkv_kernel<<<grid, threads, smem2, s>>>(N, D, H, scale, scale * kLog2e, q, lse, g, dvec, dq, dst);
  KAT_CUDA_CHECK_LAUNCH();
  const std::size_t smem3 = std::size_t(pad16(N)) * (ld_smem<HD>() + 16 * W + 8) * sizeof(bf16);
  const auto dq_kernel = attn_bwd_dq_ds_kernel<HD, W, 4>;
  set_smem(dq_kernel, smem3);
  dq_kernel<<<grid, threads, smem3, s>>>(N, D, H, scale, q, dst, dq);
  KAT_CUDA_CHECK_LAUNCH();
}

template <int HD>
void launch_forward(int64_t B, int N, int D, int H, float scale, const void* qkv, void* out, float* lse,
                    cudaStream_t s) {
  launch_forward_w<HD, kWarpsPerBlock>(B, N, D, H, scale, qkv, out, lse, s);
}

template <int HD>
void launch_backward(int64_t B, int N, int D, int H, float scale, const void* qkv, const void* out,
                     const float* lse, const void* dout, void* dqkv, float* dvec, void* ds_buf, cudaStream_t s) {
  // dk/dv at 64-query steps and 210 registers (1 block of 8 warps per SM). Measured alternatives
  // (H200, kat_tiny b256): 32-query steps (164 registers, still 1 block) no faster; held to 128
  // registers (176 B of spills) within noise.
  launch_backward_w<HD, kWarpsPerBlock, 4, 1>(B, N, D, H, scale, qkv, out, lse, dout, dqkv, dvec, ds_buf, s);
}

}  // namespace

bool attention_mma_supported(int64_t hd) { return hd == 16 || hd == 32 || hd == 48 || hd == 64; }

void attention_mma_forward(int64_t B, int64_t N, int64_t D, int64_t H, const void* qkv, void* out, float* lse,
                           cudaStream_t stream) {
  const int hd = int(D / H);
  KAT_CHECK(attention_mma_supported(hd), "attention: no tensor-core path for head dim ", hd);
  KAT_CHECK(reinterpret_cast<uintptr_t>(qkv) % 16 == 0 && D % 8 == 0,
            "attention: tensor-core path needs 16-byte rows");
  const float scale = 1.0f / std::sqrt(float(hd));
  switch (hd) {
    case 16: launch_forward<16>(B, int(N), int(D), int(H), scale, qkv, out, lse, stream); break;
    case 32: launch_forward<32>(B, int(N), int(D), int(H), scale, qkv, out, lse, stream); break;
    case 48: launch_forward<48>(B, int(N), int(D), int(H), scale, qkv, out, lse, stream); break;
    default: launch_forward<64>(B, int(N), int(D), int(H), scale, qkv, out, lse, stream); break;
  }
}

void attention_mma_backward(int64_t B, int64_t N, int64_t D, int64_t H, const void* qkv, const void* out,
                            const float* lse, const void* dout, void* dqkv, float* dvec, void* ds_buf,
                            cudaStream_t stream) {
  const int hd = int(D / H);
  KAT_CHECK(attention_mma_supported(hd), "attention: no tensor-core path for head dim ", hd);
  KAT_CHECK(reinterpret_cast<uintptr_t>(qkv) % 16 == 0 && reinterpret_cast<uintptr_t>(dout) % 16 == 0 &&
                reinterpret_cast<uintptr_t>(out) % 16 == 0 && D % 8 == 0,
            "attention: tensor-core path needs 16-byte rows");
  const float scale = 1.0f / std::sqrt(float(hd));
  switch (hd) {
    case 16:
      launch_backward<16>(B, int(N), int(D), int(H), scale, qkv, out, lse, dout, dqkv, dvec, ds_buf, stream);
      break;
    case 32:
      launch_backward<32>(B, int(N), int(D), int(H), scale, qkv, out, lse, dout, dqkv, dvec, ds_buf, stream);
      break;
    case 48:
      launch_backward<48>(B, int(N), int(D), int(H), scale, qkv, out, lse, dout, dqkv, dvec, ds_buf, stream);
      break;
    default:
      launch_backward<64>(B, int(N), int(D), int(H), scale, qkv, out, lse, dout, dqkv, dvec, ds_buf, stream);
      break;
  }
}

}  // namespace kat::cuda
