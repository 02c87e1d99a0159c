# The Python package's extension modules (KAT_PYTHON=ON; pip builds them through scikit-build-core,
# see pyproject.toml, which installs the component "python" into the package folder kat/):
#   kat._ops     the GR-KAN op on raw pointers, CPU always, CUDA when KAT_HAVE_CUDA (what kat.torch
#                calls). Built from the op's own sources, so it needs nothing but OpenMP (and the
#                CUDA runtime, linked statically: the module loads next to any PyTorch build).
#   kat._engine  the engine (kat.models, kat.load, kat.train): links katlib; not with KAT_PY_MINIMAL.
# nanobind comes from the Python environment (pip's build requirements).
# Switches (defaults are what ships; the others exist for bench/py_diag.sh's comparison builds):
#   KAT_PY_CUDART=static|shared   how kat._ops links the CUDA runtime (static: no libcudart.so needed
#                                 next to the module; shared: the toolkit's libcudart.so)
#   KAT_PY_ERRORS=local|translator   how kat::Error becomes ValueError: converted inside each entry
#                                 point (local, no state shared with other nanobind extensions) or by
#                                 a registered nb::register_exception_translator (translator)
#   KAT_PY_DIAG=ON                also build kat._diag (src/python/diag_module.cpp: exceptions thrown
#                                 in the ways kat._ops throws them, for bench/py_diag.sh)
#   KAT_PY_VISIBILITY=hidden|default   the op library's symbols in the module: hidden (not exported)
#                                 or default (exported, as before)
set(KAT_PY_CUDART "static" CACHE STRING "kat._ops: the CUDA runtime, static or shared")
set(KAT_PY_VISIBILITY "hidden" CACHE STRING "kat._ops: the op library's symbol visibility, hidden or default")
set(KAT_PY_ERRORS "local" CACHE STRING "kat._ops: kat::Error -> ValueError, local or translator")
option(KAT_PY_DIAG "Build kat._diag (exception diagnosis module, bench/py_diag.sh)" OFF)
find_package(Python 3.9 REQUIRED COMPONENTS Interpreter Development.Module)
if(NOT nanobind_DIR)
  execute_process(COMMAND "${Python_EXECUTABLE}" -m nanobind --cmake_dir OUTPUT_VARIABLE nanobind_DIR
                  OUTPUT_STRIP_TRAILING_WHITESPACE COMMAND_ERROR_IS_FATAL ANY)
endif()
find_package(nanobind CONFIG REQUIRED)

# The op's sources (contract: include/kat/ops/grkan.h, src/ops/cuda/grkan.h).
add_library(kat_grkan_op STATIC src/ops/cpu/grkan.cpp src/ops/cpu/grkan_fit.cpp)
# Nothing of the op is exported from the module (otherwise ~40 kat:: symbols are, some of them
# STB_GNU_UNIQUE, which bind process-wide whatever RTLD_LOCAL says): what remains exported is
# PyInit__ops, nanobind's exception types and std:: template instances.
if(KAT_PY_VISIBILITY STREQUAL "hidden")
  set_target_properties(kat_grkan_op PROPERTIES CXX_VISIBILITY_PRESET hidden CUDA_VISIBILITY_PRESET hidden
                                                VISIBILITY_INLINES_HIDDEN ON)
elseif(NOT KAT_PY_VISIBILITY STREQUAL "default")
  message(FATAL_ERROR "KAT_PY_VISIBILITY must be hidden or default, got '${KAT_PY_VISIBILITY}'")
endif()
target_include_directories(kat_grkan_op PUBLIC ${PROJECT_SOURCE_DIR}/include ${PROJECT_SOURCE_DIR}/src)
target_link_libraries(kat_grkan_op PUBLIC OpenMP::OpenMP_CXX)
target_compile_options(kat_grkan_op PRIVATE -Wall -Wextra -Wno-unused-parameter -fno-math-errno)
kat_target_defaults(kat_grkan_op)
if(KAT_HAVE_CUDA)
  target_sources(kat_grkan_op PRIVATE src/ops/cuda/grkan.cu src/ops/cuda/column_sum.cu)
  target_compile_options(kat_grkan_op PRIVATE $<$<COMPILE_LANGUAGE:CUDA>:-std=c++20 --expt-relaxed-constexpr -lineinfo>)
  if(KAT_PY_CUDART STREQUAL "shared")
    target_link_libraries(kat_grkan_op PUBLIC CUDA::cudart)
  elseif(KAT_PY_CUDART STREQUAL "static")
    target_link_libraries(kat_grkan_op PUBLIC CUDA::cudart_static)
  else()
    message(FATAL_ERROR "KAT_PY_CUDART must be static or shared, got '${KAT_PY_CUDART}'")
  endif()
  target_compile_definitions(kat_grkan_op PUBLIC KAT_HAVE_CUDA=1)
endif()

if(NOT KAT_PY_ERRORS MATCHES "^(local|translator)$")
  message(FATAL_ERROR "KAT_PY_ERRORS must be local or translator, got '${KAT_PY_ERRORS}'")
endif()
nanobind_add_module(_ops NB_STATIC src/python/ops_module.cpp)
target_link_libraries(_ops PRIVATE kat_grkan_op)
target_compile_definitions(_ops PRIVATE KAT_PY_TRANSLATOR=$<STREQUAL:${KAT_PY_ERRORS},translator>)
if(KAT_HAVE_CUDA AND KAT_PY_CUDART STREQUAL "shared")
  set_target_properties(_ops PROPERTIES INSTALL_RPATH_USE_LINK_PATH TRUE)  # finds the toolkit's libcudart
endif()
install(TARGETS _ops LIBRARY DESTINATION kat COMPONENT python)
if(KAT_PY_DIAG)
  nanobind_add_module(_diag NB_STATIC src/python/diag_module.cpp)
  target_link_libraries(_diag PRIVATE kat_grkan_op)
  target_compile_definitions(_diag PRIVATE KAT_PY_TRANSLATOR=$<STREQUAL:${KAT_PY_ERRORS},translator>)
  install(TARGETS _diag LIBRARY DESTINATION kat COMPONENT python)
endif()

if(TARGET katlib)
  nanobind_add_module(_engine NB_STATIC src/python/engine_module.cpp)
  target_link_libraries(_engine PRIVATE katlib)
  kat_internal(_engine)
  # The engine links shared libraries from outside the wheel (OpenBLAS, CUDA's cudart/cuBLAS,
  # NCCL): keep their directories in the installed module's RPATH so it loads without
  # LD_LIBRARY_PATH (an `pip install .` on this machine; not a relocatable manylinux wheel).
  set_target_properties(_engine PROPERTIES INSTALL_RPATH_USE_LINK_PATH TRUE)
  install(TARGETS _engine LIBRARY DESTINATION kat COMPONENT python)
endif()
if(TARGET katlib)
  message(STATUS "kat: Python modules _ops (CUDA ${KAT_HAVE_CUDA}) and _engine")
else()
  message(STATUS "kat: Python module _ops (CUDA ${KAT_HAVE_CUDA}); no engine module (KAT_PY_MINIMAL)")
endif()
if(KAT_HAVE_CUDA)
  message(STATUS "kat: _ops links the CUDA runtime ${KAT_PY_CUDART}; errors: ${KAT_PY_ERRORS}")
endif()
