// GPU tests of the GR-KAN CUDA op (src/ops/cuda/grkan_cuda.h) against the CPU reference
// kat::ops::grkan_forward/backward<float> (src/ops/cpu/grkan_cpu.cpp).
//
// Builds two ways:
//  - in the CMake project (kat_gpu_tests, label gpu) with GoogleTest;
//  - stand-alone where gtest is missing (the GPU machine): define KAT_GRKAN_NO_GTEST (or
//    KAT_GPU_TEST_NO_GTEST) or just compile without gtest on the include path; the minimal macro
//    layer of gpu_test_util.cuh then provides TEST and EXPECT_*/ASSERT_*, and this file defines
//    main(). bench/run_grkan_h200.sh builds it that way.
//
// Every check draws fresh random inputs (seed printed), poisons outputs with NaN before each run,
// and fails on any NaN. Tolerances (each with its reason):
//  - fp32 storage, y and dx: ||gpu-ref||/||ref|| <= 1e-5, and per element
//    |gpu-ref| <= 1e-5 |ref| + 1e-5 rms(ref). Both sides do fp32 math on identical inputs; they
//    differ by the order of operations (FMA contraction, powers vs Horner) and the GPU's
//    rcp.approx (<= 1 ulp), i.e. a few ulp of the largest term of P, Q (~1e-6 relative), which
//    cancellation in P near its roots (x ~ -7: terms ~18, P ~ 0.05) turns into an absolute error
//    that the rms floor covers.
//  - bf16 storage, y and dx: the CPU runs on the same bf16-rounded inputs in fp32; the GPU result is
//    the fp32 value rounded once to bf16, whose error is at most half an ulp = 2^-8 relative.
//    Norm-wise bound 8e-3 (2x the worst case), per element 2^-8 |ref| + 1e-5 rms(ref).
//  - da, db (always fp32): ||gpu-ref||/||ref|| <= 1e-4. Sums of up to millions of terms: both
//    sides sum fp32 terms (GPU: fp32 per-thread and per-warp partials, double across warps; CPU:
//    double per chunk); the per-term differences are ~1e-6 relative and the sums cancel (random
//    dy), so the relative error of the result is a few 1e-6; 1e-4 leaves room and still catches a
//    lost block or a missing group (>= 1e-2).
// Determinism: backward runs repeatedly on the same inputs and da/db/dx must be bitwise identical.
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "core/error.h"
#include "ops/cuda/cuda_check.h"
#include "ops/cuda/grkan_cuda.h"
#include "ops/grkan.h"

// Without gtest on the include path, the mini layer of gpu_test_util.cuh (main() at the end).
#if !defined(KAT_GPU_TEST_NO_GTEST) && !__has_include(<gtest/gtest.h>)
#define KAT_GPU_TEST_NO_GTEST 1
#endif
#include "gpu_test_util.cuh"

