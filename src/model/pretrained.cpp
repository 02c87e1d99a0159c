#include "kat/model/pretrained.h"

#include <algorithm>
#include <cmath>

#include "kat/core/error.h"
#include "kat/io/safetensors.h"
#include "kat/model/kat_model.h"

namespace kat {

namespace {

// Antialiased cubic filter of torch's _upsample_bicubic2d_aa and PIL (a = -0.5).
double aa_cubic(double x) {
  constexpr double a = -0.5;
  x = std::fabs(x);
  if (x < 1.0) return ((a + 2.0) * x - (a + 3.0)) * x * x + 1.0;
  if (x < 2.0) return (((x - 5.0) * x + 8.0) * x - 4.0) * a;
  return 0.0;
}

// Taps of one output index: first input index and normalised weights.
struct Taps {
  int64_t first = 0;
  std::vector<float> w;
};

std::vector<Taps> make_taps(int in, int out) {
  const double scale = double(in) / double(out);
  const double support = scale >= 1.0 ? 2.0 * scale : 2.0;  // interp size 4, halved, widened
  const double invscale = scale >= 1.0 ? 1.0 / scale : 1.0;
  std::vector<Taps> taps(static_cast<size_t>(out));
  for (int i = 0; i < out; ++i) {
    const double center = scale * (i + 0.5);
    const int64_t xmin = std::max<int64_t>(int64_t(center - support + 0.5), 0);
    const int64_t xmax = std::min<int64_t>(int64_t(center + support + 0.5), in);
    Taps& t = taps[size_t(i)];
    t.first = xmin;
    double total = 0.0;
    std::vector<double> w;
    for (int64_t j = xmin; j < xmax; ++j) {
      w.push_back(aa_cubic((double(j) - center + 0.5) * invscale));
      total += w.back();
    }
    for (double v : w) t.w.push_back(float(total != 0.0 ? v / total : 0.0));
  }
  return taps;
}

int square_side(int64_t n) {
  const int s = int(std::lround(std::sqrt(double(n))));
  return int64_t(s) * s == n ? s : -1;
}

}  // namespace

void resample_grid_bicubic_aa(const float* in, int in_h, int in_w, int C, int out_h, int out_w, float* out) {
  KAT_CHECK(in_h > 0 && in_w > 0 && out_h > 0 && out_w > 0 && C > 0, "resample_grid_bicubic_aa: bad sizes");
  const auto tw = make_taps(in_w, out_w), th = make_taps(in_h, out_h);
  std::vector<float> mid(size_t(in_h) * out_w * C);  // width first
  for (int y = 0; y < in_h; ++y)
    for (int x = 0; x < out_w; ++x) {
      const Taps& t = tw[size_t(x)];
      for (int c = 0; c < C; ++c) {
        float acc = 0.f;
        for (size_t k = 0; k < t.w.size(); ++k)
          acc += t.w[k] * in[(size_t(y) * in_w + size_t(t.first + int64_t(k))) * C + c];
        mid[(size_t(y) * out_w + x) * C + c] = acc;
      }
    }
  for (int y = 0; y < out_h; ++y) {
    const Taps& t = th[size_t(y)];
    for (int x = 0; x < out_w; ++x)
      for (int c = 0; c < C; ++c) {
        float acc = 0.f;
        for (size_t k = 0; k < t.w.size(); ++k)
          acc += t.w[k] * mid[(size_t(t.first + int64_t(k)) * out_w + x) * C + c];
        out[(size_t(y) * out_w + x) * C + c] = acc;
      }
  }
}

std::vector<std::string> load_pretrained(KatModel& m, const io::SafetensorsFile& f) {
  const ModelConfig& cfg = m.config();
  enum class How { Copy, KeepInit, ResamplePos, SumChannels };
  struct Plan {
    const ParamSpec* spec;
    How how;
    std::vector<int64_t> file_shape;
  };
  std::vector<Plan> plans;
  std::vector<std::string> notes;
  for (const auto& s : m.table().specs()) {
    if (!f.has(s.name)) continue;  // reported by check_weight_names below
    const auto& info = f.info(s.name);
    if (std::string d = weight_dtype_problem(f, s.name); !d.empty()) throw Error(f.source() + ": " + d);
    const auto& fs = info.shape;
    How how = How::Copy;
    if (fs != s.shape) {
      const auto mismatch = [&](const std::string& why) {
        return Error(detail::concat(f.source(), ": tensor '", s.name, "' has shape ", shape_str(fs), ", model '",
                                    cfg.name, "' expects ", shape_str(s.shape), why));
      };
      if (s.name == "head.weight" || s.name == "head.bias") {
        // Another class count (same width): the new head keeps its initialisation.
        if (s.name == "head.weight" && (fs.size() != 2 || fs[1] != s.shape[1]))
          throw mismatch(" (a different class count is re-initialised, a different width is not)");
        how = How::KeepInit;
        notes.push_back(
            detail::concat(s.name, " ", shape_str(fs), " -> ", shape_str(s.shape), ": re-initialised"));
      } else if (s.name == "pos_embed") {
        const int prefix = 1;  // the class token
        const bool ok = fs.size() == 3 && fs[0] == 1 && fs[2] == s.shape[2] && fs[1] > prefix &&
                        square_side(fs[1] - prefix) > 0 && square_side(s.shape[1] - prefix) > 0;
        if (!ok) throw mismatch(" (only a square patch grid of the same width can be resampled)");
        how = How::ResamplePos;
        const int a = square_side(fs[1] - prefix), b = square_side(s.shape[1] - prefix);
        notes.push_back(detail::concat("pos_embed: ", a, "x", a, " patch grid resampled to ", b, "x", b,
                                       " (bicubic, as timm)"));
      } else if (s.name == "patch_embed.proj.weight" && fs.size() == 4 && s.shape.size() == 4 && fs[1] == 3 &&
                 s.shape[1] == 1 && fs[0] == s.shape[0] && fs[2] == s.shape[2] && fs[3] == s.shape[3]) {
        how = How::SumChannels;
        notes.push_back("patch_embed.proj.weight: 3 input channels summed for a 1-channel model (as timm)");
      } else if (s.name == "patch_embed.proj.weight" && fs.size() == 4 && s.shape.size() == 4 &&
                 fs[1] != s.shape[1]) {
        throw mismatch(detail::concat(" (", fs[1], " -> ", s.shape[1],
                                      " input channels: only 3 -> 1 is adapted; set ",
                                      "in_chans to match the data or the checkpoint)"));
      } else {
        throw mismatch(s.name == "patch_embed.proj.weight" ? " (different patch size or width?)"
                                                           : " (wrong --model?)");
      }
    }
    plans.push_back({&s, how, fs});
  }
  check_weight_names(m, f);

  for (const Plan& p : plans) {
    const ParamSpec& s = *p.spec;
    float* dst = m.params.data() + s.offset;
    int64_t n = 1;
    for (int64_t d : p.file_shape) n *= d;
    switch (p.how) {
      case How::Copy: f.read_f32(s.name, dst, s.numel); break;
      case How::KeepInit: break;
      case How::ResamplePos: {
        std::vector<float> src(size_t(n), 0.f);
        f.read_f32(s.name, src.data(), n);
        const int D = int(s.shape[2]), a = square_side(p.file_shape[1] - 1), b = square_side(s.shape[1] - 1);
        std::copy(src.begin(), src.begin() + D, dst);  // class token
        resample_grid_bicubic_aa(src.data() + D, a, a, D, b, b, dst + D);
        break;
      }
      case How::SumChannels: {
        std::vector<float> src(size_t(n), 0.f);
        f.read_f32(s.name, src.data(), n);
        const int64_t O = p.file_shape[0], HW = p.file_shape[2] * p.file_shape[3];
        for (int64_t o = 0; o < O; ++o)
          for (int64_t k = 0; k < HW; ++k)
            dst[o * HW + k] = src[(o * 3 + 0) * HW + k] + src[(o * 3 + 1) * HW + k] + src[(o * 3 + 2) * HW + k];
        break;
      }
    }
  }
  return notes;
}

}  // namespace kat
