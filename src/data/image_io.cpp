#include "kat/data/image_io.h"

#include <jerror.h>
#include <jpeglib.h>
#include <png.h>

#include <algorithm>
#include <cmath>
#include <csetjmp>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>

#include "data/augment_math.h"
#include "data/resample.h"
#include "kat/core/error.h"

namespace kat::data {

namespace {

bool fail(std::string* err, const std::string& msg) {
  if (err) *err = msg;
  return false;
}

// ---- PNG (simplified libpng API: no setjmp needed) -------------------------------------------
bool decode_png(const uint8_t* data, size_t size, const std::string& name, int& h, int& w, int& c,
                std::vector<uint8_t>& out, std::string* err) {
  png_image img;
  std::memset(&img, 0, sizeof(img));
  img.version = PNG_IMAGE_VERSION;
  if (!png_image_begin_read_from_memory(&img, data, size)) {
    std::string m = img.message;
    png_image_free(&img);
    return fail(err, "file " + name + ": corrupt PNG (" + m + ")");
  }
  const bool color = (img.format & PNG_FORMAT_FLAG_COLOR) != 0;
  const bool alpha = (img.format & PNG_FORMAT_FLAG_ALPHA) != 0;
  img.format = (color ? PNG_FORMAT_RGB : PNG_FORMAT_GRAY) | (alpha ? PNG_FORMAT_FLAG_ALPHA : 0u);
  const int src_c = (color ? 3 : 1) + (alpha ? 1 : 0);
  if (img.width == 0 || img.height == 0 || img.width > (1u << 15) || img.height > (1u << 15)) {
    png_image_free(&img);
    return fail(err, "file " + name + ": unsupported PNG size " + std::to_string(img.width) + "x" +
                         std::to_string(img.height));
  }
  h = static_cast<int>(img.height);
  w = static_cast<int>(img.width);
  c = color ? 3 : 1;
  std::vector<uint8_t> buf(static_cast<size_t>(h) * w * src_c);
  if (!png_image_finish_read(&img, nullptr, buf.data(), 0, nullptr)) {
    std::string m = img.message;
    png_image_free(&img);
    return fail(err, "file " + name + ": corrupt PNG (" + m + ")");
  }
  png_image_free(&img);
  if (!alpha) {
    out.swap(buf);
  } else {  // drop alpha
    out.resize(static_cast<size_t>(h) * w * c);
    const size_t np = static_cast<size_t>(h) * w;
    for (size_t i = 0; i < np; ++i)
      for (int k = 0; k < c; ++k) out[i * c + k] = buf[i * src_c + k];
  }
  return true;
}

// ---- JPEG (libjpeg with setjmp error recovery) -----------------------------------------------
struct JpegErr {
  jpeg_error_mgr mgr;
  jmp_buf jb;
  char msg[JMSG_LENGTH_MAX];
  bool fatal_warning;
};

void jpeg_error_exit_cb(j_common_ptr cinfo) {
  JpegErr* e = reinterpret_cast<JpegErr*>(cinfo->err);
  (*cinfo->err->format_message)(cinfo, e->msg);
  longjmp(e->jb, 1);
}

void jpeg_emit_message_cb(j_common_ptr cinfo, int level) {
  JpegErr* e = reinterpret_cast<JpegErr*>(cinfo->err);
  if (level < 0) {  // warning: a truncated file is an error for us; other warnings are benign
    const int code = cinfo->err->msg_code;
    if ((code == JWRN_JPEG_EOF || code == JWRN_HIT_MARKER) && !e->fatal_warning) {
      e->fatal_warning = true;
      (*cinfo->err->format_message)(cinfo, e->msg);
    }
    cinfo->err->num_warnings++;
  }
}

// Only POD locals between setjmp and longjmp; `out` belongs to the caller.
bool decode_jpeg_raw(const uint8_t* data, size_t size, int& h, int& w, int& c, std::vector<uint8_t>& out,
                     char* msg_out, int min_side) {
  jpeg_decompress_struct cinfo;
  JpegErr jerr;
  std::memset(&jerr, 0, sizeof(jerr));
  cinfo.err = jpeg_std_error(&jerr.mgr);
  jerr.mgr.error_exit = jpeg_error_exit_cb;
  jerr.mgr.emit_message = jpeg_emit_message_cb;
  if (setjmp(jerr.jb)) {
    jpeg_destroy_decompress(&cinfo);
    std::snprintf(msg_out, JMSG_LENGTH_MAX, "%s", jerr.msg);
    return false;
  }
  jpeg_create_decompress(&cinfo);
  jpeg_mem_src(&cinfo, data, static_cast<unsigned long>(size));
  jpeg_read_header(&cinfo, TRUE);
  if (min_side > 0) {
    // Smallest scale 1/8, 1/4 or 1/2 whose output keeps the shorter side >= min_side. Only these:
    // libjpeg-turbo has SIMD IDCTs for them; other s/8 scales run plain C and measured no faster
    // than a full decode (500x375 -> 313x235: 1.19 vs 1.21 ms).
    const unsigned short_side = std::min(cinfo.image_width, cinfo.image_height);
    unsigned s = 1;
    while (s < 8 && (short_side * s + 7) / 8 < unsigned(min_side)) s *= 2;
    cinfo.scale_num = s;
    cinfo.scale_denom = 8;
  }
  if (cinfo.jpeg_color_space == JCS_GRAYSCALE) {
    cinfo.out_color_space = JCS_GRAYSCALE;
  } else {
    cinfo.out_color_space = JCS_RGB;  // CMYK/YCCK are decoded as CMYK and converted below
    if (cinfo.jpeg_color_space == JCS_CMYK || cinfo.jpeg_color_space == JCS_YCCK) cinfo.out_color_space = JCS_CMYK;
  }
  jpeg_start_decompress(&cinfo);
  w = static_cast<int>(cinfo.output_width);
  h = static_cast<int>(cinfo.output_height);
  const int oc = cinfo.output_components;
  c = oc == 1 ? 1 : 3;
  out.resize(static_cast<size_t>(h) * w * oc);
  while (cinfo.output_scanline < cinfo.output_height) {
    JSAMPROW row = out.data() + static_cast<size_t>(cinfo.output_scanline) * w * oc;
    jpeg_read_scanlines(&cinfo, &row, 1);
  }
  jpeg_finish_decompress(&cinfo);
  jpeg_destroy_decompress(&cinfo);
  if (jerr.fatal_warning) {
    std::snprintf(msg_out, JMSG_LENGTH_MAX, "%s", jerr.msg);
    return false;
  }
  if (oc == 4) {  // CMYK (Adobe inverted) -> RGB
    const size_t np = static_cast<size_t>(h) * w;
    for (size_t i = 0; i < np; ++i) {
      const int k = out[i * 4 + 3];
      for (int j = 0; j < 3; ++j) out[i * 3 + j] = static_cast<uint8_t>((out[i * 4 + j] * k + 127) / 255);
    }
    out.resize(np * 3);
  }
  return true;
}

}  // namespace

bool decode_image_memory(const uint8_t* data, size_t size, const std::string& name, int& h, int& w, int& c,
                         std::vector<uint8_t>& out, std::string* err, int min_side) {
  static const uint8_t png_sig[8] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n'};
  if (size >= 8 && std::memcmp(data, png_sig, 8) == 0) return decode_png(data, size, name, h, w, c, out, err);
  if (size >= 3 && data[0] == 0xFF && data[1] == 0xD8 && data[2] == 0xFF) {
    char msg[JMSG_LENGTH_MAX] = {0};
    if (!decode_jpeg_raw(data, size, h, w, c, out, msg, min_side))
      return fail(err, "file " + name + ": corrupt JPEG (" + msg + ")");
    if (h <= 0 || w <= 0) return fail(err, "file " + name + ": empty JPEG");
    return true;
  }
  return fail(err, "file " + name + ": not a PNG or JPEG image (" + std::to_string(size) + " bytes)");
}

bool decode_image_file(const std::string& path, int& h, int& w, int& c, std::vector<uint8_t>& out,
                       std::string* err, int min_side) {
  std::error_code ec;
  if (std::filesystem::exists(path, ec) && !std::filesystem::is_regular_file(path, ec))
    return fail(err, "file " + path + ": not a regular file");
  std::ifstream f(path, std::ios::binary | std::ios::ate);
  if (!f) return fail(err, "file " + path + ": cannot open");
  const std::streamoff size = f.tellg();
  if (size < 0 || size > (std::streamoff(1) << 31))
    return fail(err, "file " + path + ": cannot read its size, or larger than 2 GiB");
  thread_local std::vector<uint8_t> bytes;  // one read of the whole file, buffer reused per thread
  bytes.resize(static_cast<size_t>(size));
  f.seekg(0);
  if (size > 0 && !f.read(reinterpret_cast<char*>(bytes.data()), size))
    return fail(err, "file " + path + ": read failed");
  return decode_image_memory(bytes.data(), bytes.size(), path, h, w, c, out, err, min_side);
}

void write_png(const std::string& path, int h, int w, int c, const uint8_t* pixels) {
  KAT_CHECK(c == 1 || c == 3, "write_png ", path, ": channels must be 1 or 3, got ", c);
  png_image img;
  std::memset(&img, 0, sizeof(img));
  img.version = PNG_IMAGE_VERSION;
  img.width = static_cast<png_uint_32>(w);
  img.height = static_cast<png_uint_32>(h);
  img.format = c == 3 ? PNG_FORMAT_RGB : PNG_FORMAT_GRAY;
  if (!png_image_write_to_file(&img, path.c_str(), 0, pixels, 0, nullptr)) {
    std::string m = img.message;
    png_image_free(&img);
    throw Error("file " + path + ": cannot write PNG (" + m + ")");
  }
}

namespace {
bool encode_jpeg_raw(FILE* fp, int h, int w, int c, const uint8_t* pixels, int quality, char* msg_out) {
  jpeg_compress_struct cinfo;
  JpegErr jerr;
  std::memset(&jerr, 0, sizeof(jerr));
  cinfo.err = jpeg_std_error(&jerr.mgr);
  jerr.mgr.error_exit = jpeg_error_exit_cb;
  if (setjmp(jerr.jb)) {
    jpeg_destroy_compress(&cinfo);
    std::snprintf(msg_out, JMSG_LENGTH_MAX, "%s", jerr.msg);
    return false;
  }
  jpeg_create_compress(&cinfo);
  jpeg_stdio_dest(&cinfo, fp);
  cinfo.image_width = static_cast<JDIMENSION>(w);
  cinfo.image_height = static_cast<JDIMENSION>(h);
  cinfo.input_components = c;
  cinfo.in_color_space = c == 3 ? JCS_RGB : JCS_GRAYSCALE;
  jpeg_set_defaults(&cinfo);
  jpeg_set_quality(&cinfo, quality, TRUE);
  jpeg_start_compress(&cinfo, TRUE);
  while (cinfo.next_scanline < cinfo.image_height) {
    JSAMPROW row = const_cast<uint8_t*>(pixels) + static_cast<size_t>(cinfo.next_scanline) * w * c;
    jpeg_write_scanlines(&cinfo, &row, 1);
  }
  jpeg_finish_compress(&cinfo);
  jpeg_destroy_compress(&cinfo);
  return true;
}
}  // namespace

void write_jpeg(const std::string& path, int h, int w, int c, const uint8_t* pixels, int quality) {
  KAT_CHECK(c == 1 || c == 3, "write_jpeg ", path, ": channels must be 1 or 3, got ", c);
  FILE* fp = std::fopen(path.c_str(), "wb");
  KAT_CHECK(fp, "file ", path, ": cannot open for writing");
  char msg[JMSG_LENGTH_MAX] = {0};
  const bool ok = encode_jpeg_raw(fp, h, w, c, pixels, quality, msg);
  const bool closed = std::fclose(fp) == 0;
  KAT_CHECK(ok, "file ", path, ": cannot write JPEG (", msg, ")");
  KAT_CHECK(closed, "file ", path, ": write failed");
}

void convert_channels(const uint8_t* px, size_t np, int c_in, int c_out, uint8_t* dst) {
  if (c_in == c_out) {
    std::copy(px, px + np * size_t(c_in), dst);
  } else if (c_in == 1) {
    for (size_t p = 0; p < np; ++p) dst[p * 3] = dst[p * 3 + 1] = dst[p * 3 + 2] = px[p];
  } else {
    for (size_t p = 0; p < np; ++p) dst[p] = augmath::luma(px[p * 3], px[p * 3 + 1], px[p * 3 + 2]);
  }
}

// ---- resampling ------------------------------------------------------------------------------
// Triangle filter over the source interval [in0, in0 + in_len) mapped onto out_size samples.
void make_taps(double in0, double in_len, int in_size, int out_size, Taps& t) {
  const double scale = in_len / out_size;
  const double fscale = std::max(scale, 1.0);
  const double support = fscale;  // triangle radius 1 scaled
  t.maxk = static_cast<int>(std::ceil(support)) * 2 + 1;
  t.start.assign(out_size, 0);
  t.count.assign(out_size, 0);
  t.weights.assign(static_cast<size_t>(out_size) * t.maxk, 0.f);
  for (int i = 0; i < out_size; ++i) {
    const double center = in0 + (i + 0.5) * scale;
    int lo = static_cast<int>(std::floor(center - support));
    int hi = static_cast<int>(std::ceil(center + support));
    lo = std::max(lo, 0);
    hi = std::min(hi, in_size);
    if (hi > lo + t.maxk) hi = lo + t.maxk;
    double sum = 0;
    float* wts = &t.weights[static_cast<size_t>(i) * t.maxk];
    int n = 0;
    for (int j = lo; j < hi; ++j, ++n) {
      const double d = std::abs((j + 0.5 - center) / fscale);
      const double wt = d < 1.0 ? 1.0 - d : 0.0;
      wts[n] = static_cast<float>(wt);
      sum += wt;
    }
    if (sum <= 0) {  // degenerate (box outside the image): nearest pixel
      const int j = std::clamp(static_cast<int>(std::floor(center)), 0, in_size - 1);
      lo = j;
      n = 1;
      wts[0] = 1.f;
      sum = 1.0;
    }
    for (int k = 0; k < n; ++k) wts[k] = static_cast<float>(wts[k] / sum);
    // Drop zero-weight taps at either end (up to a third of the taps when upsampling): adding
    // 0 * pixel is exact, so the result is bitwise the same, with less work.
    int first = 0;
    while (n - first > 1 && wts[first] == 0.f) ++first;
    while (n - first > 1 && wts[n - 1] == 0.f) --n;
    if (first > 0) std::copy(wts + first, wts + n, wts);
    lo += first;
    n -= first;
    t.start[i] = lo;
    t.count[i] = n;
  }
}

void resample_bilinear(const uint8_t* src, int sh, int sw, int c, double y0, double x0, double bh, double bw,
                       uint8_t* dst, int oh, int ow) {
  // Separable: horizontal pass into fp32 rows (only the source rows the vertical taps touch), then
  // the vertical pass row by row. Every output sums its taps in ascending order with explicit fused
  // multiply-adds, so the result depends neither on how the loops below are arranged nor on the
  // compiler's contraction choices; the loops are arranged for speed:
  // the channels of a pixel share one pass over its taps, and the vertical pass accumulates whole
  // rows (contiguous, vectorised). Buffers are per thread (no allocation per image in steady state).
  thread_local Taps tx, ty;
  thread_local std::vector<float> tmp, acc;
  make_taps(x0, bw, sw, ow, tx);
  make_taps(y0, bh, sh, oh, ty);
  int rlo = sh, rhi = 0;
  for (int i = 0; i < oh; ++i) {
    rlo = std::min(rlo, ty.start[i]);
    rhi = std::max(rhi, ty.start[i] + ty.count[i]);
  }
  const int nrows = rhi - rlo;
  const size_t row = static_cast<size_t>(ow) * c;
  tmp.resize(static_cast<size_t>(nrows) * row);
  thread_local std::vector<float> frow;  // the source row as float (converted once, not per tap)
  frow.resize(static_cast<size_t>(sw) * c);
  for (int r = 0; r < nrows; ++r) {
    const uint8_t* srow8 = src + static_cast<size_t>(r + rlo) * sw * c;
    for (size_t i = 0; i < frow.size(); ++i) frow[i] = static_cast<float>(srow8[i]);
    const float* srow = frow.data();
    float* trow = &tmp[static_cast<size_t>(r) * row];
    for (int x = 0; x < ow; ++x) {
      const float* wts = &tx.weights[static_cast<size_t>(x) * tx.maxk];
      const int n = tx.count[x];
      const float* p = srow + static_cast<size_t>(tx.start[x]) * c;
      if (c == 3) {
        float a0 = 0.f, a1 = 0.f, a2 = 0.f;
        for (int j = 0; j < n; ++j) {
          const float w = wts[j];
          a0 = std::fma(w, p[3 * j], a0);
          a1 = std::fma(w, p[3 * j + 1], a1);
          a2 = std::fma(w, p[3 * j + 2], a2);
        }
        trow[3 * x] = a0;
        trow[3 * x + 1] = a1;
        trow[3 * x + 2] = a2;
      } else {
        for (int k = 0; k < c; ++k) {
          float a = 0.f;
          for (int j = 0; j < n; ++j) a = std::fma(wts[j], p[j * c + k], a);
          trow[x * c + k] = a;
        }
      }
    }
  }
  acc.resize(row);
  for (int y = 0; y < oh; ++y) {
    const float* wts = &ty.weights[static_cast<size_t>(y) * ty.maxk];
    const int s0 = ty.start[y] - rlo, n = ty.count[y];
    std::fill(acc.begin(), acc.end(), 0.f);
    float* a = acc.data();
    for (int j = 0; j < n; ++j) {
      const float w = wts[j];
      const float* t = &tmp[static_cast<size_t>(s0 + j) * row];
      for (size_t x = 0; x < row; ++x) a[x] = std::fma(w, t[x], a[x]);
    }
    uint8_t* drow = dst + static_cast<size_t>(y) * row;
    for (size_t x = 0; x < row; ++x) {
      const int v = static_cast<int>(a[x] + 0.5f);
      drow[x] = static_cast<uint8_t>(std::clamp(v, 0, 255));
    }
  }
}

namespace {
double pil_bicubic(double x) {
  constexpr double a = -0.5;
  if (x < 0.0) x = -x;
  if (x < 1.0) return ((a + 2.0) * x - (a + 3.0)) * x * x + 1;
  if (x < 2.0) return (((x - 5) * x + 8) * x - 4) * a;
  return 0.0;
}
}  // namespace

void pil_taps(int in_size, int out_size, PilTaps& t) {
  const double scale = static_cast<double>(in_size) / out_size;
  const double filterscale = std::max(scale, 1.0);
  const double support = 2.0 * filterscale;
  t.ksize = static_cast<int>(std::ceil(support)) * 2 + 1;
  t.first.assign(out_size, 0);
  t.count.assign(out_size, 0);
  t.k.assign(static_cast<size_t>(out_size) * t.ksize, 0);
  std::vector<double> w(t.ksize);
  for (int xx = 0; xx < out_size; ++xx) {
    const double center = (xx + 0.5) * scale;
    const double ss = 1.0 / filterscale;
    const int xmin = std::max(static_cast<int>(center - support + 0.5), 0);  // C truncation, as PIL
    const int xmax = std::min(static_cast<int>(center + support + 0.5), in_size) - xmin;
    double ww = 0.0;
    for (int x = 0; x < xmax; ++x) {
      w[x] = pil_bicubic((x + xmin - center + 0.5) * ss);
      ww += w[x];
    }
    int32_t* kk = &t.k[static_cast<size_t>(xx) * t.ksize];
    for (int x = 0; x < xmax; ++x) {
      const double v = ww != 0.0 ? w[x] / ww : w[x];
      kk[x] =
          static_cast<int32_t>(v < 0 ? -0.5 + v * (1 << kPilPrecisionBits) : 0.5 + v * (1 << kPilPrecisionBits));
    }
    t.first[xx] = xmin;
    t.count[xx] = xmax;
  }
}

void resize_bicubic_pil(const uint8_t* src, int sh, int sw, int c, uint8_t* dst, int oh, int ow) {
  KAT_CHECK(sh > 0 && sw > 0 && oh > 0 && ow > 0 && c > 0, "resize_bicubic_pil: bad sizes");
  if (sh == oh && sw == ow) {  // PIL returns a copy
    std::copy(src, src + static_cast<size_t>(sh) * sw * c, dst);
    return;
  }
  thread_local PilTaps tx, ty;
  thread_local std::vector<uint8_t> tmp;
  pil_taps(sw, ow, tx);
  pil_taps(sh, oh, ty);
  constexpr int32_t half = 1 << (kPilPrecisionBits - 1);
  // Horizontal pass (when the width changes) over the source rows the vertical taps use.
  const uint8_t* rows = src;
  int row0 = 0;  // source row of rows[0]
  int rw = sw;
  if (ow != sw) {
    // (With the height unchanged the taps are the identity: rows 0 .. sh.)
    row0 = ty.first[0];
    const int n = ty.first[oh - 1] + ty.count[oh - 1] - row0;
    tmp.resize(static_cast<size_t>(n) * ow * c);
    for (int y = 0; y < n; ++y) {
      const uint8_t* in = src + static_cast<size_t>(y + row0) * sw * c;
      uint8_t* out = &tmp[static_cast<size_t>(y) * ow * c];
      for (int xx = 0; xx < ow; ++xx) {
        const int32_t* k = &tx.k[static_cast<size_t>(xx) * tx.ksize];
        const uint8_t* p = in + static_cast<size_t>(tx.first[xx]) * c;
        for (int ch = 0; ch < c; ++ch) {
          int32_t ss = half;
          for (int x = 0; x < tx.count[xx]; ++x) ss += int32_t(p[x * c + ch]) * k[x];
          out[xx * c + ch] = pil_clip8(ss);
        }
      }
    }
    rows = tmp.data();
    rw = ow;
  }
  if (oh == sh) {  // no vertical pass
    std::copy(rows, rows + static_cast<size_t>(oh) * rw * c, dst);
    return;
  }
  const size_t stride = static_cast<size_t>(rw) * c;
  for (int yy = 0; yy < oh; ++yy) {
    const int32_t* k = &ty.k[static_cast<size_t>(yy) * ty.ksize];
    const uint8_t* base = rows + static_cast<size_t>(ty.first[yy] - row0) * stride;
    uint8_t* out = dst + static_cast<size_t>(yy) * stride;
    for (size_t i = 0; i < stride; ++i) {
      int32_t ss = half;
      for (int y = 0; y < ty.count[yy]; ++y) ss += int32_t(base[y * stride + i]) * k[y];
      out[i] = pil_clip8(ss);
    }
  }
}

EvalFitGeometry eval_fit_geometry(int sh, int sw, int size, double crop_pct) {
  KAT_CHECK(size > 0 && crop_pct > 0 && crop_pct <= 1.0, "eval transform: bad size ", size, " or crop_pct ",
            crop_pct);
  const int scale = static_cast<int>(std::floor(size / crop_pct));  // timm: math.floor(img_size / crop_pct)
  // torchvision _compute_resized_output_size: the shorter side (the width on ties) becomes scale.
  const bool w_short = sw <= sh;
  const int shrt = w_short ? sw : sh, lng = w_short ? sh : sw;
  const int new_long = static_cast<int>(static_cast<double>(scale) * lng / shrt);
  EvalFitGeometry g;
  g.rh = w_short ? new_long : scale;
  g.rw = w_short ? scale : new_long;
  KAT_CHECK(g.rh >= size && g.rw >= size, "eval transform: a ", sh, "x", sw, " image resized to ", g.rh, "x", g.rw,
            " is smaller than the ", size, " crop");
  // F.center_crop: int(round((H - size) / 2.0)), Python rounding (half to even).
  g.top = static_cast<int>(std::nearbyint((g.rh - size) / 2.0));
  g.left = static_cast<int>(std::nearbyint((g.rw - size) / 2.0));
  return g;
}

void eval_resize_center_crop(const uint8_t* src, int sh, int sw, int c, int size, double crop_pct, uint8_t* dst) {
  const EvalFitGeometry g = eval_fit_geometry(sh, sw, size, crop_pct);
  const int rh = g.rh, rw = g.rw, top = g.top, left = g.left;
  thread_local std::vector<uint8_t> resized;
  resized.resize(static_cast<size_t>(rh) * rw * c);
  resize_bicubic_pil(src, sh, sw, c, resized.data(), rh, rw);
  for (int y = 0; y < size; ++y)
    std::copy_n(&resized[(static_cast<size_t>(y + top) * rw + left) * c], static_cast<size_t>(size) * c,
                dst + static_cast<size_t>(y) * size * c);
}

void resize_shorter_center_crop(const uint8_t* src, int sh, int sw, int c, int size, uint8_t* dst) {
  const SourceBox b = shorter_side_crop_box(sh, sw, size);
  resample_bilinear(src, sh, sw, c, b.y0, b.x0, b.h, b.w, dst, size, size);
}

SourceBox shorter_side_crop_box(int sh, int sw, int size) {
  // Equivalent to: resize shorter side to `size` (longer side rounded), then center crop. Done in
  // one resampling step by mapping the crop window back into source coordinates.
  int rh, rw;  // resized size
  if (sh <= sw) {
    rh = size;
    rw = std::max(size, static_cast<int>(std::lround(static_cast<double>(sw) * size / sh)));
  } else {
    rw = size;
    rh = std::max(size, static_cast<int>(std::lround(static_cast<double>(sh) * size / sw)));
  }
  const int top = (rh - size) / 2, left = (rw - size) / 2;
  const double sy = static_cast<double>(sh) / rh, sx = static_cast<double>(sw) / rw;
  return {top * sy, left * sx, size * sy, size * sx};
}

SourceBox center_crop_box(int h, int w, int oh, int ow, double crop_pct) {
  const double target = std::max(oh, ow) / crop_pct;  // resized shorter side
  const double s = target / std::min(h, w);           // resize factor
  const double rh = h * s, rw = w * s;
  const double top = (rh - oh) / 2.0, left = (rw - ow) / 2.0;
  return {top / s, left / s, oh / s, ow / s};
}

}  // namespace kat::data
