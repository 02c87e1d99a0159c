// data/jpeg_header.h: the header parser against libjpeg-turbo's own reading of the same files
// (size, components, colour space, progressive, restart interval), on every kind of test JPEG, and
// its errors on truncated and foreign input.
#include <gtest/gtest.h>
#include <jpeglib.h>

#include <csetjmp>
#include <filesystem>

#include "data/jpeg_header.h"
#include "jpeg_variants.h"
#include "kat/data/image_io.h"
#include "test_util.h"

namespace fs = std::filesystem;
using namespace kat;
using namespace kat::data;

namespace {

struct LibjpegHeader {
  int h = 0, w = 0, comps = 0;
  J_COLOR_SPACE color = JCS_UNKNOWN;
  bool progressive = false;
  unsigned restart = 0;
};
struct JumpErr {
  jpeg_error_mgr mgr;
  jmp_buf jb;
};
void jump_exit(j_common_ptr c) { longjmp(reinterpret_cast<JumpErr*>(c->err)->jb, 1); }

// What libjpeg-turbo reads from the file's header (the reference).
bool libjpeg_header(const std::vector<uint8_t>& bytes, LibjpegHeader& out) {
  jpeg_decompress_struct cinfo;
  JumpErr err;
  cinfo.err = jpeg_std_error(&err.mgr);
  err.mgr.error_exit = jump_exit;
  if (setjmp(err.jb)) {
    jpeg_destroy_decompress(&cinfo);
    return false;
  }
  jpeg_create_decompress(&cinfo);
  jpeg_mem_src(&cinfo, bytes.data(), (unsigned long)bytes.size());
  jpeg_read_header(&cinfo, TRUE);
  out.h = int(cinfo.image_height);
  out.w = int(cinfo.image_width);
  out.comps = cinfo.num_components;
  out.color = cinfo.jpeg_color_space;
  out.progressive = cinfo.progressive_mode;
  out.restart = cinfo.restart_interval;
  jpeg_destroy_decompress(&cinfo);
  return true;
}

JpegColor to_ours(J_COLOR_SPACE c) {
  switch (c) {
    case JCS_GRAYSCALE: return JpegColor::Gray;
    case JCS_RGB: return JpegColor::RGB;
    case JCS_CMYK: return JpegColor::CMYK;
    case JCS_YCCK: return JpegColor::YCCK;
    default: return JpegColor::YCbCr;
  }
}

class JpegHeaderTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = test::temp_path("kat_jpeg_header");
    fs::create_directories(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }
  std::string dir_;
};

}  // namespace

TEST_F(JpegHeaderTest, AgreesWithLibjpegOnEveryVariant) {
  for (const auto& v : test::jpeg_variants()) {
    SCOPED_TRACE(v.name);
    const std::string path = dir_ + "/" + v.name + ".jpg";
    test::write_jpeg_variant(path, v);
    const auto bytes = test::read_file_bytes(path);
    LibjpegHeader ref;
    ASSERT_TRUE(libjpeg_header(bytes, ref));
    const JpegHeader h = parse_jpeg_header(bytes.data(), bytes.size(), path);
    EXPECT_EQ(h.height, ref.h);
    EXPECT_EQ(h.width, ref.w);
    EXPECT_EQ(h.height, v.h);
    EXPECT_EQ(h.width, v.w);
    EXPECT_EQ(h.components, ref.comps);
    EXPECT_EQ(h.color, to_ours(ref.color)) << jpeg_color_name(h.color);
    EXPECT_EQ(h.progressive, ref.progressive);
    EXPECT_EQ(h.progressive, v.progressive);
    EXPECT_EQ(h.sof, v.progressive ? 2 : 0);
    EXPECT_EQ(unsigned(h.restart_interval), ref.restart);
    EXPECT_EQ(h.restart_interval, v.restart_interval);
    EXPECT_EQ(h.precision, 8);
    EXPECT_FALSE(h.arithmetic);
    EXPECT_FALSE(h.lossless);
    EXPECT_EQ(h.adobe, v.components == 4);  // libjpeg writes the Adobe marker for CMYK / YCCK
    if (v.components == 3) {
      const char* want = v.luma_h == 1 ? "4:4:4" : v.luma_v == 1 ? "4:2:2" : "4:2:0";
      EXPECT_EQ(h.subsampling(), want);
    } else if (v.components == 1) {
      EXPECT_EQ(h.subsampling(), "gray");
    } else {
      EXPECT_EQ(h.color, v.ycck ? JpegColor::YCCK : JpegColor::CMYK);
    }
    EXPECT_EQ(h.gpu_candidate(), v.components != 4);
    // The generic header: what the CPU decoder would return.
    const ImageHeader ih = parse_image_header(bytes.data(), bytes.size(), path);
    EXPECT_EQ(ih.format, ImageFormat::Jpeg);
    EXPECT_EQ(ih.channels, v.components == 1 ? 1 : 3);
    int dh = 0, dw = 0, dc = 0;
    std::vector<uint8_t> px;
    ASSERT_TRUE(decode_image_file(path, dh, dw, dc, px));
    EXPECT_EQ(dh, ih.height);
    EXPECT_EQ(dw, ih.width);
    EXPECT_EQ(dc, ih.channels);
  }
}

