// GR-KAN CUDA kernels. Contract in ops/cuda/grkan.h, math in ops/grkan.h.
//
// Work mapping. Each thread owns one fixed "column vector": VEC consecutive channels of one
// group (16 bytes: 8 bf16 or 4 fp32; VEC = 1 on the scalar fallback), and walks the rows with a
// stride of R rows. The T = Vr * R active threads (Vr = D / VEC vectors per row) therefore read
// x/dy as one contiguous, coalesced stream of 16-byte accesses (thread t reads vector t, t + T,
// t + 2T, ...), and every thread sees one group only: its coefficients live in registers, and its
// gradient partials are 10 registers (degrees 5, 4) instead of 10 per group.
//
// Backward reduction (deterministic: fixed summation order, no atomics), two kernels:
//   stage 1: each warp reduces its lanes' partials per column (An*(m+1) + G*n columns: rows of a,
//            groups of b) with xor-shuffle butterflies, the block sums its warps in order through
//            shared memory and writes one row of the column-major partial table ws[col][block];
//   stage 2: one block per column sums the blocks' partials in a fixed order (in double) and adds
//            the result to da/db.
// (Measured alternatives, bench/records/GRKAN_CUDA.md: one table row per warp instead of per block cost
// 2-4 us per backward in stores and stage-2 reads; the final sums done by the last block of stage
// 1 (atomic ticket) instead of stage 2 cost 4 us more, the PDL-overlapped stage 2 only 0.4 us.)
// All kernels are launched with programmatic dependent launch, so a launch's latency hides behind
// the previous kernel's tail; griddepcontrol.wait at each kernel's start waits for the previous
// grid's completion and memory flush, so correctness does not depend on timing.
// The stage-1 grid is fixed: kBwdBlocksPerSM<S> blocks per multiprocessor at most, R chosen from the
// row count, so the summation order depends only on the shape and the device's SM count.
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <atomic>
#include <cstdint>

#include "kat/core/error.h"
#include "ops/cuda/column_sum.h"  // column_sum_accumulate (dx_colsum outside the fused cases)
#include "ops/cuda/cuda_check.h"
#include "ops/cuda/grkan.h"
#include "ops/cuda/launch.cuh"
#include "ops/cuda/vec_io.cuh"

namespace kat::cuda {
using namespace detail;
namespace {
using namespace vecio;

using kat::ops::GrkanShape;

// Tunables (the measured best, bench/records/GRKAN_CUDA.md; variants are benchmarked by editing these).
// Forward: row vectors in flight per thread and trip.
// Backward: rows in flight per thread and trip (U), stage-1 blocks per SM (launch bounds), per
// element type. bf16 is issue-bound (~46 instructions per element against 6 bytes; ncu: IPC 0.72
// per scheduler): U = 3 with 2 blocks (128 registers) and U = 2 with 3 blocks (80) keep enough
// loads in flight, U = 1 with 4 blocks (64) does not (+3 us). fp32 moves twice the bytes for the
// same work and runs at ~93% of the copy bandwidth with 4 blocks of U = 1 (64 registers).
// F16 (the Python op's fp16) moves the bytes of bf16 with the same instruction count plus the
// half conversions, so it takes bf16's settings (not separately tuned).
constexpr int kThreads = 256;  // threads per block of the element kernels
constexpr int kWarps = kThreads / 32;
constexpr int kMaxDeg = kat::ops::GrkanShape::kMaxDegree;  // the shared limit
constexpr int kChunk = 128;                                // partial-table columns per pass of the block reduction
constexpr int kFwdUnroll = 2;                              // row vectors in flight per thread and trip
template <DType S>
constexpr int kBwdUnroll = S == DType::F32 ? 1 : 3;
template <DType S>
constexpr int kBwdBlocksPerSM = S == DType::F32 ? 4 : 2;
constexpr int kFwdMaxBlocksPerSM = 8;

struct Params {
  int64_t rows;
  int64_t row_slots;  // R: rows processed concurrently (thread t handles rows t/Vr + k*R)
  int dim;            // D
  int dg;             // D / G
  int vr;             // D / VEC
  int groups;         // G
  int an;             // numerator rows (1 or G)
  int m, n;           // runtime degrees (<= the kernel's template degrees, which zero-pad)
  int ncols;          // coefficient columns of the partial table: an*(m+1) + G*n
  // CS kernels: the table's columns ncols .. ncols + D - 1 hold the column sums of dx.
};

// ---- element access -----------------------------------------------------------------------

template <DType S, int VEC>
__device__ __forceinline__ Raw<S, VEC> load_raw(const void* base, int64_t off) {
  if constexpr (S == DType::F32) {
    return __ldg(reinterpret_cast<const Raw<S, VEC>*>(static_cast<const float*>(base) + off));
  } else {
    return __ldg(reinterpret_cast<const Raw<S, VEC>*>(static_cast<const unsigned short*>(base) + off));
  }
}

// 1/q for q >= 1: MUFU.RCP, within 1 ulp.
__device__ __forceinline__ float rcp_approx(float q) {
  float r;
  asm("rcp.approx.ftz.f32 %0, %1;" : "=f"(r) : "f"(q));
  return r;
}

// Per-thread coefficients of its group (M + 1 + N registers). M, N: template degrees;
// coefficients past the runtime degrees are zero, which leaves P, Q and their derivatives
// unchanged for finite x.
template <int M, int N>
struct Coef {
  float a[M + 1];   // a_k
  float bb[N + 1];  // |b_{k+1}|  (bb[N] unused)

