// data/ycbcr.h against libjpeg-turbo itself: a JPEG's raw component planes (jpeg_read_raw_data:
// what nvJPEG's planar YUV output also is) through ycbcr::to_rgb_image must give exactly the RGB
// pixels libjpeg-turbo's default decode gives (fancy upsampling, JFIF conversion) — the conversion
// is integer arithmetic on the same planes, so the tolerance is zero. Every subsampling the
// conversion takes, at even, odd and one-pixel sizes.
#include <gtest/gtest.h>
#include <jpeglib.h>

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <string>
#include <vector>

#include "data/ycbcr.h"
#include "jpeg_variants.h"

namespace {

namespace fs = std::filesystem;

// A decompressor over `file` with its header read (the test's own files: libjpeg's default error
// handler, which exits, is enough).
void open_jpeg(jpeg_decompress_struct& cinfo, jpeg_error_mgr& jerr, const std::vector<uint8_t>& file) {
  cinfo.err = jpeg_std_error(&jerr);
  jpeg_create_decompress(&cinfo);
  jpeg_mem_src(&cinfo, file.data(), static_cast<unsigned long>(file.size()));
  jpeg_read_header(&cinfo, TRUE);
}

// libjpeg-turbo's ordinary decode to RGB (the CPU loader's settings: its defaults).
std::vector<uint8_t> decode_rgb(const std::vector<uint8_t>& file, int& h, int& w) {
  jpeg_decompress_struct cinfo;
  jpeg_error_mgr jerr;
  open_jpeg(cinfo, jerr, file);
  cinfo.out_color_space = JCS_RGB;
  jpeg_start_decompress(&cinfo);
  h = int(cinfo.output_height);
  w = int(cinfo.output_width);
  std::vector<uint8_t> out(size_t(h) * w * 3);
  while (cinfo.output_scanline < cinfo.output_height) {
    JSAMPROW row = out.data() + size_t(cinfo.output_scanline) * w * 3;
    jpeg_read_scanlines(&cinfo, &row, 1);
  }
  jpeg_finish_decompress(&cinfo);
  jpeg_destroy_decompress(&cinfo);
  return out;
}

// The same file's component planes before upsampling and colour conversion. Plane k is
// (width_in_blocks * 8) wide and padded to whole iMCU rows; `planes` gets the Planes view.
struct RawPlanes {
  std::vector<uint8_t> comp[3];
  int pitch[3] = {0, 0, 0};
  kat::data::ycbcr::Planes planes;
};

RawPlanes decode_raw(const std::vector<uint8_t>& file) {
  jpeg_decompress_struct cinfo;
  jpeg_error_mgr jerr;
  open_jpeg(cinfo, jerr, file);
  cinfo.raw_data_out = TRUE;
  cinfo.out_color_space = JCS_YCbCr;
  jpeg_start_decompress(&cinfo);
  RawPlanes r;
  const int vmax = cinfo.max_v_samp_factor;
  const int imcu_rows = int((cinfo.output_height + unsigned(vmax * DCTSIZE) - 1) / unsigned(vmax * DCTSIZE));
  for (int k = 0; k < 3; ++k) {
    const jpeg_component_info& c = cinfo.comp_info[k];
    r.pitch[k] = int(c.width_in_blocks) * DCTSIZE;
    r.comp[k].assign(size_t(r.pitch[k]) * size_t(imcu_rows * c.v_samp_factor * DCTSIZE), 0);
  }
  for (int row = 0; row < imcu_rows; ++row) {
    std::vector<JSAMPROW> rows[3];
    JSAMPARRAY arrays[3];
    for (int k = 0; k < 3; ++k) {
      const int n = cinfo.comp_info[k].v_samp_factor * DCTSIZE;
      for (int i = 0; i < n; ++i) rows[k].push_back(r.comp[k].data() + size_t(row * n + i) * size_t(r.pitch[k]));
      arrays[k] = rows[k].data();
    }
    jpeg_read_raw_data(&cinfo, arrays, JDIMENSION(vmax * DCTSIZE));
  }
  kat::data::ycbcr::Planes& p = r.planes;
  p.y = r.comp[0].data();
  p.cb = r.comp[1].data();
  p.cr = r.comp[2].data();
  p.y_pitch = r.pitch[0];
  p.c_pitch = r.pitch[1];
  p.width = int(cinfo.output_width);
  p.height = int(cinfo.output_height);
  p.h_factor = cinfo.max_h_samp_factor / cinfo.comp_info[1].h_samp_factor;
  p.v_factor = cinfo.max_v_samp_factor / cinfo.comp_info[1].v_samp_factor;
  p.c_width = int(cinfo.comp_info[1].downsampled_width);
  p.c_height = int(cinfo.comp_info[1].downsampled_height);
  jpeg_abort_decompress(&cinfo);
  jpeg_destroy_decompress(&cinfo);
  return r;
}

TEST(Ycbcr, PlanesToRgbEqualLibjpegTurbo) {
  const fs::path dir = fs::temp_directory_path() / "kat_test_ycbcr";
  fs::create_directories(dir);
  const struct { int luma_h, luma_v; } subsamplings[] = {{1, 1}, {2, 1}, {2, 2}, {1, 2}};
  const int sizes[][2] = {{96, 128}, {37, 53}, {38, 54}, {1, 17}, {17, 1}, {1, 1}, {5, 4}, {4, 3}, {375, 500}};
  int checked = 0;
  for (const auto& s : subsamplings) {
    for (const auto& hw : sizes) {
      kat::test::JpegVariant v{"ycc", hw[0], hw[1]};
      v.luma_h = s.luma_h;
      v.luma_v = s.luma_v;
      const std::string what = std::to_string(v.h) + "x" + std::to_string(v.w) + " sampled " +
                               std::to_string(s.luma_h) + "x" + std::to_string(s.luma_v);
      const std::string path = (dir / "ycc.jpg").string();
      kat::test::write_jpeg_variant(path, v, hw[0] + hw[1]);
      const std::vector<uint8_t> file = kat::test::read_file_bytes(path);
      int h = 0, w = 0;
      const std::vector<uint8_t> want = decode_rgb(file, h, w);
      const RawPlanes raw = decode_raw(file);
      ASSERT_EQ(raw.planes.h_factor, s.luma_h) << what;
      ASSERT_EQ(raw.planes.v_factor, s.luma_v) << what;
      ASSERT_TRUE(kat::data::ycbcr::supported(raw.planes.h_factor, raw.planes.v_factor)) << what;
      std::vector<uint8_t> got(want.size(), 0xAB);  // poisoned
      kat::data::ycbcr::to_rgb_image(raw.planes, got.data());
      size_t first_bad = got.size();
      for (size_t i = 0; i < got.size() && first_bad == got.size(); ++i)
        if (got[i] != want[i]) first_bad = i;
      EXPECT_EQ(first_bad, got.size()) << what << ": first difference at pixel (" << (first_bad / 3) % size_t(w)
                                       << ", " << first_bad / 3 / size_t(w) << ") channel " << first_bad % 3
                                       << ": " << int(got[std::min(first_bad, got.size() - 1)]) << " vs libjpeg "
                                       << int(want[std::min(first_bad, want.size() - 1)]);
      // The same chroma interleaved in one plane (NV12's layout, Cb first): the same pixels.
      kat::data::ycbcr::Planes nv = raw.planes;
      std::vector<uint8_t> uv(size_t(nv.c_height) * size_t(2 * nv.c_width));
      for (int y = 0; y < nv.c_height; ++y)
        for (int x = 0; x < nv.c_width; ++x) {
          uv[size_t(y) * size_t(2 * nv.c_width) + size_t(2 * x)] =
              nv.cb[size_t(y) * size_t(nv.c_pitch) + size_t(x)];
          uv[size_t(y) * size_t(2 * nv.c_width) + size_t(2 * x) + 1] =
              nv.cr[size_t(y) * size_t(nv.c_pitch) + size_t(x)];
        }
      nv.cb = uv.data();
      nv.cr = uv.data() + 1;
      nv.c_pitch = 2 * nv.c_width;
      nv.c_step = 2;
      std::vector<uint8_t> got_nv(want.size(), 0xCD);
      kat::data::ycbcr::to_rgb_image(nv, got_nv.data());
      EXPECT_TRUE(got_nv == want) << what << ": interleaved chroma";
      ++checked;
    }
  }
  EXPECT_EQ(checked, 36);
  fs::remove_all(dir);
}

// Hand-computed values: mid-grey stays grey, the extremes clamp, and one non-trivial chroma pair.
TEST(Ycbcr, ConversionOfKnownValues) {
  uint8_t rgb[3];
  kat::data::ycbcr::to_rgb(128, 128, 128, rgb);
  EXPECT_EQ(rgb[0], 128);
  EXPECT_EQ(rgb[1], 128);
  EXPECT_EQ(rgb[2], 128);
  kat::data::ycbcr::to_rgb(255, 255, 255, rgb);  // R = 255 + 178 -> 255, B -> 255
  EXPECT_EQ(rgb[0], 255);
  EXPECT_EQ(rgb[2], 255);
  // Y 100, Cb 90, Cr 170: R = 100 + round(1.402 * 42) = 159, B = 100 + round(1.772 * -38) = 33,
  // G = 100 + floor(-0.34414 * -38 - 0.71414 * 42 + 0.5) = 100 + floor(-16.42) = 83.
  kat::data::ycbcr::to_rgb(100, 90, 170, rgb);
  EXPECT_EQ(rgb[0], 159);
  EXPECT_EQ(rgb[1], 83);
  EXPECT_EQ(rgb[2], 33);
  EXPECT_FALSE(kat::data::ycbcr::supported(4, 1));  // 4:1:1 is not reproduced
}

}  // namespace
