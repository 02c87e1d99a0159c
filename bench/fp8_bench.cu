// FP8 vs bf16 for the linear layers of KAT (ops/fp8.h's recipe; ops/cuda/gemm_fp8.h vs
// ops/cuda/gemm.h): per model (kat_tiny / small / base: D = 192 / 384 / 768, MLP hidden 4 D,
// rows = batch * 197), per layer (qkv: D -> 3D, proj: D -> D, fc1: D -> 4D, fc2: 4D -> D) and per
// GEMM (forward, backward data, backward weight): time and TFLOP/s of the bf16 cuBLASLt GEMM the
// model uses today (bf16 bias in the epilogue, as the model calls it) and of the FP8 GEMM, and
// their ratio; then the casts FP8 adds (x: cast + transpose + amax, E4M3; dy: the same, E5M2; W:
// amax + scale + cast + transpose once per optimizer step, counted here once per pass, i.e. the
// worst case of no gradient accumulation); then per model the sum over the 12 GEMMs of a block,
// bf16 vs FP8 GEMMs + casts: the speedup FP8 can bring to the linear layers. Whether kat_base
// training can reach the issue's 1.3x then depends on the linear layers' share of the step
// (bench/PERFORMANCE.md, the training profile).
//
// usage: fp8_bench [batch=256] [iters=50]
// Every op is timed alone (CUDA events around `iters` launches after 5 warm-up launches) on
// operands filled on the device with bounded pseudo-random values.
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <string>
#include <vector>

#include "ops/cuda/device_memory.h"
#include "ops/cuda/fp8.h"
#include "ops/cuda/gemm.h"
#include "ops/cuda/gemm_fp8.h"

namespace {

using kat::DType;
using kat::Fp8Format;
using kat::cuda::CudaEvent;
using kat::cuda::CudaStream;
using kat::cuda::DeviceBuffer;

// x[i] = scale * u, u uniform in [-1, 1) from a hash of (seed, i).
__global__ void fill_bf16(int64_t n, __nv_bfloat16* x, uint32_t seed, float scale) {
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) {
    uint32_t h = uint32_t(i) * 0x9E3779B1u ^ seed;
    h ^= h >> 16, h *= 0x85EBCA6Bu, h ^= h >> 13, h *= 0xC2B2AE35u, h ^= h >> 16;
    x[i] = __float2bfloat16(scale * (float(h >> 8) * (1.0f / 8388608.0f) - 1.0f));
  }
}
void fill(DeviceBuffer<unsigned char>& b, int64_t n, uint32_t seed, float scale, cudaStream_t s) {
  fill_bf16<<<1024, 256, 0, s>>>(n, reinterpret_cast<__nv_bfloat16*>(b.data()), seed, scale);
  KAT_CUDA_CHECK(cudaGetLastError());
}

int g_iters = 50;

// Microseconds per call of fn (enqueued on s).
double time_us(const std::function<void()>& fn, cudaStream_t s) {
  for (int i = 0; i < 5; ++i) fn();
  auto t0 = CudaEvent::create(), t1 = CudaEvent::create();
  t0.record(s);
  for (int i = 0; i < g_iters; ++i) fn();
  t1.record(s);
  t1.synchronize();
  return 1e3 * t1.elapsed_ms_since(t0) / g_iters;
}

struct Layer {
  const char* name;
  int64_t K, N;  // in, out
};

struct Totals {
  double bf16 = 0, fp8_gemm = 0, casts = 0;
};