  __device__ __forceinline__ void load(const float* ga, const float* gb, const Params& p, int g) {
    const int arow = p.an == 1 ? 0 : g;
#pragma unroll
    for (int k = 0; k <= M; ++k) a[k] = k <= p.m ? __ldg(ga + arow * (p.m + 1) + k) : 0.f;
#pragma unroll
    for (int k = 0; k < N; ++k) bb[k] = k < p.n ? fabsf(__ldg(gb + g * p.n + k)) : 0.f;
    bb[N] = 0.f;
  }

  // P(x) by Horner.
  __device__ __forceinline__ float P(float v) const {
    float r = a[M];
#pragma unroll
    for (int k = M - 1; k >= 0; --k) r = fmaf(r, v, a[k]);
    return r;
  }
  // P(x) and P'(x) together (Horner with synthetic division): M + (M-1) FMAs, no extra
  // coefficient registers.
  __device__ __forceinline__ void PdP(float v, float& P, float& R) const {
    if constexpr (M == 0) {
      P = a[0];
      R = 0.f;
    } else {
      R = a[M];
      P = fmaf(a[M], v, a[M - 1]);
#pragma unroll
      for (int k = M - 2; k >= 0; --k) {
        R = fmaf(R, v, P);
        P = fmaf(P, v, a[k]);
      }
    }
  }
  // Q = 1 + |x| Qm(|x|), Qm(t) = sum_k |b_{k+1}| t^k.
  __device__ __forceinline__ float Q(float av) const {
    if constexpr (N == 0) {
      return 1.f;
    } else {
      float r = bb[N - 1];
#pragma unroll
      for (int k = N - 2; k >= 0; --k) r = fmaf(r, av, bb[k]);
      return fmaf(r, av, 1.f);
    }
  }
  // Q and Sm = S / sign(x) = d(|x| Qm)/d|x| = Qm + |x| Qm'.
  __device__ __forceinline__ void QS(float av, float& Q, float& Sm) const {
    if constexpr (N == 0) {
      Q = 1.f;
      Sm = 0.f;
    } else if constexpr (N == 1) {
      Q = fmaf(bb[0], av, 1.f);
      Sm = bb[0];
    } else {
      float d = bb[N - 1];
      float q = fmaf(bb[N - 1], av, bb[N - 2]);
#pragma unroll
      for (int k = N - 3; k >= 0; --k) {
        d = fmaf(d, av, q);
        q = fmaf(q, av, bb[k]);
      }
      Q = fmaf(q, av, 1.f);
      Sm = fmaf(d, av, q);
    }
  }
};

// ---- programmatic dependent launch ----------------------------------------------------------
// Every kernel here is launched with programmatic stream serialization (launch.cuh), so its
// launch overlaps the tail of the kernel before it in the stream. Each kernel executes
// griddepcontrol.wait before its first global memory access: that waits until the preceding
// grid has completed and its writes are visible, i.e. ordinary stream order for all data.
// launch_dependents lets the next kernel be scheduled early (it then waits the same way).

// ---- forward ------------------------------------------------------------------------------
// Software pipeline: the U raw vectors of the next trip are loaded before the current U are
// computed, so every warp keeps loads in flight while it computes.

template <DType S, int VEC, int M, int N>
__global__ void __launch_bounds__(kThreads)
    grkan_fwd_kernel(const void* __restrict__ x, void* __restrict__ y, const float* __restrict__ ga,
                     const float* __restrict__ gb, Params p) {
  constexpr int U = kFwdUnroll;
  griddep_wait();
  griddep_launch_dependents();
  const int64_t t = static_cast<int64_t>(blockIdx.x) * kThreads + threadIdx.x;
  if (t >= static_cast<int64_t>(p.vr) * p.row_slots) return;
  const int col = static_cast<int>(t % p.vr);
  const int64_t slot = t / p.vr;
  const int c0 = col * VEC;
  const int g = c0 / p.dg;  // (D/G) % VEC == 0: the vector lies in one group
  Coef<M, N> cf;
  cf.load(ga, gb, p, g);

  const int64_t R = p.row_slots;
  const int64_t step = R * p.dim;  // elements between a thread's consecutive rows
  int64_t off = slot * p.dim + c0;
  Raw<S, VEC> cur[U], nxt[U];
#pragma unroll
  for (int u = 0; u < U; ++u) {
    cur[u] = nxt[u] = Raw<S, VEC>{};
    if (slot + u * R < p.rows) cur[u] = load_raw<S, VEC>(x, off + u * step);
  }
  for (int64_t r = slot; r < p.rows; r += U * R, off += U * step) {
#pragma unroll
    for (int u = 0; u < U; ++u)
      if (r + (U + u) * R < p.rows) nxt[u] = load_raw<S, VEC>(x, off + (U + u) * step);
#pragma unroll
    for (int u = 0; u < U; ++u) {
      if (r + u * R < p.rows) {
        float v[VEC], o[VEC];
        unpack<S, VEC>(cur[u], v);
#pragma unroll
        for (int e = 0; e < VEC; ++e) o[e] = cf.P(v[e]) * rcp_approx(cf.Q(fabsf(v[e])));
        store_vec<S, VEC>(y, off + u * step, o);
      }
    }
#pragma unroll
    for (int u = 0; u < U; ++u) cur[u] = nxt[u];
  }
}

// ---- backward -----------------------------------------------------------------------------

// CS: also the column sums of dx (the bias gradient of the linear layer that produced x), VEC
// more accumulators per thread and D more columns in the partial table.
template <DType S, int VEC, int M, int N, bool CS>
__global__ void __launch_bounds__(kThreads, kBwdBlocksPerSM<S>)
    grkan_bwd_kernel(const void* x, const void* dy, void* dx, const float* __restrict__ ga,
                     const float* __restrict__ gb, float* __restrict__ partial, Params p) {
  constexpr int U = kBwdUnroll<S>;
  constexpr int NL = M + 1 + N;  // local partial columns: da_0..da_M, db_1..db_N
  constexpr int NCS = CS ? VEC : 1;
  float csum[NCS];  // column sums of this thread's dx (fp32, before the storage rounding)
#pragma unroll
  for (int e = 0; e < NCS; ++e) csum[e] = 0.f;

  griddep_wait();
  griddep_launch_dependents();

  const int64_t t = static_cast<int64_t>(blockIdx.x) * kThreads + threadIdx.x;
  float acc[NL];
#pragma unroll
  for (int i = 0; i < NL; ++i) acc[i] = 0.f;
  int g = -1;

  if (t < static_cast<int64_t>(p.vr) * p.row_slots) {
    const int col = static_cast<int>(t % p.vr);
    const int64_t slot = t / p.vr;
    const int c0 = col * VEC;
    g = c0 / p.dg;
    Coef<M, N> cf;
    cf.load(ga, gb, p, g);

    const int64_t R = p.row_slots;
    const int64_t step = R * p.dim;
    int64_t off = slot * p.dim + c0;
    Raw<S, VEC> cx[U], cg[U], nx[U], ng[U];
#pragma unroll
    for (int u = 0; u < U; ++u) {
      cx[u] = cg[u] = nx[u] = ng[u] = Raw<S, VEC>{};
      if (slot + u * R < p.rows) {
        cx[u] = load_raw<S, VEC>(x, off + u * step);
        cg[u] = load_raw<S, VEC>(dy, off + u * step);
      }
    }
    for (int64_t r = slot; r < p.rows; r += U * R, off += U * step) {
      // Prefetch the next trip. (dx may alias dy: these are other rows than the ones stored
      // below, and each element is loaded before it is overwritten.)
#pragma unroll
      for (int u = 0; u < U; ++u) {
        if (r + (U + u) * R < p.rows) {
          nx[u] = load_raw<S, VEC>(x, off + (U + u) * step);
          ng[u] = load_raw<S, VEC>(dy, off + (U + u) * step);
        }
      }
#pragma unroll
      for (int u = 0; u < U; ++u) {
        if (r + u * R < p.rows) {
          float v[VEC], gy[VEC], o[VEC];
          unpack<S, VEC>(cx[u], v);
          unpack<S, VEC>(cg[u], gy);
#pragma unroll
          for (int e = 0; e < VEC; ++e) {
            const float xv = v[e], av = fabsf(xv);
            float P, Rd, Q, Sm;
            cf.PdP(xv, P, Rd);
            cf.QS(av, Q, Sm);
            const float iq = rcp_approx(Q);
            const float F = P * iq;               // P / Q
            const float gq = gy[e] * iq;          // g / Q
            const float sF = xv >= 0.f ? F : -F;  // sign(x) F, sign(0) = +1
            o[e] = gq * fmaf(-Sm, sF, Rd);        // g (R Q - S P) / Q^2 = g/Q (R - S F)
            if constexpr (CS) csum[e] += o[e];
            // Powers x^k by squaring; |x|^(2j) = x^(2j), |x|^(2j+1) = |x| x^(2j).
            constexpr int K = M > N ? M : N;
            float xp[K + 1], ap[K + 1];
            xp[0] = ap[0] = 1.f;
#pragma unroll
            for (int k = 1; k <= K; ++k) {
              xp[k] = k == 1 ? xv : xp[k / 2] * xp[k - k / 2];
              ap[k] = (k % 2 == 0) ? xp[k] : (k == 1 ? av : av * xp[k - 1]);
            }
            // da_k += g/Q x^k
            acc[0] += gq;
#pragma unroll
            for (int k = 1; k <= M; ++k) acc[k] = fmaf(gq, xp[k], acc[k]);
            // db_k += (-g P / Q^2) |x|^k  (sign(b_k) is applied in stage 2)
            const float w = gq * F;
#pragma unroll
            for (int k = 1; k <= N; ++k) acc[M + k] = fmaf(-w, ap[k], acc[M + k]);
          }
          store_vec<S, VEC>(dx, off + u * step, o);
        }
      }
#pragma unroll
      for (int u = 0; u < U; ++u) {
        cx[u] = nx[u];
        cg[u] = ng[u];
      }
    }
  }

  // Coefficient-gradient reduction, deterministic (fixed order, no atomics):
  //  1. warp: xor-shuffle butterflies per column (lanes of other groups contribute 0);
  //  2. block: the kWarps warp values of each column summed in warp order through shared memory;
  //     one row per block of the column-major partial table, partial[col * gridDim.x + block];
  //  3. grkan_bwd_stage2 sums each column over the blocks and adds it to da/db.
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  const unsigned full = 0xffffffffu;
  const int na = p.an * (p.m + 1);
  __shared__ float s_part[kWarps][kChunk];
  auto butterfly = [&](float v) {
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(full, v, o);
    return v;
  };
  const unsigned present = __ballot_sync(full, g >= 0);
  // Columns [c0, c1) per pass: one pass unless the table is wider than kChunk (G * 17 > 128).
  for (int c0 = 0; c0 < p.ncols; c0 += kChunk) {
    const int c1 = min(p.ncols, c0 + kChunk);
    for (int i = threadIdx.x; i < kWarps * kChunk; i += kThreads) (&s_part[0][0])[i] = 0.f;
    __syncthreads();
    // Warp-uniform: does column range [lo, lo + len) meet this pass?
    auto meets = [&](int lo, int len) { return lo < c1 && lo + len > c0; };
    auto put = [&](int col, float v) {
      if (lane == 0 && col >= c0 && col < c1) s_part[warp][col - c0] = v;
    };
    if (p.an == 1 && meets(0, p.m + 1)) {  // shared numerator: da_k sums every lane
#pragma unroll
      for (int k = 0; k <= M; ++k) {
        const float v = butterfly(acc[k]);
        if (k <= p.m) put(k, v);
      }
    }
    unsigned todo = present;  // groups present in this warp, by their first lane
    while (todo) {            // warp-uniform loop
      const int gg = __shfl_sync(full, g, __ffs(todo) - 1);
      const bool mine = g == gg;
      todo &= ~__ballot_sync(full, mine);
      if (p.an != 1 && meets(gg * (p.m + 1), p.m + 1)) {
#pragma unroll
        for (int k = 0; k <= M; ++k) {
          const float v = butterfly(mine ? acc[k] : 0.f);
          if (k <= p.m) put(gg * (p.m + 1) + k, v);
        }
      }
      if (meets(na + gg * p.n, p.n)) {
#pragma unroll
        for (int k = 0; k < N; ++k) {
          const float v = butterfly(mine ? acc[M + 1 + k] : 0.f);
          if (k < p.n) put(na + gg * p.n + k, v);
        }
      }
    }
    __syncthreads();
    for (int j = c0 + threadIdx.x; j < c1; j += kThreads) {
      float v = 0.f;
#pragma unroll
      for (int w = 0; w < kWarps; ++w) v += s_part[w][j - c0];
      partial[static_cast<int64_t>(j) * gridDim.x + blockIdx.x] = v;
    }
    __syncthreads();  // the next pass refills s_part
  }
  if constexpr (CS) {
    // dx column sums: the threads of this block that own column vector cv are tid0, tid0 + Vr,
    // ... (thread t owns vector t % Vr); summed in thread order through shared memory, one value
    // per column (0 for columns no thread of the block owns).
    __shared__ float s_cs[kThreads][VEC + 1];  // +1: no bank conflicts on the column reads
#pragma unroll
    for (int e = 0; e < VEC; ++e) s_cs[threadIdx.x][e] = csum[e];
    __syncthreads();
    const int64_t tb = static_cast<int64_t>(blockIdx.x) * kThreads;
    const int64_t active = static_cast<int64_t>(p.vr) * p.row_slots - tb;  // active threads of the block
    const int tb_mod = static_cast<int>(tb % p.vr);
    for (int c = threadIdx.x; c < p.dim; c += kThreads) {
      const int cv = c / VEC, e = c % VEC;
      float v = 0.f;
      for (int tid = (cv - tb_mod + p.vr) % p.vr; tid < kThreads && tid < active; tid += p.vr) v += s_cs[tid][e];
      partial[static_cast<int64_t>(p.ncols + c) * gridDim.x + blockIdx.x] = v;
    }
  }
}

// Stage 2: block j sums column j of the partial table (nrows contiguous floats, one per stage-1
// block) in a fixed order, in double: fixed per-thread strides, xor-shuffle trees, warps in order.
constexpr int kStage2Threads = 1024;
// Columns j >= ncoef (CS kernels): the dx column sums, added to dsum[j - ncoef].
__global__ void __launch_bounds__(kStage2Threads)
    grkan_bwd_stage2(const float* __restrict__ partial, int nrows, int na, int ncoef, const float* __restrict__ gb,
                     float* __restrict__ da, float* __restrict__ db, float* __restrict__ dsum, int accumulate) {
  const int j = blockIdx.x;
  // Coefficient sign and the old da/db value: no kernel between stage 1 and this one writes them,
  // and stage 1 started only after everything before it completed, so they can be read before
  // the wait (hides their latency).
  // accumulate == 0: the outputs are overwritten (their old content, maybe uninitialised, unread).
  float old = 0.f, sg = 1.f;
  if (threadIdx.x == 0) {
    if (j < na) {
      if (accumulate) old = da[j];
    } else if (j < ncoef) {
      if (accumulate) old = db[j - na];
      sg = gb[j - na] >= 0.f ? 1.f : -1.f;
    } else if (accumulate) {
      old = dsum[j - ncoef];
    }
  }
  griddep_wait();  // stage 1 complete and its writes visible
  __shared__ double s_w[kStage2Threads / 32];
  const float* col = partial + static_cast<int64_t>(j) * nrows;
  double sum = 0.0;
#pragma unroll 8
  for (int i = threadIdx.x; i < nrows; i += kStage2Threads) sum += static_cast<double>(col[i]);
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) sum += __shfl_xor_sync(0xffffffffu, sum, o);
  if (threadIdx.x % 32 == 0) s_w[threadIdx.x / 32] = sum;
  __syncthreads();
  if (threadIdx.x < 32) {
    double t = s_w[threadIdx.x];
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) t += __shfl_xor_sync(0xffffffffu, t, o);
    if (threadIdx.x == 0) {
      const float r = old + static_cast<float>(t * static_cast<double>(sg));
      if (j < na)
        da[j] = r;
      else if (j < ncoef)
        db[j - na] = r;
      else
        dsum[j - ncoef] = r;
    }
  }
}

