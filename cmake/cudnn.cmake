# cuDNN (optional, CUDA builds only): cuDNN's fused attention (the cudnn-frontend SDPA graphs) as an
# alternative to our attention kernels, chosen at run time (`--attention cudnn` / KAT_ATTENTION=cudnn;
# src/ops/attention_backend.h, src/ops/cuda/attention_cudnn.h).
#   KAT_CUDNN=AUTO|ON|OFF   AUTO: on when cuDNN 9 (cudnn.h, libcudnn.so.9) and the cudnn-frontend
#                           headers (cudnn_frontend.h, header-only C++) are both found
# Looked for, in order: CUDNN_ROOT / CUDNN_FRONTEND_INCLUDE_DIR (env or cache), the site-packages of
# python3 (pip's nvidia-cudnn-cu13 wheel: nvidia/cudnn/{include,lib}, whose lib/ has only
# libcudnn.so.9 and its sub-libraries; pip's nvidia-cudnn-frontend wheel: include/ at the top of
# site-packages), then the system.
# Only libcudnn.so.9 is linked, a small shim that loads its sub-libraries (graph, engines, heuristics)
# on first use from the loader's path, so at run time the directory of any cuDNN 9 (PyTorch's
# included) must be on LD_LIBRARY_PATH (bench/stage_gpu_carry.sh's run_env.sh adds PyTorch's); and
# the toolkit's NVRTC, which the frontend's headers call.
# Sets KAT_HAVE_CUDNN (ON/OFF), CUDNN_INCLUDE_DIR, CUDNN_LIBRARY, CUDNN_FRONTEND_INCLUDE_DIR.
set(KAT_CUDNN "AUTO" CACHE STRING "cuDNN fused attention (cudnn-frontend SDPA): AUTO, ON or OFF")
set(KAT_HAVE_CUDNN OFF)
if(KAT_HAVE_CUDA AND NOT KAT_CUDNN STREQUAL "OFF")
  # pip's wheels (the frontend wheel puts include/ at the top of site-packages).
  include(${CMAKE_CURRENT_LIST_DIR}/pip_nvidia.cmake)
  kat_python_site_dirs(KAT_PY_SITE)
  kat_pip_nvidia_dirs(KAT_PIP_CUDNN cudnn)
  set(KAT_CUDNN_HINTS $ENV{CUDNN_ROOT} ${CUDNN_ROOT} ${KAT_PIP_CUDNN})
  find_path(CUDNN_INCLUDE_DIR cudnn_version.h HINTS ${KAT_CUDNN_HINTS} PATH_SUFFIXES include)
  find_library(CUDNN_LIBRARY NAMES libcudnn.so.9 cudnn HINTS ${KAT_CUDNN_HINTS} PATH_SUFFIXES lib lib64)
  find_path(CUDNN_FRONTEND_INCLUDE_DIR cudnn_frontend.h
            HINTS $ENV{CUDNN_FRONTEND_INCLUDE_DIR} $ENV{CUDNN_FRONTEND_ROOT} ${KAT_PY_SITE} PATH_SUFFIXES include)
  set(KAT_CUDNN_MISSING "")
  if(CUDNN_INCLUDE_DIR AND CUDNN_LIBRARY)
    file(STRINGS ${CUDNN_INCLUDE_DIR}/cudnn_version.h KAT_CUDNN_VERSION_LINES REGEX "#define CUDNN_(MAJOR|MINOR|PATCHLEVEL) ")
    string(REGEX REPLACE ".*CUDNN_MAJOR ([0-9]+).*" "\\1" KAT_CUDNN_MAJOR "${KAT_CUDNN_VERSION_LINES}")
    string(REGEX REPLACE ".*CUDNN_MINOR ([0-9]+).*" "\\1" KAT_CUDNN_MINOR "${KAT_CUDNN_VERSION_LINES}")
    if(NOT KAT_CUDNN_MAJOR STREQUAL "9")
      set(KAT_CUDNN_MISSING "cuDNN 9 (found headers of cuDNN ${KAT_CUDNN_MAJOR}.${KAT_CUDNN_MINOR} in ${CUDNN_INCLUDE_DIR})")
    endif()
  else()
    set(KAT_CUDNN_MISSING "cuDNN 9 (cudnn_version.h / libcudnn.so.9: pip install nvidia-cudnn-cu13, or set CUDNN_ROOT)")
  endif()
  if(NOT CUDNN_FRONTEND_INCLUDE_DIR)
    string(APPEND KAT_CUDNN_MISSING " the cudnn-frontend headers (cudnn_frontend.h: pip install "
                                    "nvidia-cudnn-frontend, or set CUDNN_FRONTEND_INCLUDE_DIR)")
  endif()
  if(KAT_CUDNN_MISSING STREQUAL "")
    set(KAT_HAVE_CUDNN ON)
    message(STATUS "kat: cuDNN ${KAT_CUDNN_MAJOR}.${KAT_CUDNN_MINOR} ${CUDNN_LIBRARY}, frontend ${CUDNN_FRONTEND_INCLUDE_DIR}")
  elseif(KAT_CUDNN STREQUAL "ON")
    message(FATAL_ERROR "KAT_CUDNN=ON but not found: ${KAT_CUDNN_MISSING}")
  else()
    message(STATUS "kat: not found: ${KAT_CUDNN_MISSING}: cuDNN attention off (`--attention cudnn` falls back to ours)")
  endif()
elseif(KAT_CUDNN STREQUAL "ON")
  message(FATAL_ERROR "KAT_CUDNN=ON needs the CUDA backend (KAT_CUDA)")
endif()
message(STATUS "kat: cuDNN attention ${KAT_HAVE_CUDNN}")