// One linear layer of M rows: bf16 and FP8 GEMMs, and the casts. Prints rows of the table.
Totals bench_layer(const char* model, const Layer& L, int64_t M, kat::cuda::Gemm& gemm, kat::cuda::GemmFp8& g8,
                   cudaStream_t s) {
  const int64_t K = L.K, N = L.N, ld_t = kat::cuda::fp8_padded_rows(M);
  DeviceBuffer<unsigned char> x(size_t(M * K) * 2), W(size_t(N * K) * 2), dy(size_t(M * N) * 2),
      y(size_t(M * N) * 2), dx(size_t(M * K) * 2), dW(size_t(N * K) * 4), b(size_t(N) * 4), bq(size_t(N) * 2);
  DeviceBuffer<unsigned char> xq(size_t(M * K)), xqt(size_t(K * ld_t)), wq(size_t(N * K)), wqt(size_t(K * N)),
      dyq(size_t(M * N)), dyqt(size_t(N * ld_t));
  DeviceBuffer<float> amax(4), scale(4), sinv(4);  // of x, W, dy
  fill(x, M * K, 1, 2.0f, s);
  fill(W, N * K, 2, 0.05f, s);
  fill(dy, M * N, 3, 1e-3f, s);
  fill(bq, N, 4, 0.1f, s);
  KAT_CUDA_CHECK(cudaMemsetAsync(b.data(), 0, b.bytes(), s));
  KAT_CUDA_CHECK(cudaMemsetAsync(dW.data(), 0, dW.bytes(), s));
  auto u8 = [](DeviceBuffer<unsigned char>& d) { return reinterpret_cast<uint8_t*>(d.data()); };
  // The casts: x and dy delayed-scaled (one pass: cast + transpose + amax record), W current-scaled
  // (amax, scale, cast + transpose).
  auto cast_x = [&] {
    kat::cuda::fp8_cast({.rows = M,
                         .cols = K,
                         .dtype = DType::BF16,
                         .x = x.data(),
                         .format = Fp8Format::E4M3,
                         .scale = scale.data(),
                         .q = u8(xq),
                         .q_t = u8(xqt),
                         .ld_t = ld_t,
                         .amax = amax.data()},
                        s);
  };
  auto cast_dy = [&] {
    kat::cuda::fp8_cast({.rows = M,
                         .cols = N,
                         .dtype = DType::BF16,
                         .x = dy.data(),
                         .format = Fp8Format::E5M2,
                         .scale = scale.data() + 2,
                         .q = u8(dyq),
                         .q_t = u8(dyqt),
                         .ld_t = ld_t,
                         .amax = amax.data() + 2},
                        s);
  };
  auto cast_w = [&] {
    kat::cuda::fp8_amax({.n = N * K, .dtype = DType::BF16, .x = W.data(), .amax = amax.data() + 1}, s);
    kat::cuda::fp8_scale_update({.format = Fp8Format::E4M3,
                                 .amax = amax.data() + 1,
                                 .scale = scale.data() + 1,
                                 .scale_inv = sinv.data() + 1},
                                s);
    kat::cuda::fp8_cast({.rows = N,
                         .cols = K,
                         .dtype = DType::BF16,
                         .x = W.data(),
                         .format = Fp8Format::E4M3,
                         .scale = scale.data() + 1,
                         .q = u8(wq),
                         .q_t = u8(wqt),
                         .ld_t = N},
                        s);
  };
  // Scales from the tensors themselves (current scaling), so the codes are realistic.
  for (int i : {0, 2}) {
    kat::cuda::fp8_amax({.n = i == 0 ? M * K : M * N,
                         .dtype = DType::BF16,
                         .x = i == 0 ? x.data() : dy.data(),
                         .amax = amax.data() + i},
                        s);
    kat::cuda::fp8_scale_update({.format = i == 0 ? Fp8Format::E4M3 : Fp8Format::E5M2,
                                 .amax = amax.data() + i,
                                 .scale = scale.data() + i,
                                 .scale_inv = sinv.data() + i},
                                s);
  }
  cast_x();
  cast_dy();
  cast_w();

  const double flop = 2.0 * double(M) * K * N;
  const float* bf = reinterpret_cast<const float*>(b.data());
  const double t_bf[3] = {
      time_us([&] { gemm.forward(M, K, N, DType::BF16, x.data(), W.data(), bf, y.data(), s, bq.data()); }, s),
      time_us([&] { gemm.backward_data(M, K, N, DType::BF16, dy.data(), W.data(), dx.data(), s); }, s),
      time_us(
          [&] {
    gemm.backward_weight(M, K, N, DType::BF16, dy.data(), x.data(), reinterpret_cast<float*>(dW.data()), s);
          },
          s)};
  const double t_f8[3] = {time_us(
                              [&] {
    g8.forward({.M = M,
                .K = K,
                .N = N,
                .x_q = u8(xq),
                .W_q = u8(wq),
                .x_scale_inv = sinv.data(),
                .W_scale_inv = sinv.data() + 1,
                .b = bf,
                .b_bf16 = bq.data(),
                .y = y.data()},
               s);
                              },
                              s),
                          time_us(
                              [&] {
    g8.backward_data({.M = M,
                      .K = K,
                      .N = N,
                      .dy_q = u8(dyq),
                      .W_qT = u8(wqt),
                      .dy_scale_inv = sinv.data() + 2,
                      .W_scale_inv = sinv.data() + 1,
                      .dx = dx.data()},
                     s);
                              },
                              s),
               time_us(
                   [&] {
    g8.backward_weight({.M = M,
                        .K = K,
                        .N = N,
                        .ld_t = ld_t,
                        .dy_qT = u8(dyqt),
                        .x_qT = u8(xqt),
                        .dy_scale_inv = sinv.data() + 2,
                        .x_scale_inv = sinv.data(),
                        .dW = reinterpret_cast<float*>(dW.data())},
                       s);
                   },
                   s)};
  const char* gname[3] = {"forward", "bwd data", "bwd weight"};
  Totals t;
  for (int i = 0; i < 3; ++i) {
    std::printf(
        "%-6s %-5s (%6lld,%5lld,%5lld) %-10s  bf16 %8.1f us %6.1f TFLOP/s   fp8 %8.1f us %6.1f TFLOP/s   "
        "fp8/bf16 speedup %5.2fx\n",
        model, L.name, (long long)M, (long long)K, (long long)N, gname[i], t_bf[i], flop / (t_bf[i] * 1e6),
        t_f8[i], flop / (t_f8[i] * 1e6), t_bf[i] / t_f8[i]);
    t.bf16 += t_bf[i];
    t.fp8_gemm += t_f8[i];
  }
  const double c_x = time_us(cast_x, s), c_dy = time_us(cast_dy, s), c_w = time_us(cast_w, s);
  const double gbs_x = double(M * K) * 4 / (c_x * 1e3), gbs_dy = double(M * N) * 4 / (c_dy * 1e3);
  std::printf(
      "%-6s %-5s casts: x (%lld,%lld) e4m3 cast+transpose+amax %7.1f us (%6.0f GB/s), dy (%lld,%lld) e5m2 "
      "%7.1f us (%6.0f GB/s), W (%lld,%lld) amax+scale+cast+transpose %6.1f us\n",
      model, L.name, (long long)M, (long long)K, c_x, gbs_x, (long long)M, (long long)N, c_dy, gbs_dy,
      (long long)N, (long long)K, c_w);
  t.casts = c_x + c_dy + c_w;
  KAT_CUDA_CHECK(cudaStreamSynchronize(s));
  return t;
}

}  // namespace