namespace {

using kat::cuda::Storage;
using kat::ops::GrkanShape;
using kat_gpu_test::all_finite;
using kat_gpu_test::DevBuf;
using kat_gpu_test::DevTensor;
using kat_gpu_test::download_f32;
using kat_gpu_test::fresh_seed;
using kat_gpu_test::rel_err;
using kat_gpu_test::round_bf16;
using kat_gpu_test::upload_f32;

// Number of elements with |got - ref| > rtol |ref| + atol_rms * rms(ref); first offender in *where.
size_t count_elem_violations(const std::vector<float>& got, const std::vector<float>& ref,
                             double rtol, double atol_rms, std::string* where) {
  double ss = 0;
  for (float r : ref) ss += static_cast<double>(r) * r;
  const double rms = ref.empty() ? 0 : std::sqrt(ss / ref.size());
  size_t bad = 0;
  for (size_t i = 0; i < ref.size(); ++i) {
    const double d = std::abs(static_cast<double>(got[i]) - ref[i]);
    if (!(d <= rtol * std::abs(ref[i]) + atol_rms * rms)) {
      if (bad == 0 && where)
        *where = "element " + std::to_string(i) + ": got " + std::to_string(got[i]) + ", ref " +
                 std::to_string(ref[i]);
      ++bad;
    }
  }
  return bad;
}

// SPEC.md swish initial coefficients.
constexpr double kSwishA[6] = {3.054879741161051e-07, 0.5000007853744493,  0.24999783422824703,
                               0.05326628273219478,   0.005803034571292244, 0.0002751961022402342};
constexpr double kSwishB[4] = {-4.111554955950634e-06, 0.10652899335007572,
                               -1.2690007399796238e-06, 0.0005502331264140556};

// Coefficients: swish + noise for degrees (5, 4); for other degrees the swish values where they
// exist and small decaying random values past them. Never zero (a zero would hide a wrong index).
void make_coefficients(const GrkanShape& s, std::mt19937_64& rng, std::vector<float>& a,
                       std::vector<float>& b) {
  std::normal_distribution<double> nd(0.0, 1.0);
  a.resize(static_cast<size_t>(s.num_rows) * (s.m + 1));
  b.resize(static_cast<size_t>(s.groups) * s.n);
  for (int r = 0; r < s.num_rows; ++r)
    for (int k = 0; k <= s.m; ++k) {
      const double base = k < 6 ? kSwishA[k] : 1e-5 / k;
      const double scale = std::pow(0.3, k);  // noise shrinks with the power of x
      double v = base + 0.05 * scale * nd(rng);
      if (v == 0.0) v = 1e-7;
      a[r * (s.m + 1) + k] = static_cast<float>(v);
    }
  for (int g = 0; g < s.groups; ++g)
    for (int k = 0; k < s.n; ++k) {
      const double base = k < 4 ? kSwishB[k] : 1e-5 / (k + 1);
      const double scale = std::pow(0.3, k + 1);
      double v = base + 0.05 * scale * nd(rng);  // b1, b3 change sign between groups
      if (v == 0.0) v = 1e-7;
      b[g * s.n + k] = static_cast<float>(v);
    }
}

struct Case {
  int64_t rows = 1001;
  int dim = 768;
  int groups = 8;
  int num_rows = 1;
  int m = 5, n = 4;
  Storage st = Storage::F32;
  size_t misalign = 0;  // element offset of x, y, dy, dx from a 256-byte boundary
  bool alias_dx_dy = false;
  int expect_vec = -1;  // launch_info vector width to expect (-1: don't check)
};

std::string describe(const Case& c, uint64_t seed) {
  return "rows " + std::to_string(c.rows) + " D " + std::to_string(c.dim) + " G " +
         std::to_string(c.groups) + " An " + std::to_string(c.num_rows) + " deg (" +
         std::to_string(c.m) + "," + std::to_string(c.n) + ") " +
         (c.st == Storage::F32 ? "f32" : "bf16") + " misalign " + std::to_string(c.misalign) +
         (c.alias_dx_dy ? " dx=dy" : "") + " seed " + std::to_string(seed);
}

// One full forward + backward check against the CPU reference.
void run_case(const Case& c) {
  const uint64_t seed = fresh_seed();
  const std::string what = describe(c, seed);
  std::printf("    case: %s\n", what.c_str());
  std::mt19937_64 rng(seed);
  GrkanShape s;
  s.rows = c.rows;
  s.dim = c.dim;
  s.groups = c.groups;
  s.num_rows = c.num_rows;
  s.m = c.m;
  s.n = c.n;
  const size_t N = static_cast<size_t>(c.rows) * c.dim;
  const bool bf = c.st == Storage::BF16;

  std::vector<float> x(N), dy(N), a, b;
  std::normal_distribution<float> nx(0.f, 1.5f), ng(0.f, 1.f);
  for (auto& v : x) v = bf ? round_bf16(nx(rng)) : nx(rng);
  for (auto& v : dy) v = bf ? round_bf16(ng(rng)) : ng(rng);
  make_coefficients(s, rng, a, b);

  // CPU reference (fp32 math on exactly the values the GPU sees).
  std::vector<float> y_ref(N), dx_ref(N);
  kat::ops::grkan_forward<float>(s, x.data(), a.data(), b.data(), y_ref.data());
  std::vector<float> da0(a.size(), 0.f), db0(b.size(), 0.f);
  kat::ops::grkan_backward<float>(s, x.data(), dy.data(), a.data(), b.data(), dx_ref.data(),
                                  da0.data(), db0.data());
  // Non-zero initial da/db of the gradients' own size, so that overwriting instead of
  // accumulating fails the 1e-4 check by orders of magnitude.
  std::vector<float> da_init(a.size()), db_init(b.size());
  for (size_t i = 0; i < a.size(); ++i) da_init[i] = 0.5f * da0[(i + 1) % a.size()] + 0.25f;
  for (size_t i = 0; i < b.size(); ++i) db_init[i] = 0.5f * db0[(i + 1) % b.size()] - 0.25f;
  std::vector<float> da_ref = da_init, db_ref = db_init, dx_tmp(N);
  kat::ops::grkan_backward<float>(s, x.data(), dy.data(), a.data(), b.data(), dx_tmp.data(),
                                  da_ref.data(), db_ref.data());

  // GPU.
  DevTensor dxin(c.st, N, c.misalign), ddy(c.st, N, c.misalign), dyout(c.st, N, c.misalign),
      ddx(c.st, N, c.misalign);
  DevBuf da_d(std::max<size_t>(a.size(), 1) * 4), db_d(std::max<size_t>(b.size(), 1) * 4),
      a_d(std::max<size_t>(a.size(), 1) * 4), b_d(std::max<size_t>(b.size(), 1) * 4);
  dxin.upload(x);
  ddy.upload(dy);
  upload_f32(a_d.as<float>(), a);
  if (!b.empty()) upload_f32(b_d.as<float>(), b);
  const size_t ws_bytes = kat::cuda::grkan_backward_workspace_bytes(s);
  DevBuf ws(std::max<size_t>(ws_bytes, 4));
  cudaStream_t stream;
  KAT_CUDA_CHECK(cudaStreamCreate(&stream));

  if (c.expect_vec >= 0) {
    const bool aligned = c.misalign * kat::cuda::storage_bytes(c.st) % 16 == 0;
    const auto info = kat::cuda::grkan_launch_info(s, c.st, true, aligned);
    EXPECT_EQ(info.vec, c.expect_vec) << what;
  }

  // Forward.
  dyout.poison();
  kat::cuda::grkan_forward(s, c.st, dxin.ptr(), a_d.as<float>(), b_d.as<float>(), dyout.ptr(),
                           stream);
  KAT_CUDA_CHECK(cudaStreamSynchronize(stream));
  const std::vector<float> y = dyout.download();
  EXPECT_TRUE(all_finite(y)) << "NaN/inf in y: " << what;
  const double fwd_tol = bf ? 8e-3 : 1e-5, elem_rtol = bf ? 1.0 / 256 : 1e-5;
  const double ey = rel_err(y, y_ref);
  EXPECT_LE(ey, fwd_tol) << "y: " << what;
  std::string where;
  EXPECT_EQ(count_elem_violations(y, y_ref, elem_rtol, 1e-5, &where), 0u) << "y " << where << " "
                                                                          << what;

  // Backward, three times on the same inputs: bitwise identical every time. Runs 1 and 2 also
  // ask for the column sums of dx (fc1's bias gradient in the model; fused into the kernel for
  // degrees (5, 4) with 16-byte vectors): dx, da, db must stay bitwise those of run 0, and the
  // sums match the CPU's dx summed in double, accumulated onto a non-zero start.
  std::vector<float> cs_init(static_cast<size_t>(c.dim)), cs_first;
  std::vector<double> cs_ref(cs_init.size()), cs_scale(cs_init.size(), 0.0);
  for (size_t j = 0; j < cs_init.size(); ++j) cs_ref[j] = cs_init[j] = 0.1f * float(j % 7) - 0.3f;
  for (int64_t r = 0; r < c.rows; ++r)
    for (int j = 0; j < c.dim; ++j) {
      cs_ref[size_t(j)] += dx_ref[size_t(r) * c.dim + j];
      cs_scale[size_t(j)] += std::fabs(dx_ref[size_t(r) * c.dim + j]);
    }
  DevBuf cs_d(cs_init.size() * 4);
  std::vector<float> dx_first, da_first, db_first;
  for (int rep = 0; rep < 3; ++rep) {
    upload_f32(da_d.as<float>(), da_init);
    if (!b.empty()) upload_f32(db_d.as<float>(), db_init);
    void* dx_ptr = ddx.ptr();
    if (c.alias_dx_dy) {
      ddy.upload(dy);  // dx overwrites dy: restore it
      dx_ptr = ddy.ptr();
    } else {
      ddx.poison();
    }
    KAT_CUDA_CHECK(cudaMemset(ws.p, 0xff, ws.bytes));  // stale partials must not matter
    upload_f32(cs_d.as<float>(), cs_init);
    kat::cuda::grkan_backward(s, c.st, dxin.ptr(), ddy.ptr(), a_d.as<float>(), b_d.as<float>(),
                              dx_ptr, da_d.as<float>(), db_d.as<float>(), ws.p, stream,
                              rep > 0 ? cs_d.as<float>() : nullptr);
    KAT_CUDA_CHECK(cudaStreamSynchronize(stream));
    if (rep > 0) {
      const std::vector<float> cs = download_f32(cs_d.as<float>(), cs_init.size());
      if (rep == 1) {
        // Fused: fp32 sums of the fp32 dx (~1e-6 from the CPU's per element); otherwise sums of
        // the stored dx, bf16-rounded (2^-9 relative per element): bounds relative to sum |dx|.
        const double tol = bf ? 4e-3 : 3e-5;
        size_t bad = 0;
        for (size_t j = 0; j < cs.size(); ++j)
          if (!(std::fabs(double(cs[j]) - cs_ref[j]) <= tol * cs_scale[j] + 1e-5)) ++bad;
        EXPECT_TRUE(all_finite(cs)) << "NaN/inf in dx column sums: " << what;
        EXPECT_EQ(bad, 0u) << "dx column sums off in " << bad << " columns: " << what;
        cs_first = cs;
      } else {
        EXPECT_TRUE(cs == cs_first) << "dx column sums not bitwise reproducible: " << what;
      }
    }
    const std::vector<float> dxv = c.alias_dx_dy ? ddy.download() : ddx.download();
    const std::vector<float> dav = download_f32(da_d.as<float>(), a.size());
    const std::vector<float> dbv = b.empty() ? std::vector<float>{}
                                             : download_f32(db_d.as<float>(), b.size());
    if (rep == 0) {
      EXPECT_TRUE(all_finite(dxv)) << "NaN/inf in dx: " << what;
      EXPECT_TRUE(all_finite(dav) && all_finite(dbv)) << "NaN/inf in da/db: " << what;
      const double edx = rel_err(dxv, dx_ref), eda = rel_err(dav, da_ref),
                   edb = b.empty() ? 0.0 : rel_err(dbv, db_ref);
      EXPECT_LE(edx, fwd_tol) << "dx: " << what;
      EXPECT_EQ(count_elem_violations(dxv, dx_ref, elem_rtol, 1e-5, &where), 0u)
          << "dx " << where << " " << what;
      EXPECT_LE(eda, 1e-4) << "da: " << what;
      EXPECT_LE(edb, 1e-4) << "db: " << what;
      std::printf("    rel err: y %.2e  dx %.2e  da %.2e  db %.2e\n", ey, edx, eda, edb);
      dx_first = dxv;
      da_first = dav;
      db_first = dbv;
    } else {
      EXPECT_TRUE(std::memcmp(dav.data(), da_first.data(), dav.size() * 4) == 0)
          << "da not bitwise reproducible: " << what;
      EXPECT_TRUE(dbv.empty() || std::memcmp(dbv.data(), db_first.data(), dbv.size() * 4) == 0)
          << "db not bitwise reproducible: " << what;
      EXPECT_TRUE(std::memcmp(dxv.data(), dx_first.data(), dxv.size() * 4) == 0)
          << "dx not bitwise reproducible: " << what;
    }
  }
  KAT_CUDA_CHECK(cudaStreamDestroy(stream));
}

}  // namespace

