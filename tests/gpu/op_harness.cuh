// The cross-backend op harness (in the spirit of ggml's test-backend-ops): one table of op cases,
// one driver. A case is (family, name, shape, a factory). The factory draws fresh random inputs
// from a seed, runs the CPU reference op (float64 truth and/or the fp32 CPU op, on exactly the
// values the GPU sees), uploads the inputs, and returns an OpInstance that lists the outputs
// (device pointer, element type, reference, tolerance with its reason) and can run the CUDA op.
//
// The driver (check_case), for every case:
//  1. poisons every output with NaN (all-ones bytes: NaN in fp32 and bf16) and restores the
//     inputs and accumulators (reset()),
//  2. runs the CUDA op, downloads every output, fails on any NaN/inf (or, for an output that must
//     stay unwritten, on anything but the poison),
//  3. compares each output with its reference within the case's tolerance (run 1 only) and calls
//     the case's extra checks (aliasing, launch paths, ...),
//  4. repeats 1-2 (kReps runs in all) and requires every output bitwise equal to run 1's
//     (determinism: no atomics, fixed reduction orders).
// Failures are returned as text; the gtest wrapper (tests/gpu/test_op_harness.cu) reports them.
// Perf mode (time_case; bench/op_bench.cu): the CUDA op alone, timed with events, reported as
// time, GB/s and/or TFLOP/s against the machine's ceiling.
//
// The cases live one file per op family in tests/gpu/op_cases/<family>.cuh, with the family's name:
// layernorm, elementwise, cross_entropy, optim, grkan, gemm, attention.
#pragma once

#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include "gpu_host_util.cuh"
#include "kat/core/dtype.h"
#include "ops/cuda/cuda_check.h"
#include "ops/cuda/device_memory.h"

namespace kat_op_harness {

using kat::DType;
using kat_gpu_test::all_finite;
using kat_gpu_test::DevBuf;
using kat_gpu_test::DevTensor;
using kat_gpu_test::download_storage;
using kat_gpu_test::fresh_seed;
using kat_gpu_test::rel_err;
using kat_gpu_test::round_bf16;
using kat_gpu_test::upload_f32;

constexpr int kReps = 3;  // CUDA runs per case (bitwise determinism)

inline const char* dname(DType t) { return t == DType::F32 ? "f32" : t == DType::BF16 ? "bf16" : "f16"; }
inline std::vector<float> round_vec(const std::vector<float>& v) {
  std::vector<float> r(v.size());
  for (size_t i = 0; i < v.size(); ++i) r[i] = round_bf16(v[i]);
  return r;
}
inline std::vector<double> to_d(const std::vector<float>& v) { return {v.begin(), v.end()}; }
inline bool same_bits(const std::vector<float>& a, const std::vector<float>& b) {
  return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * 4) == 0;
}
inline double bit_equal_fraction(const std::vector<float>& a, const std::vector<double>& b) {
  size_t eq = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    const float r = static_cast<float>(b[i]);
    eq += std::memcmp(&a[i], &r, 4) == 0;
  }
  return a.empty() ? 1.0 : static_cast<double>(eq) / a.size();
}