int main(int argc, char** argv) {
  const int64_t batch = argc > 1 ? std::atoll(argv[1]) : 256;
  if (argc > 2) g_iters = std::atoi(argv[2]);
  cudaDeviceProp prop{};
  KAT_CUDA_CHECK(cudaGetDeviceProperties(&prop, 0));
  std::printf("device: %s (%d SMs, compute capability %d.%d); rows = %lld x 197; %d iterations per op\n",
              prop.name, prop.multiProcessorCount, prop.major, prop.minor, (long long)batch, g_iters);
  if (prop.major * 10 + prop.minor < 89) {
    std::printf("FP8 GEMMs need compute capability 8.9+\n");
    return 1;
  }
  auto stream = CudaStream::create();
  kat::cuda::Gemm gemm;
  kat::cuda::GemmFp8 g8;
  const int64_t M = batch * 197;
  struct Model {
    const char* name;
    int64_t D;
  };
  std::vector<std::string> summary;
  for (const Model& m : {Model{"tiny", 192}, Model{"small", 384}, Model{"base", 768}}) {
    const Layer layers[4] = {
        {"qkv", m.D, 3 * m.D}, {"proj", m.D, m.D}, {"fc1", m.D, 4 * m.D}, {"fc2", 4 * m.D, m.D}};
    Totals tot;
    for (const Layer& L : layers) {
      const Totals t = bench_layer(m.name, L, M, gemm, g8, stream);
      tot.bf16 += t.bf16, tot.fp8_gemm += t.fp8_gemm, tot.casts += t.casts;
    }
    char line[320];
    std::snprintf(line, sizeof line,
                  "%-6s per block: bf16 GEMMs %8.1f us | fp8 GEMMs %8.1f us (%5.2fx) + casts %7.1f us = %8.1f us: "
                  "linear layers %5.2fx faster",
                  m.name, tot.bf16, tot.fp8_gemm, tot.bf16 / tot.fp8_gemm, tot.casts, tot.fp8_gemm + tot.casts,
                  tot.bf16 / (tot.fp8_gemm + tot.casts));
    summary.push_back(line);
    std::printf("%s\n", line);
    // Amdahl: a step in which the linear layers take a share f of the bf16 time speeds up by
    // 1 / (1 - f + f / s); 1.3x (the issue's target) needs f >= (1 - 1/1.3) / (1 - 1/s).
    const double sp = tot.bf16 / (tot.fp8_gemm + tot.casts);
    if (sp > 1.0) {
      const double f_min = (1.0 - 1.0 / 1.3) / (1.0 - 1.0 / sp);
      std::snprintf(
          line, sizeof line,
          "%-6s 1.3x on the whole training step needs the linear layers to be >= %.0f %% of the bf16 step%s",
          m.name, 100 * f_min, f_min > 1 ? " (impossible)" : "");
    } else {
      std::snprintf(line, sizeof line, "%-6s FP8 is not faster than bf16 here: no step speedup", m.name);
    }
    summary.push_back(line);
    std::printf("%s\n", line);
  }
  std::printf(
      "\nsummary (casts include W's every pass: an upper bound; x's and dy's casts could later be fused into "
      "their producers):\n");
  for (const auto& l : summary) std::printf("  %s\n", l.c_str());
  return 0;
}