TEST(GrkanCuda, F32SharedNumeratorOddRows) {
  REQUIRE_GPU();
  Case c;
  c.rows = 1001;
  c.st = Storage::F32;
  c.expect_vec = 4;
  run_case(c);
}

TEST(GrkanCuda, Bf16SharedNumeratorOddRows) {
  REQUIRE_GPU();
  Case c;
  c.rows = 1001;
  c.st = Storage::BF16;
  c.expect_vec = 8;
  run_case(c);
}

TEST(GrkanCuda, PerGroupNumerator) {
  REQUIRE_GPU();
  for (Storage st : {Storage::F32, Storage::BF16}) {
    Case c;
    c.rows = 257;
    c.dim = 192;
    c.num_rows = 8;
    c.st = st;
    run_case(c);
  }
}

// Many grid-stride trips per thread and a real model's width (kat_tiny, FFN input side).
TEST(GrkanCuda, ModelShapeTiny) {
  REQUIRE_GPU();
  for (Storage st : {Storage::BF16, Storage::F32}) {
    Case c;
    c.rows = 128 * 197;
    c.dim = 192;
    c.st = st;
    run_case(c);
  }
}

TEST(GrkanCuda, WideFewRowsAndSingleRow) {
  REQUIRE_GPU();
  for (int64_t rows : {1, 3, 77}) {
    Case c;
    c.rows = rows;
    c.dim = 3072;
    c.st = Storage::BF16;
    run_case(c);
  }
}

