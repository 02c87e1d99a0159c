// kat._ops: the GR-KAN op for Python, on raw pointers (what kat.torch calls with tensors' data_ptr()).
// Contract and math: include/kat/ops/grkan.h; CPU: ops/cpu/grkan.h; CUDA: ops/cuda/grkan.h.
//   device  -1: host memory (CPU kernels, OpenMP); k >= 0: CUDA device k (its kernels enqueued on
//           `stream`, a cudaStream_t of that device as an integer; nothing synchronises)
//   dtype   "f32", "bf16" or "f16": the element type of x, y, dy, dx (math in fp32 for all);
//           "f64" (CPU only): x, y, dy, dx and a, b, da, db all float64 (gradcheck)
//   a (An, m+1), b (G, n): fp32; da, db: fp32, ACCUMULATED (+=), or overwritten when
//           accumulate=False (their old content unread: torch.empty will do); dx overwritten
//           (may alias dy)
//   shape   rows (product of the leading dims), dim (C), groups (G), num_rows (An: 1 or G), m, n
// Bad shapes / types raise ValueError naming the problem (kat::Error); CUDA failures RuntimeError.
// The GIL is released while a kernel runs.
// Errors are converted to Python exceptions inside each entry point (python_entry below), not by
// an nb::register_exception_translator: translators form one list in nanobind's internals, shared
// by every nanobind extension of the same ABI in the process (jaxlib, onnx, ...) and tried in an
// order set by the import order; a local conversion depends on none of them. KAT_PY_TRANSLATOR=1
// (cmake -DKAT_PY_ERRORS=translator) builds the translator variant, for bench/py_diag.sh.
#include <nanobind/nanobind.h>
#include <nanobind/stl/string.h>
#include <nanobind/stl/tuple.h>
#include <nanobind/stl/vector.h>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <exception>
#include <string>
#include <vector>

#include "kat/core/dtype.h"
#include "kat/core/error.h"
#include "kat/ops/grkan.h"
#include "ops/cpu/grkan.h"
#if KAT_HAVE_CUDA
#include <cuda_runtime.h>

#include "ops/cuda/cuda_check.h"
#include "ops/cuda/grkan.h"
#endif

namespace nb = nanobind;
#ifndef KAT_PY_TRANSLATOR
#define KAT_PY_TRANSLATOR 0
#endif
#if KAT_HAVE_CUDA
constexpr bool kHasCuda = true;
#else
constexpr bool kHasCuda = false;
#endif
using kat::DType;
using kat::ops::GrkanShape;

namespace {

GrkanShape make_shape(int64_t rows, int dim, int groups, int num_rows, int m, int n) {
  GrkanShape s;
  s.rows = rows;
  s.dim = dim;
  s.groups = groups;
  s.num_rows = num_rows;
  s.m = m;
  s.n = n;
  return s;
}

DType parse(const std::string& name) {
  DType t = DType::F32;
  KAT_CHECK(kat::parse_dtype(name, t), "GR-KAN: unknown element type '", name, "' (f32, bf16 or f16)");
  return t;
}

template <typename T>
T* ptr(uintptr_t p) {
  return reinterpret_cast<T*>(p);
}

#if KAT_HAVE_CUDA
// Makes `device` current for the scope (the kernels launch on the current device; the tensors'
// device may be another than the caller's current one) and restores the previous one.
class DeviceGuard {
 public:
  explicit DeviceGuard(int device) {
    KAT_CUDA_CHECK(cudaGetDevice(&prev_));
    if (prev_ != device) KAT_CUDA_CHECK(cudaSetDevice(device));
  }
  ~DeviceGuard() { cudaSetDevice(prev_); }
  DeviceGuard(const DeviceGuard&) = delete;
  DeviceGuard& operator=(const DeviceGuard&) = delete;

