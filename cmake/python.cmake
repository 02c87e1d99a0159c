# The Python package's extension modules (KAT_PYTHON=ON; pip builds them through scikit-build-core,
# see pyproject.toml, which installs the component "python" into the package folder kat/):
#   kat._ops     the GR-KAN op on raw pointers, CPU always, CUDA when KAT_HAVE_CUDA (what kat.torch
#                calls). Built from the op's own sources, so it needs nothing but OpenMP (and the
#                CUDA runtime, linked statically: the module loads next to any PyTorch build).
#   kat._engine  the engine (kat.models, kat.load, kat.train): links katlib; not with KAT_PY_MINIMAL.
# nanobind comes from the Python environment (pip's build requirements).
find_package(Python 3.9 REQUIRED COMPONENTS Interpreter Development.Module)
if(NOT nanobind_DIR)
  execute_process(COMMAND "${Python_EXECUTABLE}" -m nanobind --cmake_dir OUTPUT_VARIABLE nanobind_DIR
                  OUTPUT_STRIP_TRAILING_WHITESPACE COMMAND_ERROR_IS_FATAL ANY)
endif()
find_package(nanobind CONFIG REQUIRED)

# The op's sources (contract: include/kat/ops/grkan.h, src/ops/cuda/grkan.h).
add_library(kat_grkan_op STATIC src/ops/cpu/grkan.cpp src/ops/cpu/grkan_fit.cpp)
target_include_directories(kat_grkan_op PUBLIC ${PROJECT_SOURCE_DIR}/include ${PROJECT_SOURCE_DIR}/src)
target_link_libraries(kat_grkan_op PUBLIC OpenMP::OpenMP_CXX)
target_compile_options(kat_grkan_op PRIVATE -Wall -Wextra -Wno-unused-parameter -fno-math-errno)
kat_target_defaults(kat_grkan_op)
if(KAT_HAVE_CUDA)
  target_sources(kat_grkan_op PRIVATE src/ops/cuda/grkan.cu src/ops/cuda/column_sum.cu)
  target_compile_options(kat_grkan_op PRIVATE $<$<COMPILE_LANGUAGE:CUDA>:-std=c++20 --expt-relaxed-constexpr -lineinfo>)
  target_link_libraries(kat_grkan_op PUBLIC CUDA::cudart_static)
  target_compile_definitions(kat_grkan_op PUBLIC KAT_HAVE_CUDA=1)
endif()

nanobind_add_module(_ops NB_STATIC src/python/ops_module.cpp)
target_link_libraries(_ops PRIVATE kat_grkan_op)
install(TARGETS _ops LIBRARY DESTINATION kat COMPONENT python)

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
