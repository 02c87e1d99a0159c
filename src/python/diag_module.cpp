// kat._diag: C++ exceptions thrown in each of the ways kat._ops can throw them, one function each,
// so bench/py_diag.sh can tell which step crashes an interpreter (a crash seen only on the GPU
// machine at the first kat::Error raised through kat._ops.forward). Built only with
// -DKAT_PY_DIAG=ON, with the same flags, libraries and error conversion (KAT_PY_TRANSLATOR) as
// kat._ops. Every function but concat_only and caught_locally raises a Python exception.
#include <nanobind/nanobind.h>
#include <nanobind/stl/string.h>

#include <exception>
#include <stdexcept>
#include <string>
#include <vector>

#include "kat/core/error.h"
#include "kat/ops/grkan.h"

namespace nb = nanobind;

#ifndef KAT_PY_TRANSLATOR
#define KAT_PY_TRANSLATOR 0
#endif

namespace {

// kat._ops's conversion (ops_module.cpp python_entry), repeated: this module must not depend on it.
template <class F>
decltype(auto) entry(F&& f) {
#if KAT_PY_TRANSLATOR
  return f();
#else
  try {
    return f();
  } catch (const kat::Error& e) {
    throw nb::value_error(e.what());
  }
#endif
}

// kat::Error built from a std::string (as grkan_init_coefficients throws; passed on the GPU).
void throw_string() {
  entry([] { throw kat::Error(std::string("diag: ") + "throw_string"); });
}

// kat::Error built by KAT_CHECK's ostringstream (as GrkanShape::validate throws; crashed there).
void throw_concat(int dim, int groups) {
  entry([&] { KAT_CHECK(dim % groups == 0, "diag: width ", dim, " is not divisible by groups ", groups); });
}

// The same check, through the op's own shape check (inline in kat/ops/grkan.h).
void throw_validate(int dim, int groups) {
  entry([&] {
    kat::ops::GrkanShape s;
    s.rows = 1;
    s.dim = dim;
    s.groups = groups;
    s.validate("diag");
  });
}

// The throw inside the op's static library (grkan_fit.cpp), as kat._ops.init_coefficients.
void throw_in_library(const std::string& mode) {
  entry([&] {
    std::vector<double> a, b;
    kat::ops::grkan_init_coefficients(mode, a, b);
  });
}

// ostringstream without a throw.
std::string concat_only(int v) { return kat::detail::concat("diag: ", v, " ", 2 * v); }

// A throw and a catch inside this module: the unwinder alone, nothing of nanobind's dispatch.
std::string caught_locally(int dim, int groups) {
  try {
    KAT_CHECK(dim % groups == 0, "diag: width ", dim, " groups ", groups);
  } catch (const kat::Error& e) {
    return std::string("caught: ") + e.what();
  }
  return "no throw";
}

// Not a kat::Error: std::runtime_error (nanobind's own translation -> RuntimeError) and a nanobind
// builtin exception (no translator at all -> ValueError).
void throw_runtime() { throw std::runtime_error("diag: std::runtime_error"); }
void throw_nb_value_error() { throw nb::value_error("diag: nb::value_error"); }

// The GIL released around the throw (kat._ops's first version used call_guard<gil_scoped_release>).
void throw_without_gil(int dim, int groups) {
  entry([&] {
    std::exception_ptr err;
    {
      nb::gil_scoped_release release;
      try {
        KAT_CHECK(dim % groups == 0, "diag: width ", dim, " groups ", groups, " (GIL released)");
      } catch (...) {
        err = std::current_exception();
      }
    }
    if (err) std::rethrow_exception(err);
  });
}

}  // namespace

NB_MODULE(_diag, m) {
#if KAT_PY_TRANSLATOR
  nb::register_exception_translator([](const std::exception_ptr& p, void*) {
    try {
      std::rethrow_exception(p);
    } catch (const kat::Error& e) {
      PyErr_SetString(PyExc_ValueError, e.what());
    }
  });
#endif
  m.attr("translator") = bool(KAT_PY_TRANSLATOR);
  m.def("throw_string", &throw_string);
  m.def("throw_concat", &throw_concat, nb::arg("dim"), nb::arg("groups"));
  m.def("throw_validate", &throw_validate, nb::arg("dim"), nb::arg("groups"));
  m.def("throw_in_library", &throw_in_library, nb::arg("mode"));
  m.def("concat_only", &concat_only, nb::arg("v"));
  m.def("caught_locally", &caught_locally, nb::arg("dim"), nb::arg("groups"));
  m.def("throw_runtime", &throw_runtime);
  m.def("throw_nb_value_error", &throw_nb_value_error);
  m.def("throw_without_gil", &throw_without_gil, nb::arg("dim"), nb::arg("groups"));
}