// ---- host side ----------------------------------------------------------------------------

int current_device() {
  int dev = 0;
  KAT_CUDA_CHECK(cudaGetDevice(&dev));
  return dev;
}

// Resident blocks per SM of a forward kernel (occupancy query, cached per device).
template <typename Kernel>
int fwd_blocks_per_sm(Kernel kernel, std::atomic<int> (&cache)[64]) {
  const int dev = current_device();
  if (dev < 64) {
    const int c = cache[dev].load(std::memory_order_relaxed);
    if (c > 0) return c;
  }
  int nb = 0;
  KAT_CUDA_CHECK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&nb, kernel, kThreads, 0));
  nb = std::clamp(nb, 1, kFwdMaxBlocksPerSM);
  if (dev < 64) cache[dev].store(nb, std::memory_order_relaxed);
  return nb;
}

struct Plan {
  int vec = 1;
  int vr = 0;
  int64_t row_slots = 0;
  int blocks = 0;
};

// Fixed-size persistent grid: at most max_blocks blocks; R = row slots chosen so every thread
// makes the same number of trips up to one (ceil(rows / iters) with iters = ceil(rows / Rmax)).
Plan make_plan(int64_t rows, int dim, int vec, int max_blocks) {
  Plan pl;
  pl.vec = vec;
  pl.vr = dim / vec;
  if (rows <= 0) return pl;
  const int64_t max_threads = static_cast<int64_t>(max_blocks) * kThreads;
  const int64_t rmax = std::max<int64_t>(1, max_threads / pl.vr);
  const int64_t iters = (rows + rmax - 1) / rmax;
  pl.row_slots = (rows + iters - 1) / iters;
  const int64_t threads = pl.row_slots * pl.vr;
  pl.blocks = static_cast<int>((threads + kThreads - 1) / kThreads);
  return pl;
}

