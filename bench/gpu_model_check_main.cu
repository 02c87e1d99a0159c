// Whole-model check and training/inference throughput of KatModelCuda, for machines without
// GoogleTest (the H200 of the device tool). The checks are exactly those of
// tests/gpu/test_model_cuda.cu (included with its built-in mini runner).
//
// usage: gpu_model_check_main [check|bench|all] [bench.csv]
//   KAT_TEST_FILTER=a,b    run only the checks whose name contains one of the parts
//   KAT_MODEL_QUICK=1      skip the full kat_tiny check
//   KAT_BENCH_MODELS=kat_tiny_patch16_224,deit_tiny_patch16_224   KAT_BENCH_BATCH=256
//   KAT_BENCH_PREC=bf16|fp32   KAT_BENCH_ITERS=20
// bench: synthetic data (device-generated normal images, random soft targets), bf16, 224^2:
//   train step = zero_grad + forward (train, drop-path as configured) + softmax-xent + backward +
//   AdamW; inference = forward (eval). CUDA events around each iteration after 5 warm-up
//   iterations; the median is reported. Exit code: 0 when every check passed.
#define KAT_MODEL_NO_GTEST 1
#include "../tests/gpu/test_model_cuda.cu"

#include "ops/cuda/attention.h"
#include "ops/cuda/gemm.h"

#include <cuda_bf16.h>

#include <fstream>
#include <functional>

#include <sstream>

namespace model_bench {

__device__ __forceinline__ uint64_t mix64(uint64_t z) {
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}
__global__ void fill_kernel(float* p, int64_t n, uint64_t seed, float scale, float offset) {
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) {
    const uint64_t h = mix64(seed * 0x9e3779b97f4a7c15ull + uint64_t(i));
    float z = 0.f;
    for (int k = 0; k < 4; ++k) z += float((h >> (16 * k)) & 0xffff) * (1.0f / 65536.0f);
    p[i] = offset + scale * (z - 2.0f) * 1.7320508f;
  }
}

// Same values, stored in `st` (n elements).
__global__ void fill_storage_kernel(void* p, int64_t n, int bf16, uint64_t seed, float scale) {
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) {
    const uint64_t h = mix64(seed * 0x9e3779b97f4a7c15ull + uint64_t(i));
    float z = 0.f;
    for (int k = 0; k < 4; ++k) z += float((h >> (16 * k)) & 0xffff) * (1.0f / 65536.0f);
    const float v = scale * (z - 2.0f) * 1.7320508f;
    if (bf16)
      static_cast<__nv_bfloat16*>(p)[i] = __float2bfloat16_rn(v);
    else
      static_cast<float*>(p)[i] = v;
  }
}

