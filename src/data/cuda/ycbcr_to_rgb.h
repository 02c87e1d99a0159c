// JPEG component planes on the device (nvJPEG's planar YUV output) to interleaved RGB, bit for bit
// as data/ycbcr.h computes it on the CPU (libjpeg-turbo's fancy upsampling and JFIF conversion).
// Enqueued on the caller's stream, asynchronous: the nvJPEG decoder's YUV mode
// (KAT_NVJPEG_OUTPUT=yuv, data/cuda/nvjpeg_decoder.h) converts here so that nvJPEG runs no kernel of
// its own for the hardware-decoded images and its call returns without waiting for the SMs.
#pragma once
#include <cstdint>

#include "data/ycbcr.h"

typedef struct CUstream_st* cudaStream_t;

namespace kat::data::cuda {

// One image: its planes (device pointers) and where its RGB goes (device, width * 3 bytes a row).
struct YcbcrJob {
  ycbcr::Planes planes;
  uint8_t* rgb = nullptr;
};

// Converts jobs[0..n) (host array; passed to the kernels by value, a few launches for a batch).
void ycbcr_to_rgb(const YcbcrJob* jobs, int n, cudaStream_t stream);

}  // namespace kat::data::cuda
