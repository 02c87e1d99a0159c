// Cross-backend check and bandwidth bench of the CUDA small ops (src/ops/cuda/ops_cuda.h), for
// machines without GoogleTest (the H200 of the device tool): the checks are exactly those of
// tests/gpu/test_ops_cuda.cu (included here with its built-in mini runner), the bench times every
// op at the model's shape (128*197, 768) bf16.
//
// usage: gpu_ops_check_main [check|bench|all] [bench.csv]
//   KAT_TEST_FILTER=a,b     run only the checks whose name contains one of the parts
// Exit code: 0 when every check passed (bench-only: 0 unless a CUDA error).
// Built by bench/run_ops_h200.sh (nvcc + g++ objects of the CPU reference) and, when KAT_CUDA is
// on, by the CMake project (bench/*.cu).
#define KAT_OPS_NO_GTEST 1
#include "../tests/gpu/test_ops_cuda.cu"

#include <cuda_bf16.h>

#include <algorithm>
#include <cstdlib>
#include <functional>
#include <memory>
#include <string>
#include <vector>

namespace ops_bench {

using kat::cuda::Storage;
using kat_ops_test::DevBuf;

// ---- device-side random fill (host generation of GBs would dominate) ------------------------------
__device__ __forceinline__ uint64_t mix64(uint64_t z) {
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}
// Approximately normal (sum of 4 uniforms, unit variance), never exactly zero.
__global__ void fill_kernel(void* p, int64_t n, int bf16, uint64_t seed, float scale, float offset,
                            int positive) {
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const uint64_t h = mix64(seed * 0x9e3779b97f4a7c15ull + static_cast<uint64_t>(i));
    float z = 0.f;
    for (int k = 0; k < 4; ++k) z += static_cast<float>((h >> (16 * k)) & 0xffff) * (1.0f / 65536.0f);
    z = (z - 2.0f) * 1.7320508f;
    float v = offset + scale * z;
    if (positive) v = fabsf(v) + 1e-6f;
    if (v == 0.f) v = 1e-3f * scale;
    if (bf16)
      static_cast<__nv_bfloat16*>(p)[i] = __float2bfloat16_rn(v);
    else
      static_cast<float*>(p)[i] = v;
  }
}
__global__ void fill_mask_kernel(uint8_t* p, int64_t n, uint64_t seed) {
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x)
    p[i] = static_cast<uint8_t>(mix64(seed + static_cast<uint64_t>(i)) & 1u);
}

uint64_t g_seed = 12345;
void fill(void* p, int64_t n, Storage st, float scale, float offset = 0.f, bool positive = false) {
  fill_kernel<<<1024, 256>>>(p, n, st == Storage::BF16, ++g_seed, scale, offset, positive);
  KAT_CUDA_CHECK_LAUNCH();
}

struct Result {
  std::string op;
  double bytes = 0, us = 0, gbs = 0, pct = 0;
  int sets = 0;
};

// Median per-call time (ms) of `calls` calls rotating over nsets input sets, event-timed in
// batches of 8 calls after a warm-up.
double time_calls(const std::function<void(int)>& call, int nsets, cudaStream_t s) {
  constexpr int kBatches = 40, kCalls = 8;
  for (int w = 0; w < 2 * nsets; ++w) call(w % nsets);
  KAT_CUDA_CHECK(cudaStreamSynchronize(s));
  cudaEvent_t e0, e1;
  KAT_CUDA_CHECK(cudaEventCreate(&e0));
  KAT_CUDA_CHECK(cudaEventCreate(&e1));
  std::vector<float> ms;
  int k = 0;
  for (int b = 0; b < kBatches; ++b) {
    KAT_CUDA_CHECK(cudaEventRecord(e0, s));
    for (int c = 0; c < kCalls; ++c) call(k++ % nsets);
    KAT_CUDA_CHECK(cudaEventRecord(e1, s));
    KAT_CUDA_CHECK(cudaEventSynchronize(e1));
    float t = 0;
    KAT_CUDA_CHECK(cudaEventElapsedTime(&t, e0, e1));
    ms.push_back(t / kCalls);
  }
  KAT_CUDA_CHECK(cudaEventDestroy(e0));
  KAT_CUDA_CHECK(cudaEventDestroy(e1));
  std::sort(ms.begin(), ms.end());
  return ms[ms.size() / 2];
}