 private:
  int prev_ = 0;
};
#endif

[[noreturn]] void no_cuda(const char* where) {
  throw kat::Error(std::string(where) +
                   ": this kat build has no CUDA backend (nvcc was not found when it was built; "
                   "reinstall with nvcc on PATH, or pass CPU tensors)");
}

// "f64": float64 x, y, dy, dx AND coefficients / their gradients, the CPU's double kernels (for
// gradcheck; the CUDA kernels compute in fp32 only).
bool is_f64(int device, const std::string& dtype) {
  if (dtype != "f64") return false;
  KAT_CHECK(device < 0, "GR-KAN: float64 runs on the CPU only (the CUDA kernels compute in fp32)");
  return true;
}

void forward_impl(int device, const std::string& dtype, uintptr_t x, uintptr_t a, uintptr_t b, uintptr_t y,
                  int64_t rows, int dim, int groups, int num_rows, int m, int n, uintptr_t stream) {
  const GrkanShape s = make_shape(rows, dim, groups, num_rows, m, n);
  if (is_f64(device, dtype))
    return kat::ops::grkan_forward<double>(s, ptr<const double>(x), ptr<const double>(a), ptr<const double>(b),
                                           ptr<double>(y));
  const DType st = parse(dtype);
  if (device < 0)
    return kat::ops::grkan_forward(s, st, ptr<const void>(x), ptr<const float>(a), ptr<const float>(b),
                                   ptr<void>(y));
#if KAT_HAVE_CUDA
  DeviceGuard guard(device);
  kat::cuda::grkan_forward(s, st, ptr<const void>(x), ptr<const float>(a), ptr<const float>(b), ptr<void>(y),
                           ptr<CUstream_st>(stream));
  KAT_CUDA_CHECK(cudaGetLastError());
#else
  no_cuda("grkan_forward");
#endif
}

// The CPU kernels accumulate: zero the coefficient gradients first when the call overwrites them.
template <typename T>
void zero_coefficient_grads(const GrkanShape& s, uintptr_t da, uintptr_t db) {
  KAT_CHECK(da != 0 && (db != 0 || s.n == 0), "grkan_backward: null coefficient gradient pointer");
  std::fill_n(ptr<T>(da), static_cast<std::size_t>(s.num_rows) * (s.m + 1), T(0));
  if (s.n > 0) std::fill_n(ptr<T>(db), static_cast<std::size_t>(s.groups) * s.n, T(0));
}

void backward_impl(int device, const std::string& dtype, uintptr_t x, uintptr_t dy, uintptr_t a, uintptr_t b,
                   uintptr_t dx, uintptr_t da, uintptr_t db, uintptr_t workspace, int64_t rows, int dim,
                   int groups, int num_rows, int m, int n, uintptr_t stream, bool accumulate) {
  const GrkanShape s = make_shape(rows, dim, groups, num_rows, m, n);
  if (is_f64(device, dtype)) {
    if (!accumulate) zero_coefficient_grads<double>(s, da, db);
    return kat::ops::grkan_backward<double>(s, ptr<const double>(x), ptr<const double>(dy), ptr<const double>(a),
                                            ptr<const double>(b), ptr<double>(dx), ptr<double>(da),
                                            ptr<double>(db));
  }
  const DType st = parse(dtype);
  if (device < 0) {
    if (!accumulate) zero_coefficient_grads<float>(s, da, db);
    return kat::ops::grkan_backward(s, st, ptr<const void>(x), ptr<const void>(dy), ptr<const float>(a),
                                    ptr<const float>(b), ptr<void>(dx), ptr<float>(da), ptr<float>(db));
  }
#if KAT_HAVE_CUDA
  DeviceGuard guard(device);
  kat::cuda::GrkanBackwardArgs args;
  args.shape = s;
  args.dtype = st;
  args.x = ptr<const void>(x);
  args.dy = ptr<const void>(dy);
  args.a = ptr<const float>(a);
  args.b = ptr<const float>(b);
  args.dx = ptr<void>(dx);
  args.da = ptr<float>(da);
  args.db = ptr<float>(db);
  args.workspace = ptr<void>(workspace);
  args.accumulate = accumulate;
  kat::cuda::grkan_backward(args, ptr<CUstream_st>(stream));
  KAT_CUDA_CHECK(cudaGetLastError());
#else
  no_cuda("grkan_backward");
#endif
}

// Runs an entry point's body with the GIL held; kat::Error (bad input) leaves as ValueError and any
// other std::exception (a CUDA failure) as RuntimeError, both as nanobind builtin exceptions, which
// nanobind's dispatcher turns into the Python error directly (no translator involved).
template <class F>
decltype(auto) python_entry(F&& f) {
#if KAT_PY_TRANSLATOR
  return f();
#else
  try {
    return f();
  } catch (const nb::builtin_exception&) {
    throw;
  } catch (const nb::python_error&) {
    throw;
  } catch (const kat::Error& e) {
    throw nb::value_error(e.what());
  } catch (const std::exception& e) {
    throw nb::builtin_exception(nb::exception_type::runtime_error, e.what());
  }
#endif
}

// The kernels run without the GIL (other Python threads go on; a CUDA launch may block), but no
// C++ exception leaves a scope that released the GIL: the arguments are checked with the GIL held
// (the common errors), and anything the kernels throw is carried out of the released scope and
// rethrown with the GIL back. (A kat::Error thrown through nanobind's call_guard<gil_scoped_release>
// crashed the interpreter on the GPU machine: Python 3.12, torch 2.11.)
template <class F>
void run_without_gil(F&& f) {
  std::exception_ptr err;
  {
    nb::gil_scoped_release release;
    try {
      f();
    } catch (...) {
      err = std::current_exception();
    }
  }
  if (err) std::rethrow_exception(err);
}

void check_args(const char* what, int device, const std::string& dtype, int64_t rows, int dim, int groups,
                int num_rows, int m, int n) {
  make_shape(rows, dim, groups, num_rows, m, n).validate(what);
  if (!is_f64(device, dtype)) parse(dtype);
#if !KAT_HAVE_CUDA
  if (device >= 0) no_cuda(what);
#endif
}

void forward(int device, const std::string& dtype, uintptr_t x, uintptr_t a, uintptr_t b, uintptr_t y,
             int64_t rows, int dim, int groups, int num_rows, int m, int n, uintptr_t stream) {
  python_entry([&] {
    check_args("grkan_forward", device, dtype, rows, dim, groups, num_rows, m, n);
    run_without_gil([&] { forward_impl(device, dtype, x, a, b, y, rows, dim, groups, num_rows, m, n, stream); });
  });
}

void backward(int device, const std::string& dtype, uintptr_t x, uintptr_t dy, uintptr_t a, uintptr_t b,
              uintptr_t dx, uintptr_t da, uintptr_t db, uintptr_t workspace, int64_t rows, int dim, int groups,
              int num_rows, int m, int n, uintptr_t stream, bool accumulate) {
  python_entry([&] {
    check_args("grkan_backward", device, dtype, rows, dim, groups, num_rows, m, n);
    run_without_gil([&] {
      backward_impl(device, dtype, x, dy, a, b, dx, da, db, workspace, rows, dim, groups, num_rows, m, n, stream,
                    accumulate);
    });
  });
}

// Bytes of device scratch backward() needs on `device` (0 on the CPU).
int64_t backward_workspace_bytes(int device, int64_t rows, int dim, int groups, int num_rows, int m, int n) {
  return python_entry([&]() -> int64_t {
    const GrkanShape s = make_shape(rows, dim, groups, num_rows, m, n);
    s.validate("grkan_backward_workspace_bytes");
    if (device < 0) return 0;
#if KAT_HAVE_CUDA
    DeviceGuard guard(device);
    return static_cast<int64_t>(kat::cuda::grkan_backward_workspace_bytes(s));
#else
    no_cuda("grkan_backward_workspace_bytes");
#endif
  });
}

std::tuple<std::vector<double>, std::vector<double>> init_coefficients(const std::string& mode) {
  return python_entry([&] {
    std::vector<double> a, b;
    kat::ops::grkan_init_coefficients(mode, a, b);
    return std::tuple<std::vector<double>, std::vector<double>>{a, b};
  });
}

}  // namespace