std::vector<std::string> split(const std::string& s) {
  std::vector<std::string> out;
  std::stringstream ss(s);
  std::string part;
  while (std::getline(ss, part, ','))
    if (!part.empty()) out.push_back(part);
  return out;
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

int run_bench(const char* csv_path) {
  if (!kat_model_test::have_gpu()) {
    std::printf("bench: no GPU\n");
    return 0;
  }
  const char* em = std::getenv("KAT_BENCH_MODELS");
  const auto models = split(em ? em : "kat_tiny_patch16_224,deit_tiny_patch16_224");
  const int B = std::getenv("KAT_BENCH_BATCH") ? std::atoi(std::getenv("KAT_BENCH_BATCH")) : 256;
  const int iters = std::getenv("KAT_BENCH_ITERS") ? std::atoi(std::getenv("KAT_BENCH_ITERS")) : 20;
  const char* ep = std::getenv("KAT_BENCH_PREC");
  const bool f32 = ep && std::string(ep) == "fp32";
  const auto prec = f32 ? kat::DType::F32 : kat::DType::BF16;
  cudaDeviceProp prop{};
  KAT_CUDA_CHECK(cudaGetDeviceProperties(&prop, 0));
  std::printf("bench: %s, batch %d, %s, %d timed iterations (median)\n", prop.name, B, f32 ? "fp32" : "bf16", iters);
  std::FILE* csv = csv_path ? std::fopen(csv_path, "w") : nullptr;
  if (csv) std::fprintf(csv, "model,mode,precision,batch,ms_median,img_per_s,drop_path\n");
  cudaStream_t s;
  KAT_CUDA_CHECK(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking));
  {  // components at the kat_tiny shape (B, 197, 192, 3 heads), bf16: where the step's time goes
    const int64_t N = 197, D = 192, H = 3, BN = int64_t(B) * N;
    const auto st = f32 ? kat::DType::F32 : kat::DType::BF16;
    const size_t es = kat::dtype_size(st);
    kat_model_test::DevBuf qkv(BN * 3 * D * es), out(BN * D * es), lse(B * H * N * 4), dout(BN * D * es),
        dqkv(BN * 3 * D * es), ws(kat::cuda::attention_backward_workspace_bytes(B, N, H)), w(4 * D * D * es),
        bias(4 * D * 4), biass(4 * D * es), h(BN * 4 * D * es), dw(4 * D * D * 4);
    for (auto* p : {&qkv, &dout, &h, &w})
      fill_storage_kernel<<<1024, 256, 0, s>>>(p->p, int64_t(p->bytes / es), !f32, 11, p == &w ? 0.02f : 0.5f);
    fill_kernel<<<4, 256, 0, s>>>(bias.as<float>(), 4 * D, 13, 0.02f, 0.f);
    fill_storage_kernel<<<4, 256, 0, s>>>(biass.p, 4 * D, !f32, 13, 0.02f);
    kat::cuda::Gemm gemm;
    cudaEvent_t c0, c1;
    KAT_CUDA_CHECK(cudaEventCreate(&c0));
    KAT_CUDA_CHECK(cudaEventCreate(&c1));
    auto time_op = [&](const char* what, const std::function<void()>& fn) {
      for (int wu = 0; wu < 3; ++wu) fn();
      std::vector<double> ms;
      for (int it = 0; it < 10; ++it) {
        KAT_CUDA_CHECK(cudaEventRecord(c0, s));
        fn();
        KAT_CUDA_CHECK(cudaEventRecord(c1, s));
        KAT_CUDA_CHECK(cudaEventSynchronize(c1));
        float t = 0;
        KAT_CUDA_CHECK(cudaEventElapsedTime(&t, c0, c1));
        ms.push_back(t);
      }
      std::printf("  component %-34s %8.3f ms  (x12 blocks: %7.2f ms)\n", what, median(ms), 12 * median(ms));
    };
    time_op("attention fwd (B,197,192,3)", [&] { kat::cuda::attention_forward({.B = B, .N = N, .D = D, .H = H, .dtype = st, .qkv = qkv.p, .out = out.p, .lse = lse.as<float>()}, s); });
    time_op("attention bwd", [&] {
      kat::cuda::attention_backward({.B = B, .N = N, .D = D, .H = H, .dtype = st, .qkv = qkv.p, .out = out.p, .lse = lse.as<float>(), .dout = dout.p, .dqkv = dqkv.p, .workspace = ws.p}, s);
    });
    kat::cuda::attention_force_simt(true);
    time_op("attention fwd (SIMT kernels)", [&] { kat::cuda::attention_forward({.B = B, .N = N, .D = D, .H = H, .dtype = st, .qkv = qkv.p, .out = out.p, .lse = lse.as<float>()}, s); });
    time_op("attention bwd (SIMT kernels)", [&] {
      kat::cuda::attention_backward({.B = B, .N = N, .D = D, .H = H, .dtype = st, .qkv = qkv.p, .out = out.p, .lse = lse.as<float>(), .dout = dout.p, .dqkv = dqkv.p, .workspace = ws.p}, s);
    });
    kat::cuda::attention_force_simt(false);
    time_op("gemm fc1 fwd, no bias", [&] { gemm.forward(BN, D, 4 * D, st, out.p, w.p, nullptr, h.p, s); });
    time_op("gemm fc1 fwd (BN,192)->(BN,768)", [&] { gemm.forward(BN, D, 4 * D, st, out.p, w.p, bias.as<float>(), h.p, s); });
    time_op("gemm fc1 fwd, bias epilogue (copy)", [&] {
      gemm.forward(BN, D, 4 * D, st, out.p, w.p, bias.as<float>(), h.p, s, biass.p);
    });
    time_op("gemm fc1 bwd data", [&] { gemm.backward_data(BN, D, 4 * D, st, h.p, w.p, out.p, s); });
    time_op("gemm fc1 bwd weight", [&] { gemm.backward_weight(BN, D, 4 * D, st, h.p, out.p, dw.as<float>(), s); });
    kat_model_test::DevBuf cws(kat::cuda::column_sum_workspace_bytes(BN, 4 * D));
    time_op("bias grad colsum (BN,768)", [&] { kat::cuda::column_sum_accumulate(BN, 4 * D, st, h.p, bias.as<float>(), cws.p, s); });
    cudaEventDestroy(c0);
    cudaEventDestroy(c1);
  }
  for (const auto& name : models) {
    kat::ModelConfig cfg = kat::ModelConfig::load(name);
    kat::KatModel cpu(cfg);
    cpu.init_params(1);
    kat::KatModelCuda gpu(cfg, prec, s);
    kat::DeviceOptimizer opt(gpu, kat::AdamWConfig{});  // AdamW state, before the plan as in GpuRunner
    gpu.upload_params(cpu.params.data());
    gpu.plan(B);
    const int64_t img = int64_t(B) * cfg.in_chans * cfg.img_size * cfg.img_size;
    kat_model_test::DevBuf img_(img * 4), tgt_(size_t(B) * cfg.num_classes * 4);
    fill_kernel<<<1024, 256, 0, s>>>(img_.as<float>(), img, 7, 1.f, 0.f);
    {
      std::mt19937_64 g(5);
      auto t = kat_model_test::random_targets(B, cfg.num_classes, g);
      KAT_CUDA_CHECK(cudaMemcpyAsync(tgt_.p, t.data(), t.size() * 4, cudaMemcpyHostToDevice, s));
      KAT_CUDA_CHECK(cudaStreamSynchronize(s));
    }
    kat::Rng rng(3);
    cudaEvent_t e0, e1;
    KAT_CUDA_CHECK(cudaEventCreate(&e0));
    KAT_CUDA_CHECK(cudaEventCreate(&e1));
    for (int mode = 0; mode < 2; ++mode) {
      auto step = [&] {
        if (mode == 0) {  // one training step: zero_grad, forward(train), loss, backward, AdamW
          gpu.zero_grad();
          gpu.forward(img_.as<float>(), B, true, &rng);
          gpu.loss_forward_backward(tgt_.as<float>(), 0.1f);
          gpu.backward(gpu.dlogits());
          opt.step(1e-4);
        } else
          gpu.forward(img_.as<float>(), B, false);
      };
      for (int w = 0; w < 5; ++w) step();
      KAT_CUDA_CHECK(cudaStreamSynchronize(s));
      std::vector<double> ms;
      for (int it = 0; it < iters; ++it) {
        KAT_CUDA_CHECK(cudaEventRecord(e0, s));
        step();
        KAT_CUDA_CHECK(cudaEventRecord(e1, s));
        KAT_CUDA_CHECK(cudaEventSynchronize(e1));
        float t = 0;
        KAT_CUDA_CHECK(cudaEventElapsedTime(&t, e0, e1));
        ms.push_back(t);
      }
      const double med = median(ms);
      const double ips = B / (med * 1e-3);
      const char* mname = mode == 0 ? "train" : "infer";
      std::printf("  %-24s %-5s %8.2f ms  %9.0f img/s%s\n", name.c_str(), mname, med, ips,
                  mode == 0 ? (cfg.drop_path_rate > 0 ? "  (drop-path on)" : "") : "");
      if (mode == 0) std::printf("    final loss %.4f (finite: %d)\n", gpu.loss_value(), std::isfinite(gpu.loss_value()) ? 1 : 0);
      if (csv) std::fprintf(csv, "%s,%s,%s,%d,%.4f,%.1f,%.3f\n", name.c_str(), mname, f32 ? "fp32" : "bf16", B, med, ips, cfg.drop_path_rate);
      std::fflush(stdout);
    }
    cudaEventDestroy(e0);
    cudaEventDestroy(e1);
  }
  if (csv) std::fclose(csv);
  cudaStreamDestroy(s);
  return 0;
}

}  // namespace model_bench

int main(int argc, char** argv) {
  const std::string what = argc > 1 ? argv[1] : "all";
  int rc = 0;
  try {
    if (what == "check" || what == "all") {
      if (!kat_model_test::have_gpu()) std::printf("no GPU: every check is skipped\n");
      rc = kat_gpu_test::mini::run_tests(std::getenv("KAT_TEST_FILTER"), /*print_seconds=*/true) ? 1 : 0;
    }
    if (what == "bench" || what == "all") model_bench::run_bench(argc > 2 ? argv[2] : nullptr);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 2;
  }
  return rc;
}