// (D/G) % vec != 0: scalar fallback.
TEST(GrkanCuda, GroupWidthNotMultipleOfVector) {
  REQUIRE_GPU();
  for (Storage st : {Storage::F32, Storage::BF16}) {
    Case c;
    c.rows = 333;
    c.dim = 120;  // D/G = 15
    c.st = st;
    c.expect_vec = 1;
    run_case(c);
  }
  Case c;  // D/G = 12: 16-byte path for fp32 (4 | 12) but not for bf16 (8 does not divide 12)
  c.rows = 129;
  c.dim = 96;
  c.st = Storage::BF16;
  c.expect_vec = 1;
  run_case(c);
  c.st = Storage::F32;
  c.expect_vec = 4;
  run_case(c);
}

// Pointers off a 16-byte boundary: scalar fallback, same results.
TEST(GrkanCuda, MisalignedPointers) {
  REQUIRE_GPU();
  for (Storage st : {Storage::F32, Storage::BF16}) {
    Case c;
    c.rows = 211;
    c.dim = 768;
    c.st = st;
    c.misalign = 1;
    c.expect_vec = 1;
    run_case(c);
  }
}

TEST(GrkanCuda, DxAliasesDy) {
  REQUIRE_GPU();
  for (Storage st : {Storage::F32, Storage::BF16}) {
    Case c;
    c.rows = 500;
    c.dim = 384;
    c.st = st;
    c.alias_dx_dy = true;
    run_case(c);
  }
}

