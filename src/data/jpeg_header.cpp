#include "data/jpeg_header.h"

#include <cstring>

#include "kat/core/error.h"

namespace kat::data {

namespace {

int be16(const uint8_t* p) { return (int(p[0]) << 8) | int(p[1]); }
uint32_t be32(const uint8_t* p) {
  return (uint32_t(p[0]) << 24) | (uint32_t(p[1]) << 16) | (uint32_t(p[2]) << 8) | uint32_t(p[3]);
}

// SOFn markers: C0-C3, C5-C7, C9-CB, CD-CF (C4 is DHT, C8 JPG, CC DAC).
bool is_sof(int m) { return m >= 0xC0 && m <= 0xCF && m != 0xC4 && m != 0xC8 && m != 0xCC; }

// libjpeg's default colour space (jdapimin.c, default_decompress_parms).
JpegColor infer_color(const JpegHeader& h) {
  if (h.components == 1) return JpegColor::Gray;
  if (h.components == 3) {
    if (h.jfif) return JpegColor::YCbCr;
    if (h.adobe) return h.adobe_transform == 0 ? JpegColor::RGB : JpegColor::YCbCr;
    const int* id = h.component_id;
    if (id[0] == 'R' && id[1] == 'G' && id[2] == 'B') return JpegColor::RGB;
    return JpegColor::YCbCr;
  }
  if (h.adobe) return h.adobe_transform == 0 ? JpegColor::CMYK : JpegColor::YCCK;
  return JpegColor::CMYK;
}

}  // namespace

const char* jpeg_color_name(JpegColor c) {
  switch (c) {
    case JpegColor::Gray: return "gray";
    case JpegColor::YCbCr: return "YCbCr";
    case JpegColor::RGB: return "RGB";
    case JpegColor::CMYK: return "CMYK";
    case JpegColor::YCCK: return "YCCK";
  }
  return "?";
}

std::string JpegHeader::subsampling() const {
  if (components == 1) return "gray";
  if (components != 3 || h_samp[1] != 1 || v_samp[1] != 1 || h_samp[2] != 1 || v_samp[2] != 1) return "other";
  const int h = h_samp[0], v = v_samp[0];
  if (h == 1 && v == 1) return "4:4:4";
  if (h == 2 && v == 1) return "4:2:2";
  if (h == 2 && v == 2) return "4:2:0";
  if (h == 1 && v == 2) return "4:4:0";
  if (h == 4 && v == 1) return "4:1:1";
  if (h == 4 && v == 2) return "4:1:0";
  return "other";
}

bool JpegHeader::gpu_candidate() const {
  return precision == 8 && !arithmetic && !lossless && height > 0 &&
         ((components == 1 && color == JpegColor::Gray) || (components == 3 && color == JpegColor::YCbCr));
}

JpegHeader parse_jpeg_header(const uint8_t* d, size_t n, const std::string& name) {
  const std::string who = "file " + name;
  KAT_CHECK(n >= 2 && d[0] == 0xFF && d[1] == 0xD8, who, ": not a JPEG (no start-of-image marker FF D8; ", n,
            " bytes)");
  JpegHeader h;
  bool have_sof = false;
  size_t pos = 2;
  for (;;) {
    // A marker: FF (any number of fill bytes FF) then the code.
    KAT_CHECK(pos < n, who, ": truncated JPEG (", n, " bytes, cut before its first scan)");
    KAT_CHECK(d[pos] == 0xFF, who, ": corrupt JPEG (expected a marker at byte ", pos, ", found 0x", std::hex,
              int(d[pos]), ")");
    while (pos < n && d[pos] == 0xFF) ++pos;
    KAT_CHECK(pos < n, who, ": truncated JPEG (", n, " bytes, cut before its first scan)");
    const int m = d[pos++];
    KAT_CHECK(m != 0x00, who, ": corrupt JPEG (stuffed byte FF 00 where a marker belongs, byte ", pos - 2, ")");
    if ((m >= 0xD0 && m <= 0xD7) || m == 0x01) continue;  // RSTn / TEM: no length
    KAT_CHECK(m != 0xD9, who, ": corrupt JPEG (end-of-image marker before any scan)");
    KAT_CHECK(m != 0xD8, who, ": corrupt JPEG (a second start-of-image marker at byte ", pos - 2, ")");
    if (m == 0xDA) {  // SOS: the first scan; everything needed is known
      KAT_CHECK(have_sof, who, ": corrupt JPEG (a scan before any frame header SOFn)");
      break;
    }
    KAT_CHECK(pos + 2 <= n, who, ": truncated JPEG (", n, " bytes, cut inside the header of marker 0x", std::hex,
              m, ")");
    const int len = be16(d + pos);
    KAT_CHECK(len >= 2, who, ": corrupt JPEG (marker 0x", std::hex, m, " has segment length ", std::dec, len, ")");
    KAT_CHECK(pos + size_t(len) <= n, who, ": truncated JPEG (", n, " bytes, cut inside marker 0x", std::hex, m,
              std::dec, " segment of ", len, " bytes at byte ", pos - 2, ")");
    const uint8_t* seg = d + pos + 2;  // the segment's payload, len - 2 bytes
    const int plen = len - 2;
    if (is_sof(m)) {
      KAT_CHECK(!have_sof, who, ": corrupt JPEG (two frame headers)");
      KAT_CHECK(plen >= 6, who, ": corrupt JPEG (frame header of ", len, " bytes)");
      have_sof = true;
      h.sof = m - 0xC0;
      h.progressive = m == 0xC2 || m == 0xC6 || m == 0xCA || m == 0xCE;
      h.lossless = m == 0xC3 || m == 0xC7 || m == 0xCB || m == 0xCF;
      h.arithmetic = m >= 0xC9;
      h.precision = seg[0];
      h.height = be16(seg + 1);
      h.width = be16(seg + 3);
      h.components = seg[5];
      KAT_CHECK(h.components >= 1 && h.components <= 4 && h.components != 2, who, ": unsupported JPEG with ",
                h.components, " components (1, 3 or 4 are read)");
      KAT_CHECK(plen == 6 + 3 * h.components, who, ": corrupt JPEG (frame header of ", len, " bytes for ",
                h.components, " components)");
      KAT_CHECK(h.width > 0, who, ": corrupt JPEG (width 0 in the frame header)");
      for (int c = 0; c < h.components; ++c) {
        h.component_id[c] = seg[6 + 3 * c];
        h.h_samp[c] = seg[7 + 3 * c] >> 4;
        h.v_samp[c] = seg[7 + 3 * c] & 15;
        KAT_CHECK(h.h_samp[c] >= 1 && h.h_samp[c] <= 4 && h.v_samp[c] >= 1 && h.v_samp[c] <= 4, who,
                  ": corrupt JPEG (sampling factors ", h.h_samp[c], "x", h.v_samp[c], " of component ", c, ")");
      }
    } else if (m == 0xE0 && plen >= 5 && std::memcmp(seg, "JFIF\0", 5) == 0) {
      h.jfif = true;
    } else if (m == 0xEE && plen >= 12 && std::memcmp(seg, "Adobe", 5) == 0) {
      h.adobe = true;
      h.adobe_transform = seg[11];
    } else if (m == 0xDD) {  // DRI
      KAT_CHECK(plen == 2, who, ": corrupt JPEG (restart interval segment of ", len, " bytes)");
      h.restart_interval = be16(seg);
    }
    pos += size_t(len);
  }
  h.color = infer_color(h);
  return h;
}

bool jpeg_tail_has_eoi(const uint8_t* d, size_t n) {
  const size_t from = n > 1024 ? n - 1024 : 0;
  for (size_t i = n; i-- > from + 1;)
    if (d[i] == 0xD9 && d[i - 1] == 0xFF) return true;
  return false;
}

ImageHeader parse_image_header(const uint8_t* d, size_t n, const std::string& name) {
  static const uint8_t png_sig[8] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n'};
  ImageHeader ih;
  if (n >= 8 && std::memcmp(d, png_sig, 8) == 0) {
    // Signature, then the IHDR chunk: length (4), "IHDR", width (4), height (4), depth, colour type.
    KAT_CHECK(n >= 26, "file ", name, ": truncated PNG (", n, " bytes, cut inside its IHDR header)");
    KAT_CHECK(std::memcmp(d + 12, "IHDR", 4) == 0, "file ", name, ": corrupt PNG (first chunk is not IHDR)");
    const uint32_t w = be32(d + 16), hh = be32(d + 20);
    KAT_CHECK(w > 0 && hh > 0 && w <= (1u << 15) && hh <= (1u << 15), "file ", name, ": unsupported PNG size ", w,
              "x", hh);
    ih.format = ImageFormat::Png;
    ih.width = int(w);
    ih.height = int(hh);
    ih.channels = (d[25] & 2) ? 3 : 1;  // colour or palette: RGB; gray (+ alpha): gray
    return ih;
  }
  KAT_CHECK(n >= 3 && d[0] == 0xFF && d[1] == 0xD8 && d[2] == 0xFF, "file ", name, ": not a PNG or JPEG image (",
            n, " bytes)");
  ih.format = ImageFormat::Jpeg;
  ih.jpeg = parse_jpeg_header(d, n, name);
  ih.height = ih.jpeg.height;
  ih.width = ih.jpeg.width;
  ih.channels = ih.jpeg.components == 1 ? 1 : 3;
  return ih;
}

}  // namespace kat::data