int run(const char* csv_path) {
  cudaDeviceProp prop{};
  int dev = 0;
  KAT_CUDA_CHECK(cudaGetDevice(&dev));
  KAT_CUDA_CHECK(cudaGetDeviceProperties(&prop, dev));
  const int64_t l2 = prop.l2CacheSize;
  std::printf("device %s, %d SMs, L2 %.0f MB, memory %.0f GiB\n", prop.name,
              prop.multiProcessorCount, l2 / 1e6, prop.totalGlobalMem / 1073741824.0);
  kat_ops_test::Stream stream;
  cudaStream_t s = stream.s;
  // KAT_BENCH_ONLY=layernorm,gelu: only the op groups whose name contains one of the parts.
  const char* only = std::getenv("KAT_BENCH_ONLY");
  auto want = [&](const std::string& group) { return kat_gpu_test::matches_filter(group, only); };
  auto ready = [] { KAT_CUDA_CHECK(cudaDeviceSynchronize()); };  // fills done before timing

  // Copy ceiling: device-to-device copy of 1 GiB (bytes read + written).
  double copy_gbs = 0;
  {
    const size_t bytes = size_t(1) << 30;
    DevBuf a(bytes), b(bytes);
    KAT_CUDA_CHECK(cudaMemset(a.p, 1, bytes));
    const double ms = time_calls(
        [&](int) { KAT_CUDA_CHECK(cudaMemcpyAsync(b.p, a.p, bytes, cudaMemcpyDeviceToDevice, s)); }, 1, s);
    copy_gbs = 2.0 * bytes / (ms * 1e-3) / 1e9;
    std::printf("device-to-device copy 1 GiB: %.3f ms, %.0f GB/s (read + write)\n", ms, copy_gbs);
  }

  const int64_t rows = 128 * 197, C = 768, N = rows * C;
  const Storage st = Storage::BF16;
  const size_t es = 2;
  auto nsets_for = [&](double set_bytes) {
    return static_cast<int>(std::clamp<double>(std::ceil(3.0 * l2 / set_bytes), 2, 8));
  };
  std::vector<Result> results;
  auto record = [&](const char* name, double bytes, int nsets, double ms) {
    Result r;
    r.op = name;
    r.bytes = bytes;
    r.us = ms * 1e3;
    r.gbs = bytes / (ms * 1e-3) / 1e9;
    r.pct = 100.0 * r.gbs / copy_gbs;
    r.sets = nsets;
    results.push_back(r);
    std::printf("  %-22s %8.1f MB  %8.2f us  %6.0f GB/s  %5.1f %% of copy  (%d sets)\n", name,
                bytes / 1e6, r.us, r.gbs, r.pct, nsets);
    std::fflush(stdout);
  };
  using BufP = std::unique_ptr<DevBuf>;
  auto mk = [](size_t bytes) { return std::make_unique<DevBuf>(bytes); };
  std::printf("shape (%lld, %lld) bf16, N = %lld elements; fp32 gamma/beta/stats/targets/state\n",
              static_cast<long long>(rows), static_cast<long long>(C), static_cast<long long>(N));

  // ---- LayerNorm forward / backward ----
  if (want("layernorm")) {
    const double fwd_bytes = 2.0 * N * es + rows * 8.0 + 2.0 * C * 4;
    const double bwd_bytes = 4.0 * N * es + rows * 8.0 + 2.0 * C * 4 * 2;
    const int ns = nsets_for(std::min(fwd_bytes, bwd_bytes));
    BufP gamma = mk(C * 4), beta = mk(C * 4), dg = mk(C * 4), db = mk(C * 4);
    BufP ws = mk(kat::cuda::layernorm_backward_workspace_bytes(rows, C));
    fill(gamma->p, C, Storage::F32, 0.2f, 1.0f);
    fill(beta->p, C, Storage::F32, 0.2f);
    fill(dg->p, C, Storage::F32, 1.0f);
    fill(db->p, C, Storage::F32, 1.0f);
    std::vector<BufP> x, y, dy, dx, mean, rstd;
    for (int i = 0; i < ns; ++i) {
      x.push_back(mk(N * es));
      y.push_back(mk(N * es));
      dy.push_back(mk(N * es));
      dx.push_back(mk(N * es));
      mean.push_back(mk(rows * 4));
      rstd.push_back(mk(rows * 4));
      fill(x[i]->p, N, st, 1.5f, 0.3f);
      fill(dy[i]->p, N, st, 1.0f);
      fill(dx[i]->p, N, st, 1.0f);
    }
    ready();
    const double tf = time_calls(
        [&](int i) {
          kat::cuda::layernorm_forward(rows, C, 1e-6f, st, x[i]->p, gamma->as<float>(), beta->as<float>(),
                                       y[i]->p, mean[i]->as<float>(), rstd[i]->as<float>(), s);
        },
        ns, s);
    record("layernorm_fwd", fwd_bytes, ns, tf);
    const double tb = time_calls(
        [&](int i) {
          kat::cuda::layernorm_backward(rows, C, st, x[i]->p, gamma->as<float>(), mean[i]->as<float>(),
                                        rstd[i]->as<float>(), dy[i]->p, dx[i]->p, dg->as<float>(),
                                        db->as<float>(), ws->p, s);
        },
        ns, s);
    record("layernorm_bwd", bwd_bytes, ns, tb);
    const double tfb = time_calls(
        [&](int i) {
          kat::cuda::layernorm_forward(rows, C, 1e-6f, st, x[i]->p, gamma->as<float>(), beta->as<float>(),
                                       y[i]->p, mean[i]->as<float>(), rstd[i]->as<float>(), s);
          kat::cuda::layernorm_backward(rows, C, st, x[i]->p, gamma->as<float>(), mean[i]->as<float>(),
                                        rstd[i]->as<float>(), dy[i]->p, dx[i]->p, dg->as<float>(),
                                        db->as<float>(), ws->p, s);
        },
        ns, s);
    record("layernorm_fwd+bwd", fwd_bytes + bwd_bytes, ns, tfb);
    std::printf("    (layernorm_bwd partial table: %.2f MB written + read, not counted)\n",
                kat::cuda::layernorm_backward_workspace_bytes(rows, C) / 1e6);
  }

  // ---- GELU ----
  if (want("gelu")) {
    const double fwd_bytes = 2.0 * N * es, bwd_bytes = 3.0 * N * es;
    const int ns = nsets_for(fwd_bytes);
    std::vector<BufP> x, y, dy, dx;
    for (int i = 0; i < ns; ++i) {
      x.push_back(mk(N * es));
      y.push_back(mk(N * es));
      dy.push_back(mk(N * es));
      dx.push_back(mk(N * es));
      fill(x[i]->p, N, st, 2.0f);
      fill(dy[i]->p, N, st, 1.0f);
    }
    ready();
    record("gelu_fwd", fwd_bytes, ns,
           time_calls([&](int i) { kat::cuda::gelu_forward(N, st, x[i]->p, y[i]->p, s); }, ns, s));
    record("gelu_bwd", bwd_bytes, ns,
           time_calls([&](int i) { kat::cuda::gelu_backward(N, st, x[i]->p, dy[i]->p, dx[i]->p, s); },
                      ns, s));
  }

  // ---- softmax cross-entropy (B = 25216 rows of K = 768 classes) ----
  if (want("softmax_xent")) {
    const double bytes = 2.0 * N * es + 4.0 * N + 4.0 * rows;
    const int ns = nsets_for(bytes);
    std::vector<BufP> z, t, dz, rl;
    for (int i = 0; i < ns; ++i) {
      z.push_back(mk(N * es));
      t.push_back(mk(N * 4));
      dz.push_back(mk(N * es));
      rl.push_back(mk(rows * 4));
      fill(z[i]->p, N, st, 2.0f);
      fill(t[i]->p, N, Storage::F32, 1.0f / C, 0.f, true);
    }
    ready();
    record("softmax_xent", bytes, ns, time_calls([&](int i) {
             kat::cuda::softmax_xent(rows, C, st, z[i]->p, t[i]->as<float>(), 0.1f, dz[i]->p,
                                     rl[i]->as<float>(), nullptr, s);
           }, ns, s));
  }

  // ---- residual with drop-path, scale_rows (B = 128 samples of 197*768) ----
  if (want("residual")) {
    const int64_t B = 128, per = 197 * C;
    const double rbytes = 3.0 * N * es, sbytes = 2.0 * N * es;
    const int ns = nsets_for(sbytes);
    BufP sc = mk(B * 4);
    fill(sc->p, B, Storage::F32, 0.2f, 1.0f, true);
    std::vector<BufP> x, f, y;
    for (int i = 0; i < ns; ++i) {
      x.push_back(mk(N * es));
      f.push_back(mk(N * es));
      y.push_back(mk(N * es));
      fill(x[i]->p, N, st, 1.0f);
      fill(f[i]->p, N, st, 1.0f);
    }
    ready();
    record("residual_add", rbytes, ns, time_calls([&](int i) {
             kat::cuda::residual_add(B, per, st, x[i]->p, f[i]->p, sc->as<float>(), y[i]->p, s);
           }, ns, s));
    record("scale_rows", sbytes, ns, time_calls([&](int i) {
             kat::cuda::scale_rows(B, per, st, sc->as<float>(), f[i]->p, y[i]->p, s);
           }, ns, s));
  }

  // ---- AdamW (+bf16 copy) and EMA over N fp32 parameters ----
  if (want("adamw_ema")) {
    const double abytes = 16.0 * N + 12.0 * N + 1.0 * N + 2.0 * N, ebytes = 12.0 * N;
    const int ns = 2;
    std::vector<BufP> p, g, m, v, mask, pbf, ema;
    for (int i = 0; i < ns; ++i) {
      p.push_back(mk(N * 4));
      g.push_back(mk(N * 4));
      m.push_back(mk(N * 4));
      v.push_back(mk(N * 4));
      mask.push_back(mk(N));
      pbf.push_back(mk(N * 2));
      ema.push_back(mk(N * 4));
      fill(p[i]->p, N, Storage::F32, 0.05f);
      fill(g[i]->p, N, Storage::F32, 0.01f);
      fill(m[i]->p, N, Storage::F32, 1e-3f);
      fill(v[i]->p, N, Storage::F32, 1e-4f, 0.f, true);
      fill(ema[i]->p, N, Storage::F32, 0.05f);
      fill_mask_kernel<<<1024, 256>>>(mask[i]->as<uint8_t>(), N, ++g_seed);
      KAT_CUDA_CHECK_LAUNCH();
    }
    const auto sc = kat::cuda::adamw_scalars(1e-3, 0.9, 0.999, 1e-8, 0.05, 10);
    ready();
    record("adamw_step+bf16", abytes, ns, time_calls([&](int i) {
             kat::cuda::adamw_step(N, sc, p[i]->as<float>(), g[i]->as<float>(), m[i]->as<float>(),
                                   v[i]->as<float>(), mask[i]->as<uint8_t>(), pbf[i]->p, s);
           }, ns, s));
    record("ema_update", ebytes, ns, time_calls([&](int i) {
             kat::cuda::ema_update(N, ema[i]->as<float>(), p[i]->as<float>(), 0.9998, s);
           }, ns, s));
  }
  KAT_CUDA_CHECK(cudaDeviceSynchronize());

  if (csv_path) {
    if (FILE* fcsv = std::fopen(csv_path, "w")) {
      std::fprintf(fcsv, "op,rows,C,storage,bytes,median_us,GBps,pct_copy,copy_GBps,sets\n");
      for (const auto& r : results)
        std::fprintf(fcsv, "%s,%lld,%lld,bf16,%.0f,%.3f,%.1f,%.1f,%.1f,%d\n", r.op.c_str(),
                     static_cast<long long>(rows), static_cast<long long>(C), r.bytes, r.us, r.gbs,
                     r.pct, copy_gbs, r.sets);
      std::fclose(fcsv);
    }
  }
  return 0;
}

}  // namespace ops_bench

int main(int argc, char** argv) {
  const std::string mode = argc > 1 ? argv[1] : "all";
  const char* csv = argc > 2 ? argv[2] : nullptr;
  if (mode != "check" && mode != "bench" && mode != "all") {
    std::fprintf(stderr, "usage: %s [check|bench|all] [bench.csv]\n", argv[0]);
    return 2;
  }
  if (!kat_ops_test::have_gpu()) {
    std::printf("no CUDA device\n");
    return 2;
  }
  int rc = 0;
  try {
    if (mode != "bench") rc |= kat_gpu_test::mini::run_tests(std::getenv("KAT_TEST_FILTER")) != 0;
    if (mode != "check") rc |= ops_bench::run(csv) != 0;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 3;
  }
  return rc;
}
