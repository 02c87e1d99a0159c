// Warp-level tensor-core building blocks (sm_80+ PTX): mma.sync m16n8k16 bf16 x bf16 -> fp32,
// ldmatrix and cp.async. Fragment layouts (PTX ISA, "Matrix fragments for mma.m16n8k16"), lane = 4 g + t:
//   A (16 x 16, row):  a[0] = (row g,   cols 2t, 2t+1)   a[1] = (row g+8, cols 2t, 2t+1)
//                      a[2] = (row g,   cols 2t+8, +9)   a[3] = (row g+8, cols 2t+8, +9)
//   B (16 x 8, col):   b[0] = (rows 2t, 2t+1, col g)     b[1] = (rows 2t+8, 2t+9, col g)
//   C (16 x 8, fp32):  c[0], c[1] = (row g, cols 2t, 2t+1)  c[2], c[3] = (row g+8, cols 2t, 2t+1)
// Each 32-bit register holds two bf16, the lower column/row index in the low half.
// Two C tiles side by side (16 x 16) are exactly one A fragment once rounded to bf16 (to_a), which
// is how FlashAttention feeds P into the second GEMM without touching shared memory.
#pragma once
#include <cuda_bf16.h>

#include <cstdint>

#include "ops/cuda/vec_io.cuh"

namespace kat::cuda::mma {

__device__ __forceinline__ uint32_t smem_addr(const void* p) {
  return static_cast<uint32_t>(__cvta_generic_to_shared(p));
}

// Four 8x8 bf16 matrices; lanes 8m..8m+7 give the 16-byte row addresses of matrix m. Without
// .trans lane 4g+t receives (row g, cols 2t, 2t+1) of each matrix; with .trans (rows 2t, 2t+1, col g).
__device__ __forceinline__ void ldsm_x4(uint32_t (&r)[4], uint32_t addr) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(addr));
}
__device__ __forceinline__ void ldsm_x4_trans(uint32_t (&r)[4], uint32_t addr) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(addr));
}

// c += a . b (16 x 16 by 16 x 8, fp32 accumulate).
__device__ __forceinline__ void mma_bf16(float (&c)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
      "{%0,%1,%2,%3};\n"
      : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

// cp.async: 16 bytes global -> shared without a register round trip (sm_80+). src_bytes = 0
// zero-fills the 16 bytes (padding rows). Groups are committed and waited for in issue order.
__device__ __forceinline__ void cp_async16(uint32_t smem, const void* gmem, int src_bytes) {
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(smem), "l"(gmem), "r"(src_bytes)
               : "memory");
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::: "memory"); }
// Wait until at most N of this thread's committed groups are still in flight.
template <int N>
__device__ __forceinline__ void cp_async_wait() {
  asm volatile("cp.async.wait_group %0;\n" ::"n"(N) : "memory");
}

// A fragment of the 16 x 16 block made of C tiles c0 (cols 0..7) and c1 (cols 8..15), rounded to bf16.
__device__ __forceinline__ void to_a(uint32_t (&a)[4], const float (&c0)[4], const float (&c1)[4]) {
  a[0] = vecio::pack_bf16x2(c0[0], c0[1]);
  a[1] = vecio::pack_bf16x2(c0[2], c0[3]);
  a[2] = vecio::pack_bf16x2(c1[0], c1[1]);
  a[3] = vecio::pack_bf16x2(c1[2], c1[3]);
}

}  // namespace kat::cuda::mma
