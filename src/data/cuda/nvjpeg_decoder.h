// Batched JPEG decoding on the GPU with nvJPEG, to HWC uint8 in device memory in the file's own
// channels (interleaved RGB for colour files, one channel for gray ones: what the CPU decoder
// returns), the input of the GPU augmenter (data/cuda/gpu_augment.h), which converts channels as
// the CPU loader does. Builds with nvJPEG only (KAT_HAVE_NVJPEG); no CUDA or nvJPEG type appears here.
//
// Each image of a batch goes to the first of these that takes it:
//   1. the hardware JPEG decoder (NVJPEG_BACKEND_HARDWARE: A100, H100, H200), one batched call for
//      every colour image nvjpegDecodeBatchedSupported accepts (baseline, single scan, not 4:1:0 /
//      4:1:1; a batched call has one output format, so gray files take the next path);
//   2. nvJPEG on the CUDA cores, one image at a time through the decoupled API (GPU_HYBRID for what
//      it supports, else HYBRID: Huffman on the CPU, the rest on the GPU; progressive files);
//   3. the CPU (libjpeg-turbo / libpng, data/image_io.h, exactly the CPU loader's decode), then an
//      upload: PNG, CMYK / YCCK, 12-bit, arithmetic-coded files, a JPEG whose last bytes hold no
//      end-of-image marker (probably truncated: libjpeg tells), and any file nvJPEG rejects.
// A file no decoder reads is reported by name (kat::Error) and counted in stats().bad.
//
// Pixel agreement with libjpeg-turbo (the CPU loader's decode): both run an IDCT and colour
// conversion in integer arithmetic of their own, and upsample chroma their own way (the handles
// ask nvJPEG for interpolated upsampling, which libjpeg's "fancy" upsampling also is), so a
// decoded pixel may differ by a few levels; the bound measured and tested is in
// tests/gpu/test_gpu_data.cpp.
#pragma once
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "data/jpeg_header.h"

typedef struct CUstream_st* cudaStream_t;

namespace kat::data::cuda {

// One image to decode. `data` is the whole file (host memory; pinned memory lets nvJPEG copy it
// asynchronously), valid until the stream passed to decode() has finished the batch. `header` is
// parse_image_header's result for it (height x width x channels: the output). host_pixels
// (optional): the image already decoded on the CPU (that size), only uploaded; from pinned memory
// straight to the device when host_pixels_pinned (then valid until the stream has finished the
// batch), else through the decoder's pinned staging.
struct EncodedImage {
  const uint8_t* data = nullptr;
  size_t size = 0;
  const std::string* name = nullptr;  // the file, for messages
  ImageHeader header;
  const uint8_t* host_pixels = nullptr;
  bool host_pixels_pinned = false;
};

// Where the images of a batch went.
struct DecodeStats {
  int64_t hardware = 0;  // nvJPEG's hardware decoder
  int64_t cuda = 0;      // nvJPEG on the CUDA cores (decoupled API)
  int64_t cpu = 0;       // libjpeg-turbo / libpng, uploaded
  int64_t bad = 0;       // no decoder could read the file
  // nvJPEG's requests for device / pinned memory so far, counted when the decoder serves them from
  // memory it keeps (KAT_NVJPEG_ALLOCATOR=kept: nvjpeg_decoder.cpp's NvjpegMemory); else -1.
  int64_t device_allocs = 0, pinned_allocs = 0;
};

// True when the CPU decoder, not nvJPEG, should take this file (see the list above).
bool needs_cpu_decode(const ImageHeader& h, const uint8_t* data, size_t size);

class NvjpegDecoder {
 public:
  // max_batch: the most images one decode() takes. The current CUDA device is used. Throws
  // kat::Error when nvJPEG cannot start.
  explicit NvjpegDecoder(int max_batch);
  ~NvjpegDecoder();
  NvjpegDecoder(const NvjpegDecoder&) = delete;
  NvjpegDecoder& operator=(const NvjpegDecoder&) = delete;

  // "hardware (flags); cuda (flags)" when the GPU has a JPEG engine nvJPEG uses, else "cuda (flags)":
  // the decoders in use and the handle flags each took (strict, interpolated upsampling).
  std::string backend() const;

  // Decodes images[0..n) into dst[i] (device, header.height x header.width x header.channels
  // bytes, rows width * channels apart), enqueued on `stream`. ok[i] = false (and errors[i] the reason,
  // naming the file) for a file no decoder reads; dst[i] is then left as it was. Returns once the
  // host's part is done; the caller synchronises `stream` before reusing the input data.
  void decode(const EncodedImage* images, int n, uint8_t* const* dst, cudaStream_t stream, std::vector<char>& ok,
              std::vector<std::string>& errors);

  DecodeStats stats() const;  // a snapshot

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// libjpeg-turbo / libpng decode of one file (the CPU loader's decode: h x w x c, c = 1 or 3):
// false with err set when the file cannot be read.
bool cpu_decode(const uint8_t* data, size_t size, const std::string& name, int& h, int& w, int& c,
                std::vector<uint8_t>& out, std::string* err);

}  // namespace kat::data::cuda