int storage_vec(DType st) { return vec_width(st); }

bool aligned16(const void* p) { return al16(p); }

bool specialised(const GrkanShape& s) { return s.m == 5 && s.n == 4; }

Params make_params(const GrkanShape& s, const Plan& pl) {
  Params p{};
  p.rows = s.rows;
  p.row_slots = pl.row_slots;
  p.dim = s.dim;
  p.dg = s.dim / s.groups;
  p.vr = pl.vr;
  p.groups = s.groups;
  p.an = s.num_rows;
  p.m = s.m;
  p.n = s.n;
  p.ncols = s.num_rows * (s.m + 1) + s.groups * s.n;
  return p;
}

// Vector width used for this call: 16-byte path when every channel group is a whole number of
// vectors and the pointers are 16-byte aligned, else scalar.
int choose_vec(const GrkanShape& s, DType st, bool ptrs_aligned) {
  const int vec = storage_vec(st);
  const int dg = s.dim / s.groups;
  return (dg % vec == 0 && ptrs_aligned) ? vec : 1;
}

// Per forward kernel: its resident blocks per SM, per device (fwd_blocks_per_sm's cache).
template <DType S, int VEC, int M, int N>
std::atomic<int> fwd_occupancy[64] = {};

template <DType S, int VEC, int M, int N>
void launch_fwd(const GrkanShape& s, const void* x, const float* a, const float* b, void* y, cudaStream_t stream) {
  const auto kernel = grkan_fwd_kernel<S, VEC, M, N>;
  const int max_blocks = sm_count() * fwd_blocks_per_sm(kernel, fwd_occupancy<S, VEC, M, N>);
  const Plan pl = make_plan(s.rows, s.dim, VEC, max_blocks);
  launch(kernel, dim3(unsigned(pl.blocks)), kThreads, 0, stream, x, y, a, b, make_params(s, pl));
}