// Degrees other than (5, 4): generic kernel.
TEST(GrkanCuda, OtherDegrees) {
  REQUIRE_GPU();
  const int degs[][2] = {{3, 2}, {6, 6}, {0, 3}, {4, 0}, {8, 8}};
  for (const auto& d : degs) {
    Case c;
    c.rows = 301;
    c.dim = 192;
    c.num_rows = (d[0] % 2 == 0) ? 8 : 1;
    c.m = d[0];
    c.n = d[1];
    c.st = (d[1] % 2 == 0) ? Storage::F32 : Storage::BF16;
    run_case(c);
  }
}

// A partial table wider than one pass of the block reduction (kChunk = 128 columns):
// 16 groups x (9 + 8) = 272 columns, three passes; and 32 groups of width 8 (the vector).
TEST(GrkanCuda, WidePartialTable) {
  REQUIRE_GPU();
  for (int groups : {16, 32}) {
    Case c;
    c.rows = 515;
    c.dim = 256;
    c.groups = groups;
    c.num_rows = groups;
    c.m = 8;
    c.n = 8;
    c.st = groups == 16 ? Storage::BF16 : Storage::F32;
    run_case(c);
  }
}

// Bitwise determinism on a large problem (many blocks, many trips), both storages.
TEST(GrkanCuda, DeterministicLarge) {
  REQUIRE_GPU();
  for (Storage st : {Storage::BF16, Storage::F32}) {
    Case c;
    c.rows = 8191;
    c.dim = 768;
    c.st = st;
    run_case(c);
  }
}

