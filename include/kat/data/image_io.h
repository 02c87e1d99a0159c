// Image decoding/encoding (PNG via libpng, JPEG via libjpeg-turbo) and uint8 resampling helpers.
// Images are uint8, HWC, channels 1 (gray) or 3 (RGB); alpha channels are dropped (like PIL's
// convert('RGB')).
#pragma once
#include <cstdint>
#include <string>
#include <vector>

namespace kat::data {

// Decode a PNG or JPEG file (format detected from the magic bytes, not the extension).
// On success returns true and fills h, w, c (1 or 3) and out (h*w*c bytes, HWC).
// On failure returns false; `err` (optional) receives a message naming the file and the reason.
// min_side > 0: the caller will shrink the image until its shorter side is min_side, so a JPEG may
// be decoded at 1/8, 1/4 or 1/2 scale (libjpeg's DCT-domain scaling, the smallest keeping the
// shorter side >= min_side): large photos decode several times faster. PNGs decode at full size.
bool decode_image_file(const std::string& path, int& h, int& w, int& c, std::vector<uint8_t>& out,
                       std::string* err = nullptr, int min_side = 0);
// Same on an in-memory encoded buffer (`name` is only used in the error message).
bool decode_image_memory(const uint8_t* data, size_t size, const std::string& name, int& h, int& w, int& c,
                         std::vector<uint8_t>& out, std::string* err = nullptr, int min_side = 0);

// px (np pixels, c_in channels) -> dst (c_out channels; 1 or 3 each): copy, gray -> RGB, or RGB ->
// gray (ITU-R 601-2 luma, as PIL's convert('L')).
void convert_channels(const uint8_t* px, size_t np, int c_in, int c_out, uint8_t* dst);

// Writers (for tests, `kat` tools and visualisation). Throw kat::Error on failure. c = 1 or 3.
void write_png(const std::string& path, int h, int w, int c, const uint8_t* pixels);
void write_jpeg(const std::string& path, int h, int w, int c, const uint8_t* pixels, int quality = 95);

// Antialiased bilinear (triangle filter, support scaled when downsampling - PIL's BILINEAR with
// reducing) resampling of the source box [x0, x0+bw) x [y0, y0+bh) (float coordinates in source
// pixels) to an oh x ow image. src is sh x sw x c, dst is oh x ow x c.
void resample_bilinear(const uint8_t* src, int sh, int sw, int c, double y0, double x0, double bh, double bw,
                       uint8_t* dst, int oh, int ow);
// Resize so the shorter side is `size` then center-crop to size x size.
void resize_shorter_center_crop(const uint8_t* src, int sh, int sw, int c, int size, uint8_t* dst);

// PIL's Image.resize((ow, oh), Image.BICUBIC) of a whole 8-bit image, bit for bit: cubic filter
// a = -0.5 with its support widened by the scale when shrinking (antialiasing), coefficients in
// 22-bit fixed point, horizontal pass into an 8-bit intermediate image, then the vertical pass.
// (What torchvision's Resize does to a PIL image, hence timm's eval transform.) Checked against
// PIL on golden images (tests/golden/pil_eval.safetensors, reference/pil_eval_golden.py).
void resize_bicubic_pil(const uint8_t* src, int sh, int sw, int c, uint8_t* dst, int oh, int ow);
// timm's evaluation transform (docs/MODEL.md §4): torchvision Resize(floor(size / crop_pct),
// bicubic) of the shorter side (the longer one int(short' * long / short)) then CenterCrop(size)
// (offsets rounded half to even, as Python's round). dst: size x size x c. crop_pct in (0, 1].
void eval_resize_center_crop(const uint8_t* src, int sh, int sw, int c, int size, double crop_pct, uint8_t* dst);

}  // namespace kat::data
