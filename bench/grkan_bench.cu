// GR-KAN CUDA benchmark: forward, backward and forward+backward times of kat::cuda::grkan_* for
// the KAT shapes (rows = 128*197 tokens, D = 192 / 768 / 1536, G = 8, shared numerator, degrees
// (5, 4)) in bf16 and fp32 storage, against the bytes floor and the device-to-device copy
// bandwidth measured in the same run.
//
//   grkan_bench [out.csv] [label]
//
// Timing: CUDA events around a batch of kBatch calls that rotate among nsets input/output sets
// (at least 4, and enough that the sets used between two uses of one set
// touch >= 3x the L2, so L2 does not serve a call from the one
// before), batch time / kBatch, median over kReps batches after warm-up. Inputs: x ~ N(0, 1.5^2),
// dy ~ N(0, 1), generated on the device; coefficients = swish init + noise.
// Bytes floor per element: forward reads x, writes y (2 * es); backward reads x, dy, writes dx
// (3 * es); es = 2 (bf16) or 4 (fp32). The da/db traffic (workspace) is a few hundred KB.
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "ops/cuda/cuda_check.h"
#include "ops/cuda/device_memory.h"
#include "ops/cuda/gemm.h"
#include "ops/cuda/grkan.h"

namespace {

using kat::DType;
using kat::cuda::CudaEvent;
using kat::cuda::CudaStream;
using kat::cuda::DeviceBuffer;

constexpr int kMinSets = 4;
constexpr int kBatch = 8;
constexpr int kReps = 60;
constexpr int kWarm = 5;

__device__ __forceinline__ uint64_t mix64(uint64_t z) {
  z += 0x9e3779b97f4a7c15ull;
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

// Normal(0, sigma) by Box-Muller on a counter hash; writes storage-typed values.
__global__ void fill_normal(void* out, size_t n, bool bf16, float sigma, uint64_t seed) {
  for (size_t i = blockIdx.x * static_cast<size_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<size_t>(gridDim.x) * blockDim.x) {
    const uint64_t h = mix64(seed ^ mix64(i));
    const float u1 = ((h >> 40) + 1) * (1.0f / 16777217.0f);
    const float u2 = ((h & 0xffffffull)) * (1.0f / 16777216.0f);
    const float v = sigma * sqrtf(-2.f * logf(u1)) * cospif(2.f * u2);
    if (bf16) {
      uint32_t u = __float_as_uint(v);
      u += 0x7fffu + ((u >> 16) & 1u);
      static_cast<uint16_t*>(out)[i] = static_cast<uint16_t>(u >> 16);
    } else {
      static_cast<float*>(out)[i] = v;
    }
  }
}

struct Set {
  DeviceBuffer<unsigned char> x, dy, y, dx;
  DeviceBuffer<unsigned char> cs, cd;  // 1.5 n es bytes each: the same-size copy reference
};

float median(std::vector<float> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

// Median per-call time (ms) of `body(i)` over batches of kBatch calls.
template <typename F>
float time_ms(cudaStream_t st, F&& body) {
  CudaEvent e0 = CudaEvent::create(), e1 = CudaEvent::create();
  for (int w = 0; w < kWarm; ++w)
    for (int i = 0; i < kBatch; ++i) body(i);
  KAT_CUDA_CHECK(cudaStreamSynchronize(st));
  std::vector<float> t;
  int call = 0;
  for (int r = 0; r < kReps; ++r) {
    KAT_CUDA_CHECK(cudaEventRecord(e0, st));
    for (int i = 0; i < kBatch; ++i) body(call++);
    KAT_CUDA_CHECK(cudaEventRecord(e1, st));
    KAT_CUDA_CHECK(cudaEventSynchronize(e1));
    float ms = 0;
    KAT_CUDA_CHECK(cudaEventElapsedTime(&ms, e0, e1));
    t.push_back(ms / kBatch);
  }
  return median(t);
}

// Device-to-device copy bandwidth (bytes read + written per second), 1 GiB buffers.
double copy_bandwidth(cudaStream_t st) {
  const size_t bytes = size_t(1) << 30;
  DeviceBuffer<unsigned char> da(bytes), db(bytes);
  void *a = da.data(), *b = db.data();
  KAT_CUDA_CHECK(cudaMemsetAsync(a, 1, bytes, st));
  const float ms = time_ms(st, [&](int i) {
    KAT_CUDA_CHECK(cudaMemcpyAsync(i % 2 ? a : b, i % 2 ? b : a, bytes, cudaMemcpyDeviceToDevice, st));
  });
  return 2.0 * bytes / (ms * 1e-3);
}

}  // namespace

int main(int argc, char** argv) {
  try {
    const char* csv_path = argc > 1 ? argv[1] : nullptr;
    const std::string label = argc > 2 ? argv[2] : "default";
    cudaDeviceProp prop{};
    KAT_CUDA_CHECK(cudaGetDeviceProperties(&prop, 0));
    const CudaStream stream = CudaStream::create(cudaStreamNonBlocking);
    cudaStream_t st = stream.get();
    const double copy_bw = copy_bandwidth(st);
    std::printf("device: %s, %d SMs, L2 %d MB; D2D copy bandwidth %.0f GB/s (read+write); variant %s\n", prop.name,
                prop.multiProcessorCount, prop.l2CacheSize >> 20, copy_bw * 1e-9, label.c_str());

    FILE* csv = csv_path ? std::fopen(csv_path, "w") : nullptr;
    if (csv_path && !csv) std::fprintf(stderr, "cannot open %s\n", csv_path);
    if (csv)
      std::fprintf(csv,
                   "variant,device,storage,rows,dim,groups,fwd_ms,bwd_ms,fwdbwd_ms,fwd_floor_ms,"
                   "bwd_floor_ms,fwdbwd_floor_ms,fwd_GBs,bwd_GBs,fwdbwd_GBs,copy_GBs,fwd_frac,"
                   "bwd_frac,fwdbwd_frac,fwd_blocks,bwd_blocks,copy_fwd_ms,copy_bwd_ms,copy_fwdbwd_ms\n");

    std::printf("\n%-5s %-16s %8s %8s %9s | %7s %7s %7s | %6s %6s %6s | %5s %5s %5s\n", "stor", "shape", "fwd ms",
                "bwd ms", "f+b ms", "fwd GB/s", "bwd", "f+b", "flr f", "flr b", "flr fb", "%cp f", "%cp b",
                "%cp fb");

    // GRKAN_BENCH_ONLY="bf16:768,fp32:192": run only those (storage:dim) rows (for profilers).
    const char* only_env = std::getenv("GRKAN_BENCH_ONLY");
    const std::string only = only_env ? only_env : "";
    const int64_t rows = 128 * 197;
    const int dims[] = {192, 768, 1536};
    uint64_t seed = 0x5eed1234abcdull;
    for (DType stor : {DType::BF16, DType::F32}) {
      for (int dim : dims) {
        if (!only.empty() && only.find(std::string(stor == DType::BF16 ? "bf16:" : "fp32:") +
                                       std::to_string(dim)) == std::string::npos)
          continue;
        kat::ops::GrkanShape s;
        s.rows = rows;
        s.dim = dim;
        s.groups = 8;
        s.num_rows = 1;
        const size_t n = static_cast<size_t>(rows) * dim;
        const size_t es = kat::dtype_size(stor);
        const bool bf = stor == DType::BF16;
        // Enough sets that the calls between two uses of a set touch >= 3x the L2.
        const double call_bytes = 2.0 * es * n;
        const int nsets =
            std::min(32, std::max(kMinSets, static_cast<int>(std::ceil(3.0 * prop.l2CacheSize / call_bytes)) + 1));
        std::vector<Set> sets(nsets);
        for (auto& set : sets) {
          for (auto* p : {&set.x, &set.dy, &set.y, &set.dx}) p->allocate(n * es);
          for (auto* p : {&set.cs, &set.cd}) p->allocate(n * es * 3 / 2);
          KAT_CUDA_CHECK(cudaMemsetAsync(set.cs.data(), 1, n * es * 3 / 2, st));
          fill_normal<<<1024, 256, 0, st>>>(set.x.data(), n, bf, 1.5f, seed++);
          KAT_CUDA_CHECK_LAUNCH();
          fill_normal<<<1024, 256, 0, st>>>(set.dy.data(), n, bf, 1.0f, seed++);
          KAT_CUDA_CHECK_LAUNCH();
        }
        // Coefficients: swish + noise; b signs mixed.
        std::vector<float> a = {3.05e-07f, 0.5000008f, 0.2499978f, 0.0532663f, 0.0058030f, 0.0002752f};
        std::vector<float> b;
        for (int g = 0; g < s.groups; ++g) {
          const float jit = 0.01f * static_cast<float>(g - 3.5f);
          b.insert(b.end(), {-4.1e-06f + jit, 0.1065290f + 0.1f * jit, -1.27e-06f - 0.01f * jit,
                             0.0005502f + 0.001f * jit});
        }
        DeviceBuffer<float> a_buf(a.size()), b_buf(b.size()), da_buf(a.size()), db_buf(b.size());
        float *a_d = a_buf.data(), *b_d = b_buf.data(), *da_d = da_buf.data(), *db_d = db_buf.data();
        KAT_CUDA_CHECK(cudaMemcpy(a_d, a.data(), a.size() * 4, cudaMemcpyHostToDevice));
        KAT_CUDA_CHECK(cudaMemcpy(b_d, b.data(), b.size() * 4, cudaMemcpyHostToDevice));
        KAT_CUDA_CHECK(cudaMemset(da_d, 0, a.size() * 4));
        KAT_CUDA_CHECK(cudaMemset(db_d, 0, b.size() * 4));
        const size_t ws_bytes = kat::cuda::grkan_backward_workspace_bytes(s);
        DeviceBuffer<unsigned char> ws_buf(std::max<size_t>(ws_bytes, 4));
        void* ws = ws_buf.data();
        KAT_CUDA_CHECK(cudaStreamSynchronize(st));

        auto fwd = [&](int i) {
          Set& z = sets[i % nsets];
          kat::cuda::grkan_forward(s, stor, z.x.data(), a_d, b_d, z.y.data(), st);
        };
        auto bwd = [&](int i) {
          Set& z = sets[i % nsets];
          kat::cuda::grkan_backward({.shape = s,
                                     .dtype = stor,
                                     .x = z.x.data(),
                                     .dy = z.dy.data(),
                                     .a = a_d,
                                     .b = b_d,
                                     .dx = z.dx.data(),
                                     .da = da_d,
                                     .db = db_d,
                                     .workspace = ws},
                                    st);
        };
        const float t_f = time_ms(st, fwd);
        const float t_b = time_ms(st, bwd);
        const float t_fb = time_ms(st, [&](int i) {
          fwd(i);
          bwd(i);
        });
        // Same-size copy reference: what cudaMemcpyAsync achieves on the bytes of one forward
        // (copy n es: reads + writes 2 n es), one backward (1.5 n es: 3 n es) and both back to back
        // (two calls, like forward + backward), with the same set rotation. At the small shapes
        // launch and ramp costs keep even a copy well below the 1 GiB copy bandwidth.
        auto copy = [&](int i, size_t bytes) {
          Set& z = sets[i % nsets];
          KAT_CUDA_CHECK(cudaMemcpyAsync(z.cd.data(), z.cs.data(), bytes, cudaMemcpyDeviceToDevice, st));
        };
        const float c_f = time_ms(st, [&](int i) { copy(i, n * es); });
        const float c_b = time_ms(st, [&](int i) { copy(i, n * es * 3 / 2); });
        const float c_fb = time_ms(st, [&](int i) {
          copy(i, n * es);
          copy(i, n * es * 3 / 2);
        });
        // The model's backward also needs fc1's bias gradient, the column sums of dx: fused into
        // the GR-KAN reduction (dx_colsum) vs the backward followed by the column-sum kernel.
        DeviceBuffer<float> dsum_buf{size_t(dim)};
        float* dsum_d = dsum_buf.data();
        KAT_CUDA_CHECK(cudaMemset(dsum_d, 0, size_t(dim) * 4));
        const float t_bcs = time_ms(st, [&](int i) {
          Set& z = sets[i % nsets];
          kat::cuda::grkan_backward({.shape = s,
                                     .dtype = stor,
                                     .x = z.x.data(),
                                     .dy = z.dy.data(),
                                     .a = a_d,
                                     .b = b_d,
                                     .dx = z.dx.data(),
                                     .da = da_d,
                                     .db = db_d,
                                     .workspace = ws,
                                     .dx_colsum = dsum_d},
                                    st);
        });
        const float t_bsep = time_ms(st, [&](int i) {
          Set& z = sets[i % nsets];
          kat::cuda::grkan_backward({.shape = s,
                                     .dtype = stor,
                                     .x = z.x.data(),
                                     .dy = z.dy.data(),
                                     .a = a_d,
                                     .b = b_d,
                                     .dx = z.dx.data(),
                                     .da = da_d,
                                     .db = db_d,
                                     .workspace = ws},
                                    st);
          kat::cuda::column_sum_accumulate(rows, dim, stor, z.dx.data(), dsum_d, ws, st);
        });
        KAT_CUDA_CHECK(cudaStreamSynchronize(st));
        const auto fi = kat::cuda::grkan_launch_info(s, stor, false, true);
        const auto bi = kat::cuda::grkan_launch_info(s, stor, true, true);

        const double bf_ = 2.0 * es * n, bb_ = 3.0 * es * n, bfb = 5.0 * es * n;
        const double gf = bf_ / (t_f * 1e-3) * 1e-9, gb = bb_ / (t_b * 1e-3) * 1e-9,
                     gfb = bfb / (t_fb * 1e-3) * 1e-9;
        const double ff = bf_ / copy_bw * 1e3, fb = bb_ / copy_bw * 1e3, ffb = bfb / copy_bw * 1e3;
        char shape[32];
        std::snprintf(shape, sizeof shape, "(128,197,%d)", dim);
        std::printf("%-5s %-16s %8.4f %8.4f %9.4f | %8.0f %7.0f %7.0f | %6.4f %6.4f %6.4f | %5.1f %5.1f %5.1f\n",
                    bf ? "bf16" : "fp32", shape, t_f, t_b, t_fb, gf, gb, gfb, ff, fb, ffb,
                    100.0 * gf / (copy_bw * 1e-9), 100.0 * gb / (copy_bw * 1e-9), 100.0 * gfb / (copy_bw * 1e-9));
        std::printf(
            "      same-size copies %.4f %8.4f %9.4f ms -> GR-KAN at %.0f / %.0f / %.0f %% of their speed\n", c_f,
            c_b, c_fb, 100.0 * c_f / t_f, 100.0 * c_b / t_b, 100.0 * c_fb / t_fb);
        std::printf("      backward + dx column sums (fc1 bias grad): fused %.4f ms, separate kernel %.4f ms\n",
                    t_bcs, t_bsep);
        std::fflush(stdout);
        if (csv)
          std::fprintf(csv,
                       "%s,%s,%s,%lld,%d,%d,%.5f,%.5f,%.5f,%.5f,%.5f,%.5f,%.1f,%.1f,%.1f,%.1f,%.4f,"
                       "%.4f,%.4f,%d,%d,%.5f,%.5f,%.5f\n",
                       label.c_str(), prop.name, bf ? "bf16" : "fp32", static_cast<long long>(rows), dim, s.groups,
                       t_f, t_b, t_fb, ff, fb, ffb, gf, gb, gfb, copy_bw * 1e-9, gf / (copy_bw * 1e-9),
                       gb / (copy_bw * 1e-9), gfb / (copy_bw * 1e-9), fi.blocks, bi.blocks, c_f, c_b, c_fb);

        KAT_CUDA_CHECK(cudaStreamSynchronize(st));  // before the buffers are freed
      }
    }
    if (csv) std::fclose(csv);
    std::printf("(floors = bytes / measured D2D copy bandwidth; %%cp = achieved GB/s / copy GB/s)\n");
    return 0;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "grkan_bench: %s\n", e.what());
    return 1;
  }
}