TEST(GrkanCuda, RejectsBadShapes) {
  REQUIRE_GPU();
  GrkanShape s;
  s.rows = 4;
  s.dim = 100;  // 100 % 8 != 0
  DevBuf buf(1 << 16);
  float* f = buf.as<float>();
  EXPECT_THROW(kat::cuda::grkan_forward(s, Storage::F32, f, f, f, f, nullptr), kat::Error);
  EXPECT_THROW(kat::cuda::grkan_backward_workspace_bytes(s), kat::Error);
  s.dim = 96;
  s.num_rows = 3;  // neither 1 nor G
  EXPECT_THROW(kat::cuda::grkan_backward(s, Storage::BF16, f, f, f, f, f, f, f, f, nullptr),
               kat::Error);
  s.num_rows = 1;
  s.m = 9;  // degree out of range
  EXPECT_THROW(kat::cuda::grkan_forward(s, Storage::F32, f, f, f, f, nullptr), kat::Error);
  s.m = 5;
  EXPECT_THROW(kat::cuda::grkan_backward(s, Storage::F32, f, f, f, f, f, f, f, nullptr, nullptr),
               kat::Error);  // null workspace
}

TEST(GrkanCuda, ZeroRowsIsANoOp) {
  REQUIRE_GPU();
  GrkanShape s;
  s.rows = 0;
  s.dim = 768;
  EXPECT_EQ(kat::cuda::grkan_backward_workspace_bytes(s), 0u);
  DevBuf buf(64);
  std::vector<float> ones(16, 1.f);
  upload_f32(buf.as<float>(), ones);
  float* f = buf.as<float>();
  kat::cuda::grkan_forward(s, Storage::BF16, f, f, f, f, nullptr);
  kat::cuda::grkan_backward(s, Storage::BF16, f, f, f, f, f, f, f, nullptr, nullptr);
  KAT_CUDA_CHECK(cudaDeviceSynchronize());
  EXPECT_TRUE(download_f32(f, 16) == ones);
}

#if defined(KAT_GPU_TEST_NO_GTEST)
// Stand-alone program (bench/run_grkan_h200.sh). KAT_TEST_FILTER=a,b: run only tests whose name
// contains one of the substrings.
int main() { return kat_gpu_test::mini::run_tests(std::getenv("KAT_TEST_FILTER")) == 0 ? 0 : 1; }
#endif