int bwd_max_blocks(DType st) {
  return sm_count() * (st == DType::F32 ? kBwdBlocksPerSM<DType::F32> : kBwdBlocksPerSM<DType::BF16>);
}

// dsum (the dx column sums) is fused into the kernel for the model's case (degrees (5, 4), 16-byte
// vectors: CS kernels); any other call with dsum runs the plain kernel and then the column-sum
// kernel of gemm.cu over dx.
template <DType S, int VEC, int M, int N>
void launch_bwd(const GrkanShape& s, const void* x, const void* dy, const float* a, const float* b, void* dx,
                float* da, float* db, float* dsum, void* workspace, bool accumulate, cudaStream_t stream) {
  const Plan pl = make_plan(s.rows, s.dim, VEC, bwd_max_blocks(S));
  const Params p = make_params(s, pl);
  auto* partial = static_cast<float*>(workspace);
  constexpr bool kFusable = VEC > 1 && M == 5 && N == 4;
  const bool fused = kFusable && dsum != nullptr;
  if constexpr (kFusable) {
    if (fused)
      launch(grkan_bwd_kernel<S, VEC, M, N, true>, dim3(unsigned(pl.blocks)), kThreads, 0, stream, x, dy, dx, a, b,
             partial, p);
  }
  if (!fused)
    launch(grkan_bwd_kernel<S, VEC, M, N, false>, dim3(unsigned(pl.blocks)), kThreads, 0, stream, x, dy, dx, a, b,
           partial, p);
  launch(grkan_bwd_stage2, dim3(unsigned(p.ncols + (fused ? s.dim : 0))), kStage2Threads, 0, stream,
         static_cast<const float*>(partial), pl.blocks, s.num_rows * (s.m + 1), p.ncols, b, da, db, dsum,
         int(accumulate));
  if (dsum != nullptr && !fused) {
    // column_sum_accumulate adds: start from zero when the call overwrites.
    if (!accumulate) KAT_CUDA_CHECK(cudaMemsetAsync(dsum, 0, sizeof(float) * s.dim, stream));
    column_sum_accumulate(s.rows, s.dim, S, dx, dsum, workspace, stream);
  }
}