TEST_F(JpegHeaderTest, EveryPrefixParsesOrNamesTheFile) {
  // Any cut of a file either still holds the whole header (the scan data is not read here) or
  // gives a kat::Error naming the file: never a crash or a read past the end.
  test::JpegVariant v{"prefix", 24, 32};
  v.restart_interval = 1;
  const std::string path = dir_ + "/prefix.jpg";
  test::write_jpeg_variant(path, v);
  const auto bytes = test::read_file_bytes(path);
  size_t sos = 0;  // offset of the SOS marker
  for (size_t i = 2; i + 1 < bytes.size(); ++i)
    if (bytes[i] == 0xFF && bytes[i + 1] == 0xDA) {
      sos = i;
      break;
    }
  ASSERT_GT(sos, 0u);
  for (size_t n = 0; n <= bytes.size(); ++n) {
    // An exact-size heap copy, so that AddressSanitizer sees a read past the cut.
    std::vector<uint8_t> cut(bytes.begin(), bytes.begin() + std::ptrdiff_t(n));
    if (n >= sos + 2) {
      const JpegHeader h = parse_jpeg_header(cut.data(), cut.size(), "cut.jpg");
      EXPECT_EQ(h.height, 24);
      EXPECT_EQ(h.width, 32);
    } else {
      test::expect_error([&] { parse_jpeg_header(cut.data(), cut.size(), "cut.jpg"); }, {"file cut.jpg"});
    }
  }
}

TEST_F(JpegHeaderTest, ErrorsNameTheFileAndTheFault) {
  const std::string path = dir_ + "/a.jpg";
  test::write_jpeg_variant(path, {"a", 16, 16});
  auto bytes = test::read_file_bytes(path);
  test::expect_error([&] { parse_jpeg_header(bytes.data(), 10, "x/a.jpg"); }, {"file x/a.jpg", "truncated JPEG"});
  const std::vector<uint8_t> text = {'h', 'e', 'l', 'l', 'o', '\n'};
  test::expect_error([&] { parse_image_header(text.data(), text.size(), "notes.jpg"); },
                     {"file notes.jpg", "not a PNG or JPEG"});
  test::expect_error([&] { parse_jpeg_header(text.data(), text.size(), "notes.jpg"); },
                     {"file notes.jpg", "not a JPEG"});
  // A segment length pointing past the end.
  auto bad = bytes;
  bad[4] = 0xFF;  // APP0 length high byte
  test::expect_error([&] { parse_jpeg_header(bad.data(), bad.size(), "b.jpg"); }, {"file b.jpg", "truncated"});
  // Garbage where a marker belongs.
  bad = bytes;
  const size_t app0_len = (size_t(bytes[4]) << 8) | bytes[5];
  bad[4 + app0_len] = 0x12;
  test::expect_error([&] { parse_jpeg_header(bad.data(), bad.size(), "c.jpg"); },
                     {"file c.jpg", "expected a marker"});
}

TEST_F(JpegHeaderTest, PngSizeAndChannels) {
  const auto rgb = test::test_pattern(7, 5, 3), gray = test::test_pattern(9, 4, 1);
  write_png(dir_ + "/rgb.png", 7, 5, 3, rgb.data());
  write_png(dir_ + "/gray.png", 9, 4, 1, gray.data());
  auto b = test::read_file_bytes(dir_ + "/rgb.png");
  ImageHeader h = parse_image_header(b.data(), b.size(), "rgb.png");
  EXPECT_EQ(h.format, ImageFormat::Png);
  EXPECT_EQ(h.height, 7);
  EXPECT_EQ(h.width, 5);
  EXPECT_EQ(h.channels, 3);
  b = test::read_file_bytes(dir_ + "/gray.png");
  h = parse_image_header(b.data(), b.size(), "gray.png");
  EXPECT_EQ(h.height, 9);
  EXPECT_EQ(h.width, 4);
  EXPECT_EQ(h.channels, 1);
  test::expect_error([&] { parse_image_header(b.data(), 20, "short.png"); }, {"file short.png", "truncated PNG"});
}
