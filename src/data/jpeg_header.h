// What an image file is, from its first bytes, without decoding it: the JPEG frame header (SOF:
// size, components, sampling factors, progressive or not, precision), the colour transform markers
// (JFIF, Adobe APP14) and the restart interval; for PNG the IHDR size and colour type. The GPU loader
// (data/cuda/gpu_loader.h) needs an image's size before its decode to draw the sample's random
// decisions (plan_sample), and the kind of JPEG to choose the decoder (nvJPEG's hardware engine,
// its CUDA decoder, or libjpeg-turbo on the CPU).
//
// Only the markers before the first scan (SOS) are read: a file cut inside its entropy-coded data
// parses here and fails at decode. Errors are kat::Error naming the file and what is wrong.
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>

namespace kat::data {

// The colour space libjpeg decodes a JPEG from (its default rules: jdapimin.c's default_decompress_parms).
enum class JpegColor { Gray, YCbCr, RGB, CMYK, YCCK };
const char* jpeg_color_name(JpegColor c);

struct JpegHeader {
  int height = 0, width = 0;  // from the frame header (SOF); height 0 means "given by a DNL marker"
  int components = 0;         // 1 (gray), 3 (YCbCr / RGB) or 4 (CMYK / YCCK)
  int precision = 8;          // bits per sample (8; 12 for extended-precision files)
  int sof = 0;                // the frame marker's number n of SOFn: 0 baseline, 1 extended, 2 progressive, ...
  bool progressive = false;   // SOF2 / SOF6 / SOF10 / SOF14
  bool arithmetic = false;    // SOF9..SOF15: arithmetic-coded
  bool lossless = false;      // SOF3 / SOF7 / SOF11 / SOF15
  int h_samp[4] = {0, 0, 0, 0}, v_samp[4] = {0, 0, 0, 0};  // per component, 1..4
  int component_id[4] = {0, 0, 0, 0};
  bool jfif = false;         // APP0 "JFIF"
  bool adobe = false;        // APP14 "Adobe"
  int adobe_transform = -1;  // its transform byte: 0 none (RGB / CMYK), 1 YCbCr, 2 YCCK; -1 without the marker
  int restart_interval = 0;  // DRI: MCUs between restart markers (0: none)
  JpegColor color = JpegColor::YCbCr;

  // Chroma subsampling of a 3-component file as "4:4:4", "4:2:2", "4:2:0", "4:4:0", "4:1:1",
  // "4:1:0"; "gray" for one component; "other" for anything else (e.g. unusual factors, 4 components).
  std::string subsampling() const;
  // A plain 8-bit Huffman-coded gray or colour (YCbCr / RGB) JPEG: what a GPU decoder may take at
  // all (the decoder still asks nvJPEG for the final word). CMYK, 12-bit, arithmetic and lossless
  // files are decoded on the CPU.
  bool gpu_candidate() const;
};

// Parses the markers of a JPEG in memory up to its first scan. Throws kat::Error naming `name` when
// the data is not a JPEG, is cut before the first scan, or has a malformed header segment.
JpegHeader parse_jpeg_header(const uint8_t* data, size_t size, const std::string& name);

// True when an end-of-image marker (FF D9) lies in the last 1 KiB of the file (FF D9 cannot occur
// inside entropy-coded data, where a data byte FF is stuffed as FF 00). A file cut short has none;
// such files are left to libjpeg-turbo, which tells a truncation from trailing padding.
bool jpeg_tail_has_eoi(const uint8_t* data, size_t size);

enum class ImageFormat { Jpeg, Png };

// Any image file the loaders read (JPEG or PNG, told by the magic bytes as decode_image_memory does).
struct ImageHeader {
  ImageFormat format = ImageFormat::Jpeg;
  int height = 0, width = 0;
  int channels = 0;  // channels the CPU decoder returns: 1 (gray) or 3 (colour; CMYK is converted to RGB)
  JpegHeader jpeg;   // JPEG files only
};
ImageHeader parse_image_header(const uint8_t* data, size_t size, const std::string& name);

}  // namespace kat::data
