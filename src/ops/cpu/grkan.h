// GR-KAN on the CPU (reference and CPU production path). Contract, math and shape check:
// ops/grkan.h; CUDA: ops/cuda/grkan.h. Conventions: ops/cpu/gemm.h.
#pragma once
#include <cstdint>

#include "kat/core/dtype.h"
#include "kat/ops/grkan.h"

namespace kat::ops {

// y = F(x). y may not alias x.
template <typename T>
void grkan_forward(const GrkanShape& s, const T* x, const T* a, const T* b, T* y);

// dx = dL/dx (overwritten; may alias dy). da (An, m+1), db (G, n) are ACCUMULATED (+=).
template <typename T>
void grkan_backward(const GrkanShape& s, const T* x, const T* dy, const T* a, const T* b, T* dx, T* da, T* db);

// The same on tensors of element type st (F32, BF16 or F16; host memory), the CPU twin of the
// CUDA op's contract (ops/cuda/grkan.h), used by the Python op (kat.torch): x, y, dy, dx of type
// st, math in fp32 (16-bit elements are widened on load and rounded to nearest even once on store),
// a, b fp32, da, db fp32 ACCUMULATED. F32 is exactly grkan_forward<float> / grkan_backward<float>.
void grkan_forward(const GrkanShape& s, DType st, const void* x, const float* a, const float* b, void* y);
void grkan_backward(const GrkanShape& s, DType st, const void* x, const void* dy, const float* a, const float* b,
                    void* dx, float* da, float* db);

// Whether the kernels above run x86-64-v3 code (AVX2, FMA): the build's own target, or in a build
// for an older target (the portable wheel) the second compilation chosen at run time when the CPU
// has it (KAT_CPU_DISPATCH=default in the environment forces the build's target).
bool grkan_cpu_uses_v3();

}  // namespace kat::ops