// The element types of the op: F32, BF16 and F16 (fp32 math for all).
void check_grkan_dtype(DType st, const char* where) {
  KAT_CHECK(st == DType::F32 || st == DType::BF16 || st == DType::F16, where, ": unknown element type");
}

// Calls fn(S, VEC, M, N) with std::integral_constant arguments: storage st, vector width `vec`
// (the 16-byte width of st, or 1), degrees (5, 4) when `spec`, else the generic
// (kMaxDeg, kMaxDeg) kernel.
template <typename Fn>
void dispatch(DType st, int vec, bool spec, Fn&& fn) {
  using std::integral_constant;
  auto degrees = [&](auto S, auto V) {
    if (spec)
      fn(S, V, integral_constant<int, 5>{}, integral_constant<int, 4>{});
    else
      fn(S, V, integral_constant<int, kMaxDeg>{}, integral_constant<int, kMaxDeg>{});
  };
  auto width = [&](auto S) {
    constexpr int kVec = vec_width(decltype(S)::value);
    if (vec == kVec)
      degrees(S, integral_constant<int, kVec>{});
    else
      degrees(S, integral_constant<int, 1>{});
  };
  if (st == DType::F32)
    width(integral_constant<DType, DType::F32>{});
  else if (st == DType::BF16)
    width(integral_constant<DType, DType::BF16>{});
  else
    width(integral_constant<DType, DType::F16>{});
}

}  // namespace