// Fast reproducible normal numbers (splitmix64 + Box-Muller): millions per case.
struct Rng {
  uint64_t s;
  explicit Rng(uint64_t seed) : s(seed) {}
  uint64_t next() {
    uint64_t z = (s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
  }
  double uniform() { return (static_cast<double>(next() >> 11) + 0.5) * (1.0 / 9007199254740992.0); }
  double normal() {
    const double u1 = uniform(), u2 = uniform();
    return std::sqrt(-2.0 * std::log(u1)) * std::cos(6.283185307179586 * u2);
  }
  // Never exactly zero: a zero input would hide a wrong index.
  float nz_normal(double scale, double offset = 0.0) {
    double v = offset + scale * normal();
    if (v == 0.0) v = 1e-3 * scale;
    return static_cast<float>(v);
  }
};

// How an output is judged against its reference (all bounds optional; `reason` says why they are
// what they are and is printed with any failure).
struct Tolerance {
  double norm = -1;             // ||got - ref|| / ||ref|| <= norm (-1: not checked)
  double baseline_factor = -1;  // err <= factor * err(baseline) + floor (-1: not checked)
  double floor = 0;
  // Per element: |got - ref| <= rtol |ref| + atol_rms * rms(ref) + scale_tol * scale[i] + abs.
  bool elementwise = false;
  double rtol = 0, atol_rms = 0, scale_tol = 0, abs = 0;
  bool bitwise = false;    // got == float(ref) bit for bit
  bool unwritten = false;  // must still hold the poison (the op must not write it)
  std::string reason;
};

// One output of a CUDA op: where it lives, what it should be, how close it must be.
struct Output {
  std::string name;
  void* dev = nullptr;  // device pointer (the op writes here)
  size_t n = 0;         // elements
  DType dtype = DType::F32;
  std::vector<double> ref;      // reference values (empty: checked for NaN and determinism only)
  std::vector<float> baseline;  // the CPU fp32 op's values (rounded to dtype) for baseline bounds
  std::vector<double> scale;    // per-element scale of Tolerance::scale_tol
  Tolerance tol;
  // Opaque 8-bit codes (FP8) instead of dtype elements: n bytes, poisoned with 0xFF and read back
  // as one float per byte (its value 0..255), so `ref` holds the expected codes (Tolerance::bitwise).
  bool bytes = false;
};

// Failures and the printed log of one case.
struct Report {
  std::vector<std::string> failures;
  void fail(const std::string& what) {
    failures.push_back(what);
    std::printf("      FAILED: %s\n", what.c_str());
  }
  void check(bool ok, const std::string& what) {
    if (!ok) fail(what);
  }
};

// A case ready to run on the device: outputs with references, inputs uploaded.
class OpInstance {
 public:
  virtual ~OpInstance() = default;
  std::vector<Output> outputs;
  double bytes = 0;          // global-memory bytes one run() must move (perf mode: GB/s)
  double flops = 0;          // floating-point operations of one run() (perf mode: TFLOP/s)
  bool tensor_core = false;  // flops run on bf16 tensor cores (ceiling) rather than fp32 units
  // Restores every input and accumulator the op reads (called after the outputs are poisoned).
  virtual void reset() = 0;
  // The CUDA op(s) under test, enqueued on `stream`.
  virtual void run(cudaStream_t stream) = 0;
  // Checks beyond the output table (run 1's outputs in `outs`, same order as `outputs`); may run
  // the op again.
  virtual void extra_checks(const std::vector<std::vector<float>>& outs, Report& r, cudaStream_t stream) {}
};

struct OpCase {
  std::string family;   // op family = the file names of its contract, CPU and CUDA code
  std::string name;     // shape and variant
  size_t elements = 0;  // size of the largest tensor (KAT_OPS_SMALL skips > 4 M)
  std::function<std::unique_ptr<OpInstance>(uint64_t seed)> make;
};

// A blocking stream: the uploads and NaN poisoning (cudaMemcpy/cudaMemset on the legacy default
// stream) are ordered before its kernels; runs also synchronise the device before the op.
struct Stream {
  kat::cuda::CudaStream s = kat::cuda::CudaStream::create(cudaStreamDefault);
  void sync() const { s.synchronize(); }
};

inline std::vector<float> download(const Output& o) {
  if (!o.bytes) return download_storage(o.dev, o.n, o.dtype);
  std::vector<uint8_t> b(o.n);
  if (o.n) KAT_CUDA_CHECK(cudaMemcpy(b.data(), o.dev, o.n, cudaMemcpyDeviceToHost));
  return {b.begin(), b.end()};
}

inline void poison(const Output& o) {
  if (o.n) KAT_CUDA_CHECK(cudaMemset(o.dev, 0xff, o.bytes ? o.n : o.n * kat::dtype_size(o.dtype)));
}

inline bool is_poison(const std::vector<float>& v, DType t) {
  // 0xffffffff (fp32) / 0xffff (bf16) read back as fp32: the all-ones pattern, a NaN.
  for (float f : v) {
    uint32_t u;
    std::memcpy(&u, &f, 4);
    if (t == DType::F32 ? u != 0xffffffffu : (u >> 16) != 0xffffu) return false;
  }
  return true;
}

// Compares one output with its reference; prints one line.
inline void compare(const Output& o, const std::vector<float>& got, const std::string& what, Report& r) {
  const Tolerance& t = o.tol;
  if (t.unwritten) {
    r.check(is_poison(got, o.dtype), o.name + " written although the op must not write it: " + what);
    std::printf("      %-10s unwritten: %d\n", o.name.c_str(), int(is_poison(got, o.dtype)));
    return;
  }
  r.check(all_finite(got), "NaN/inf in " + o.name + ": " + what);
  if (o.ref.empty()) return;
  const double err = rel_err(got, o.ref);
  std::ostringstream line;
  char buf[160];
  std::snprintf(buf, sizeof buf, "      %-10s err %.3e", o.name.c_str(), err);
  line << buf;
  if (t.norm >= 0)
    r.check(err <= t.norm, o.name + " norm-wise error " + std::to_string(err) + " > " + std::to_string(t.norm) +
                               " (" + t.reason + "): " + what);
  if (!o.baseline.empty()) {
    const double base = rel_err(o.baseline, o.ref);
    std::snprintf(buf, sizeof buf, "  baseline(cpu fp32%s) %.3e  ratio %.3f",
                  o.dtype == DType::F32    ? ""
                  : o.dtype == DType::BF16 ? "->bf16"
                                           : "->f16",
                  base, base > 0 ? err / base : 0.0);
    line << buf;
    if (t.baseline_factor >= 0)
      r.check(err <= t.baseline_factor * base + t.floor,
              o.name + " error " + std::to_string(err) + " > " + std::to_string(t.baseline_factor) +
                  " x baseline " + std::to_string(base) + " + " + std::to_string(t.floor) + " (" + t.reason +
                  "): " + what);
  }
  if (t.elementwise) {
    double ss = 0;
    for (double v : o.ref) ss += v * v;
    const double rms = o.ref.empty() ? 0 : std::sqrt(ss / o.ref.size());
    size_t bad = 0;
    std::string first;
    for (size_t i = 0; i < o.ref.size(); ++i) {
      const double d = std::abs(static_cast<double>(got[i]) - o.ref[i]);
      const double bound = t.rtol * std::abs(o.ref[i]) + t.atol_rms * rms +
                           (o.scale.empty() ? 0.0 : t.scale_tol * o.scale[i]) + t.abs;
      if (!(d <= bound)) {
        if (bad == 0)
          first = "element " + std::to_string(i) + ": got " + std::to_string(got[i]) + ", ref " +
                  std::to_string(o.ref[i]);
        ++bad;
      }
    }
    r.check(bad == 0, o.name + ": " + std::to_string(bad) + " elements out of bounds, first " + first + " (" +
                          t.reason + "): " + what);
  }
  if (t.bitwise) {
    std::vector<float> rf(o.ref.begin(), o.ref.end());
    r.check(same_bits(got, rf), o.name + " not bitwise equal to the reference (" + t.reason + "): " + what);
  }
  if (o.dtype == DType::F32 || o.bytes) {
    std::snprintf(buf, sizeof buf, "  bitwise-equal %.4f", bit_equal_fraction(got, o.ref));
    line << buf;
  }
  std::printf("%s\n", line.str().c_str());
}

// KAT_OPS_SMALL=1 (set for compute-sanitizer runs): skip cases of more than 4 M elements.
inline bool skip_large(size_t n) {
  const char* e = std::getenv("KAT_OPS_SMALL");
  return e && *e && *e != '0' && n > (size_t(1) << 22);
}

// The driver: see the top of this file. Returns the failures (empty: passed).
inline std::vector<std::string> check_case(const OpCase& c) {
  Report r;
  if (skip_large(c.elements)) {
    std::printf("    case: %s %s (skipped: %zu elements, KAT_OPS_SMALL)\n", c.family.c_str(), c.name.c_str(),
                c.elements);
    return {};
  }
  const uint64_t seed = fresh_seed();
  const std::string what = c.family + " " + c.name + " seed " + std::to_string(seed);
  std::printf("    case: %s\n", what.c_str());
  try {
    std::unique_ptr<OpInstance> inst = c.make(seed);
    Stream s;
    std::vector<std::vector<float>> first;
    for (int rep = 0; rep < kReps; ++rep) {
      for (const Output& o : inst->outputs) poison(o);
      inst->reset();
      KAT_CUDA_CHECK(cudaDeviceSynchronize());
      inst->run(s.s);
      s.sync();
      std::vector<std::vector<float>> outs;
      for (const Output& o : inst->outputs) outs.push_back(download(o));
      if (rep == 0) {
        for (size_t i = 0; i < outs.size(); ++i) compare(inst->outputs[i], outs[i], what, r);
        inst->extra_checks(outs, r, s.s);
        first = std::move(outs);
      } else {
        for (size_t i = 0; i < outs.size(); ++i)
          r.check(same_bits(outs[i], first[i]), inst->outputs[i].name + " not bitwise reproducible (run " +
                                                    std::to_string(rep + 1) + "): " + what);
      }
    }
  } catch (const std::exception& e) {
    r.fail(std::string("exception: ") + e.what() + ": " + what);
  }
  return r.failures;
}

// ---- perf mode -------------------------------------------------------------------------------------
// Ceilings of an H100 SXM (what kernels here can reach, not the datasheet): ~3.0 TB/s for a device
// copy (HBM3, 3.35 TB/s nominal), ~750 TFLOP/s for a large bf16 cuBLAS GEMM (989 dense nominal),
// ~60 TFLOP/s fp32 without TF32 (67 nominal). On another GPU the percentages are relative to these.
constexpr double kCeilingGBs = 3000.0;
constexpr double kCeilingTflopsBf16 = 750.0;
constexpr double kCeilingTflopsF32 = 60.0;

struct PerfResult {
  double us = 0, gbs = 0, tflops = 0;
};

// Times run() alone (inputs set once, accumulators keep accumulating: the timing does not depend on
// the values): `warmup` runs, then `iters` runs between two events.
inline PerfResult time_case(const OpCase& c, int iters = 50, int warmup = 5) {
  std::unique_ptr<OpInstance> inst = c.make(fresh_seed());
  Stream s;
  inst->reset();
  KAT_CUDA_CHECK(cudaDeviceSynchronize());
  for (int i = 0; i < warmup; ++i) inst->run(s.s);
  auto t0 = kat::cuda::CudaEvent::create(), t1 = kat::cuda::CudaEvent::create();
  t0.record(s.s);
  for (int i = 0; i < iters; ++i) inst->run(s.s);
  t1.record(s.s);
  t1.synchronize();
  PerfResult p;
  p.us = 1e3 * t1.elapsed_ms_since(t0) / iters;
  if (inst->bytes > 0) p.gbs = inst->bytes / (p.us * 1e3);
  if (inst->flops > 0) p.tflops = inst->flops / (p.us * 1e6);
  std::printf("%-14s %-48s %10.2f us", c.family.c_str(), c.name.c_str(), p.us);
  if (p.gbs > 0) std::printf("  %8.1f GB/s (%5.1f%% of %.0f)", p.gbs, 100 * p.gbs / kCeilingGBs, kCeilingGBs);
  if (p.tflops > 0) {
    const double ceil = inst->tensor_core ? kCeilingTflopsBf16 : kCeilingTflopsF32;
    std::printf("  %7.2f TFLOP/s (%5.1f%% of %.0f)", p.tflops, 100 * p.tflops / ceil, ceil);
  }
  std::printf("\n");
  return p;
}

// ---- helpers for the case files ---------------------------------------------------------------------
// Tolerances of the small ops (LayerNorm, GELU, cross-entropy, residual) against float64 truth
// computed on exactly the values the GPU sees (bf16 inputs: their bf16-rounded values):
//  - fp32 outputs: err <= 1e-5. Both sides do fp32 arithmetic (unit roundoff 6e-8) on identical
//    inputs; the deepest chains are the row sums of LayerNorm (C <= 4096 terms, tree-summed) and
//    the dgamma/dbeta column sums over up to 25216 rows (per-thread, per-block, then 16-way strided
//    sums): worst-case growth of a few hundred ulp, typical (random signs) ~1e-7 relative; exp/erf/
//    log of CUDA's libdevice are within 2 ulp. 1e-5 leaves 10-100x room and still catches any
//    wrong index, lost row or lost block (>= 1e-3).
//  - bf16 outputs: the value is the fp32 result rounded once, so its error is dominated by that
//    rounding (<= 2^-9 relative per element, ~2^-9/sqrt(3) rms). Criterion: err(gpu) <= 2 *
//    err(CPU fp32 op on the same bf16 inputs, then rounded to bf16) + 1e-6, i.e. no worse than
//    twice what an ideal fp32 kernel with one final rounding gets (the 1e-6 floor covers outputs
//    that happen to be exactly representable); and, independently, err <= 2^-8 (a bound derived
//    from the half-ulp rounding alone, 2x margin).
inline Tolerance small_op_tolerance(DType t) {
  Tolerance tol;
  if (t == DType::F32) {
    tol.norm = 1e-5;
    tol.reason = "fp32 vs float64 truth: a few hundred ulp at most, 1e-5";
  } else {
    tol.norm = 1.0 / 256;
    tol.baseline_factor = 2.0;
    tol.floor = 1e-6;
    tol.reason =
        "bf16: one rounding of the fp32 result; <= 2 x the CPU fp32 op rounded to bf16 + 1e-6, and <= 2^-8";
  }
  return tol;
}

// An output judged by small_op_tolerance: reference = float64 truth, baseline = the CPU fp32 op.
inline Output small_op_output(const std::string& name, void* dev, DType t, std::vector<double> truth,
                              const std::vector<float>& cpu32) {
  Output o;
  o.name = name;
  o.dev = dev;
  o.n = truth.size();
  o.dtype = t;
  o.ref = std::move(truth);
  o.baseline = t == DType::BF16 ? round_vec(cpu32) : cpu32;
  o.tol = small_op_tolerance(t);
  return o;
}

}  // namespace kat_op_harness
