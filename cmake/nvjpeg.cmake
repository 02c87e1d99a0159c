# nvJPEG (optional, CUDA builds only): GPU JPEG decoding for the GPU data pipeline (issue #11).
#   KAT_NVJPEG=AUTO|ON|OFF   AUTO: on when nvjpeg.h and libnvjpeg are found
# Looked for, in order: NVJPEG_ROOT (env or cache), the CUDA toolkit (CUDAToolkit_INCLUDE_DIRS /
# CUDAToolkit_LIBRARY_DIR), and pip's nvidia-nvjpeg wheel (CUDA 13: nvidia/cu13/{include,lib}, with
# only libnvjpeg.so.13 in lib/; older wheels: nvidia/nvjpeg/{include,lib}).
# Sets KAT_HAVE_NVJPEG (ON/OFF), NVJPEG_INCLUDE_DIR, NVJPEG_LIBRARY.
set(KAT_NVJPEG "AUTO" CACHE STRING "GPU JPEG decoding through nvJPEG: AUTO, ON or OFF")
set(KAT_HAVE_NVJPEG OFF)
if(KAT_HAVE_CUDA AND NOT KAT_NVJPEG STREQUAL "OFF")
  include(${CMAKE_CURRENT_LIST_DIR}/pip_nvidia.cmake)
  kat_pip_nvidia_dirs(KAT_PIP_NVJPEG cu13 nvjpeg cu12)
  set(KAT_NVJPEG_HINTS $ENV{NVJPEG_ROOT} ${NVJPEG_ROOT} ${CUDAToolkit_LIBRARY_ROOT} ${KAT_PIP_NVJPEG})
  find_path(NVJPEG_INCLUDE_DIR nvjpeg.h HINTS ${KAT_NVJPEG_HINTS} ${CUDAToolkit_INCLUDE_DIRS} PATH_SUFFIXES include)
  find_library(NVJPEG_LIBRARY NAMES nvjpeg libnvjpeg.so.13 libnvjpeg.so.12
               HINTS ${KAT_NVJPEG_HINTS} ${CUDAToolkit_LIBRARY_DIR} PATH_SUFFIXES lib lib64)
  if(NVJPEG_INCLUDE_DIR AND NVJPEG_LIBRARY)
    set(KAT_HAVE_NVJPEG ON)
    message(STATUS "kat: nvJPEG ${NVJPEG_LIBRARY}")
  elseif(KAT_NVJPEG STREQUAL "ON")
    message(FATAL_ERROR "KAT_NVJPEG=ON but nvjpeg.h / libnvjpeg were not found in the CUDA toolkit, NVJPEG_ROOT "
                        "or pip's nvidia-nvjpeg wheel (pip install nvidia-nvjpeg for CUDA 13, or set NVJPEG_ROOT)")
  else()
    message(STATUS "kat: nvJPEG not found (toolkit, NVJPEG_ROOT, pip nvidia-nvjpeg): GPU JPEG decoding off, "
                   "`kat train --decode gpu` unavailable")
  endif()
elseif(KAT_NVJPEG STREQUAL "ON")
  message(FATAL_ERROR "KAT_NVJPEG=ON needs the CUDA backend (KAT_CUDA)")
endif()
message(STATUS "kat: nvJPEG (GPU JPEG decoding) ${KAT_HAVE_NVJPEG}")