void grkan_forward(const GrkanShape& s, DType st, const void* x, const float* a, const float* b, void* y,
                   cudaStream_t stream) {
  s.validate("grkan_forward (cuda)");
  check_grkan_dtype(st, "grkan_forward (cuda)");
  if (s.rows == 0) return;
  KAT_CHECK(x && y && a && (b || s.n == 0), "grkan_forward (cuda): null device pointer");
  const int vec = choose_vec(s, st, aligned16(x) && aligned16(y));
  dispatch(st, vec, specialised(s), [&](auto S, auto VEC, auto M, auto N) {
    launch_fwd<S.value, VEC.value, M.value, N.value>(s, x, a, b, y, stream);
  });
}

std::size_t grkan_backward_workspace_bytes(const GrkanShape& s) {
  s.validate("grkan_backward_workspace_bytes (cuda)");
  if (s.rows == 0) return 0;
  const int ncols = s.num_rows * (s.m + 1) + s.groups * s.n;
  int blocks = 0;
  for (DType st : {DType::F32, DType::BF16})
    for (int vec : {1, storage_vec(st)}) {
      if ((s.dim / s.groups) % vec != 0) continue;
      blocks = std::max(blocks, make_plan(s.rows, s.dim, vec, bwd_max_blocks(st)).blocks);
    }
  // Coefficient columns + the D column sums of dx (CS kernels), or the separate column-sum
  // kernel's table (other calls with dx_colsum).
  return std::max(static_cast<std::size_t>(blocks) * static_cast<std::size_t>(ncols + s.dim) * sizeof(float),
                  column_sum_workspace_bytes(s.rows, s.dim));
}

