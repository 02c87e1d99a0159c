// GR-KAN on the CPU (reference and CPU production path). Contract, math and shape check:
// ops/grkan.h; CUDA: ops/cuda/grkan.h. Conventions: ops/cpu/gemm.h.
#pragma once
#include <cstdint>

#include "kat/ops/grkan.h"

namespace kat::ops {

// y = F(x). y may not alias x.
template <typename T>
void grkan_forward(const GrkanShape& s, const T* x, const T* a, const T* b, T* y);

// dx = dL/dx (overwritten; may alias dy). da (An, m+1), db (G, n) are ACCUMULATED (+=).
template <typename T>
void grkan_backward(const GrkanShape& s, const T* x, const T* dy, const T* a, const T* b, T* dx, T* da, T* db);

}  // namespace kat::ops
