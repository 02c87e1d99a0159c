// Test images: JPEG files of every kind the loaders meet (baseline, progressive, gray, CMYK / YCCK,
// restart markers, odd sizes, 4:4:4 / 4:2:2 / 4:2:0 chroma), written at test time with
// libjpeg-turbo's API (Debian libjpeg62-turbo-dev), and a smooth test pattern to put in them.
// Shared by the CPU tests (jpeg_header) and the GPU tests (nvJPEG against libjpeg-turbo).
#pragma once
#include <jpeglib.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "kat/core/error.h"

namespace kat::test {

struct JpegVariant {
  std::string name;
  int h = 0, w = 0;
  int components = 3;          // 1 gray, 3 colour (YCbCr), 4 CMYK / YCCK
  bool ycck = false;           // 4 components: Adobe YCCK instead of plain CMYK
  bool progressive = false;    // jpeg_simple_progression
  int luma_h = 2, luma_v = 2;  // luma sampling factors: 2x2 = 4:2:0, 2x1 = 4:2:2, 1x1 = 4:4:4
  int restart_interval = 0;    // MCUs between restart markers (0: none)
  int quality = 90;
};

// The kinds the decoders are tested on.
inline std::vector<JpegVariant> jpeg_variants() {
  std::vector<JpegVariant> v;
  v.push_back({"baseline420", 96, 128});
  JpegVariant s444{"baseline444", 80, 120};
  s444.luma_h = s444.luma_v = 1;
  v.push_back(s444);
  JpegVariant s422{"baseline422", 64, 100};
  s422.luma_v = 1;
  v.push_back(s422);
  JpegVariant odd{"odd_size", 37, 53};
  v.push_back(odd);
  JpegVariant odd444{"odd_size444", 1, 17};
  odd444.luma_h = odd444.luma_v = 1;
  v.push_back(odd444);
  JpegVariant prog{"progressive", 75, 99};
  prog.progressive = true;
  v.push_back(prog);
  JpegVariant gray{"gray", 50, 70};
  gray.components = 1;
  gray.luma_h = gray.luma_v = 1;
  v.push_back(gray);
  JpegVariant rst{"restart", 90, 130};
  rst.restart_interval = 3;
  v.push_back(rst);
  JpegVariant cmyk{"cmyk", 40, 60};
  cmyk.components = 4;
  cmyk.luma_h = cmyk.luma_v = 1;
  v.push_back(cmyk);
  JpegVariant ycck = cmyk;
  ycck.name = "ycck";
  ycck.ycck = true;
  v.push_back(ycck);
  JpegVariant big{"imagenet_like", 375, 500};
  v.push_back(big);
  return v;
}

// A smooth colour pattern with some texture (h x w x c, c = 1, 3 or 4): gradients plus a
// deterministic ripple, so JPEG artefacts stay small and resampling differences stay meaningful.
inline std::vector<uint8_t> test_pattern(int h, int w, int c, int seed = 0) {
  std::vector<uint8_t> px(size_t(h) * w * c);
  for (int y = 0; y < h; ++y)
    for (int x = 0; x < w; ++x)
      for (int k = 0; k < c; ++k) {
        const int v = (y * 255 / (h > 1 ? h - 1 : 1)) * (k % 2 == 0) + (x * 255 / (w > 1 ? w - 1 : 1)) * (k % 2) +
                      ((x * 7 + y * 3 + seed * 11 + k * 29) % 23) - 11;
        px[(size_t(y) * w + x) * c + k] = uint8_t(v < 0 ? 0 : v > 255 ? 255 : v);
      }
  return px;
}

namespace detail {
struct JpegWriteError {
  jpeg_error_mgr mgr;
};
// libjpeg is C: no exception may cross it. Writing a test image cannot fail on valid parameters,
// so an error here is a bug in the test itself: say what and stop.
[[noreturn]] inline void jpeg_write_error_exit(j_common_ptr cinfo) {
  char msg[JMSG_LENGTH_MAX];
  (*cinfo->err->format_message)(cinfo, msg);
  std::fprintf(stderr, "writing a test JPEG failed: %s\n", msg);
  std::abort();
}
}  // namespace detail

// Writes variant v of the test pattern to path; returns the pixels written (h x w x components).
inline std::vector<uint8_t> write_jpeg_variant(const std::string& path, const JpegVariant& v, int seed = 0) {
  const std::vector<uint8_t> px = test_pattern(v.h, v.w, v.components, seed);
  FILE* fp = std::fopen(path.c_str(), "wb");
  KAT_CHECK(fp, "cannot write ", path);
  jpeg_compress_struct cinfo;
  detail::JpegWriteError jerr;
  cinfo.err = jpeg_std_error(&jerr.mgr);
  jerr.mgr.error_exit = detail::jpeg_write_error_exit;
  jpeg_create_compress(&cinfo);
  jpeg_stdio_dest(&cinfo, fp);
  cinfo.image_width = JDIMENSION(v.w);
  cinfo.image_height = JDIMENSION(v.h);
  cinfo.input_components = v.components;
  cinfo.in_color_space = v.components == 1 ? JCS_GRAYSCALE : v.components == 3 ? JCS_RGB : JCS_CMYK;
  jpeg_set_defaults(&cinfo);
  if (v.components == 4) jpeg_set_colorspace(&cinfo, v.ycck ? JCS_YCCK : JCS_CMYK);
  jpeg_set_quality(&cinfo, v.quality, TRUE);
  cinfo.comp_info[0].h_samp_factor = v.luma_h;
  cinfo.comp_info[0].v_samp_factor = v.luma_v;
  for (int k = 1; k < cinfo.num_components; ++k)
    cinfo.comp_info[k].h_samp_factor = cinfo.comp_info[k].v_samp_factor = 1;
  if (v.components == 4)  // YCCK: K at full resolution like Y
    cinfo.comp_info[3].h_samp_factor = v.luma_h, cinfo.comp_info[3].v_samp_factor = v.luma_v;
  cinfo.restart_interval = unsigned(v.restart_interval);
  if (v.progressive) jpeg_simple_progression(&cinfo);
  jpeg_start_compress(&cinfo, TRUE);
  while (cinfo.next_scanline < cinfo.image_height) {
    JSAMPROW row = const_cast<uint8_t*>(px.data()) + size_t(cinfo.next_scanline) * v.w * v.components;
    jpeg_write_scanlines(&cinfo, &row, 1);
  }
  jpeg_finish_compress(&cinfo);
  jpeg_destroy_compress(&cinfo);
  std::fclose(fp);
  return px;
}

// The first `keep` bytes of a file into another (a truncated copy).
inline void write_truncated(const std::string& src, const std::string& dst, size_t keep) {
  FILE* in = std::fopen(src.c_str(), "rb");
  KAT_CHECK(in, "cannot read ", src);
  std::vector<uint8_t> bytes(keep);
  const size_t got = std::fread(bytes.data(), 1, keep, in);
  std::fclose(in);
  FILE* out = std::fopen(dst.c_str(), "wb");
  KAT_CHECK(out, "cannot write ", dst);
  std::fwrite(bytes.data(), 1, got, out);
  std::fclose(out);
}

inline std::vector<uint8_t> read_file_bytes(const std::string& path) {
  FILE* in = std::fopen(path.c_str(), "rb");
  KAT_CHECK(in, "cannot read ", path);
  std::vector<uint8_t> bytes;
  uint8_t buf[65536];
  size_t got;
  while ((got = std::fread(buf, 1, sizeof buf, in)) > 0) bytes.insert(bytes.end(), buf, buf + got);
  std::fclose(in);
  return bytes;
}

}  // namespace kat::test