void grkan_backward(const GrkanBackwardArgs& args, cudaStream_t stream) {
  const GrkanShape& s = args.shape;
  const DType st = args.dtype;
  const void *x = args.x, *dy = args.dy;
  const float *a = args.a, *b = args.b;
  void *dx = args.dx, *workspace = args.workspace;
  float *da = args.da, *db = args.db, *dx_colsum = args.dx_colsum;
  s.validate("grkan_backward (cuda)");
  check_grkan_dtype(st, "grkan_backward (cuda)");
  if (s.rows == 0) {
    // No rows: the gradients are sums over nothing; overwritten outputs become zeros.
    if (!args.accumulate) {
      if (da) KAT_CUDA_CHECK(cudaMemsetAsync(da, 0, sizeof(float) * s.num_rows * (s.m + 1), stream));
      if (db) KAT_CUDA_CHECK(cudaMemsetAsync(db, 0, sizeof(float) * s.groups * s.n, stream));
      if (dx_colsum) KAT_CUDA_CHECK(cudaMemsetAsync(dx_colsum, 0, sizeof(float) * s.dim, stream));
    }
    return;
  }
  KAT_CHECK(x && dy && dx && a && da && (s.n == 0 || (b && db)), "grkan_backward (cuda): null device pointer");
  KAT_CHECK(workspace != nullptr,
            "grkan_backward (cuda): workspace is null (size it with "
            "grkan_backward_workspace_bytes)");
  KAT_CHECK((reinterpret_cast<uintptr_t>(workspace) & 3u) == 0,
            "grkan_backward (cuda): workspace must be 4-byte aligned");
  const int vec = choose_vec(s, st, aligned16(x) && aligned16(dy) && aligned16(dx));
  dispatch(st, vec, specialised(s), [&](auto S, auto VEC, auto M, auto N) {
    launch_bwd<S.value, VEC.value, M.value, N.value>(s, x, dy, a, b, dx, da, db, dx_colsum, workspace,
                                                     args.accumulate, stream);
  });
}

GrkanLaunchInfo grkan_launch_info(const GrkanShape& s, DType st, bool backward, bool aligned) {
  s.validate("grkan_launch_info (cuda)");
  GrkanLaunchInfo info;
  info.vec = choose_vec(s, st, aligned);
  info.specialised = specialised(s);
  info.threads = kThreads;
  int max_blocks = bwd_max_blocks(st);
  if (!backward) {
    // Report the forward grid as launched (occupancy of the kernel that would run).
    dispatch(st, info.vec, info.specialised, [&](auto S, auto VEC, auto M, auto N) {
      constexpr DType s_ = S.value;
      constexpr int v_ = VEC.value, m_ = M.value, n_ = N.value;
      max_blocks = sm_count() * fwd_blocks_per_sm(grkan_fwd_kernel<s_, v_, m_, n_>, fwd_occupancy<s_, v_, m_, n_>);
    });
  }
  const Plan pl = make_plan(s.rows, s.dim, info.vec, max_blocks);
  info.blocks = pl.blocks;
  info.row_slots = pl.row_slots;
  return info;
}

}  // namespace kat::cuda