NB_MODULE(_ops, m) {
  m.doc() = "kat's GR-KAN op on raw pointers (use kat.torch)";
#if KAT_PY_TRANSLATOR
  nb::register_exception_translator([](const std::exception_ptr& p, void*) {
    try {
      std::rethrow_exception(p);
    } catch (const kat::Error& e) {
      PyErr_SetString(PyExc_ValueError, e.what());
    }
  });
#endif
  m.def(
      "has_cuda", [] { return kHasCuda; }, "Whether this build has the CUDA kernels.");
  m.def(
      "cpu_kernels", [] { return std::string(kat::ops::grkan_cpu_uses_v3() ? "x86-64-v3" : "default"); },
      "The instruction set the CPU kernels run: x86-64-v3 (AVX2, FMA) or the build's default target.");
  m.def("forward", &forward, nb::arg("device"), nb::arg("dtype"), nb::arg("x"), nb::arg("a"), nb::arg("b"),
        nb::arg("y"), nb::arg("rows"), nb::arg("dim"), nb::arg("groups"), nb::arg("num_rows"), nb::arg("m"),
        nb::arg("n"), nb::arg("stream") = 0, "y = F(x)");
  m.def("backward", &backward, nb::arg("device"), nb::arg("dtype"), nb::arg("x"), nb::arg("dy"), nb::arg("a"),
        nb::arg("b"), nb::arg("dx"), nb::arg("da"), nb::arg("db"), nb::arg("workspace"), nb::arg("rows"),
        nb::arg("dim"), nb::arg("groups"), nb::arg("num_rows"), nb::arg("m"), nb::arg("n"), nb::arg("stream") = 0,
        nb::arg("accumulate") = true, "dx = dL/dx; da += dL/da; db += dL/db (= with accumulate=False)");
  m.def("backward_workspace_bytes", &backward_workspace_bytes, nb::arg("device"), nb::arg("rows"), nb::arg("dim"),
        nb::arg("groups"), nb::arg("num_rows"), nb::arg("m"), nb::arg("n"));
  m.def("init_coefficients", &init_coefficients, nb::arg("mode"),
        "(numerator a0..a5, denominator b1..b4) of an initial mode: identity, swish or gelu (docs/MODEL.md)");
  m.attr("max_degree") = GrkanShape::kMaxDegree;
}
