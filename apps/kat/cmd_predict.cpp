// kat predict: top-5 classes (with names) for image files.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <memory>
#include <numeric>
#include <tuple>

#include "commands.h"
#include "device.h"
#include "kat/core/error.h"
#include "kat/data/data.h"
#include "kat/train/inference.h"

namespace kat::cli {

void register_predict(CLI::App& app) {
  auto* sub = app.add_subcommand("predict", "Classify image files (PNG/JPEG) and print the top-5 classes");
  struct Opts {
    CheckpointOptions ck;
    std::vector<std::string> images;
    int top = 5;
    double crop_pct = 0;  // 0: the checkpoint's (0.875 for plain weights)
  };
  auto o = std::make_shared<Opts>();
  add_checkpoint_options(sub, o->ck);
  sub->add_option("--top", o->top, "How many classes to print")->capture_default_str();
  sub->add_option("--eval-crop-pct", o->crop_pct,
                  "timm's evaluation fit: bicubic resize of the shorter side to img_size / crop_pct, center crop "
                  "(default: the checkpoint's, 0.875 for plain weights); an image already at the model's size "
                  "is used as is")
      ->check(CLI::Range(0.0, 1.0));
  sub->add_option("images", o->images, "Image files")->required();
  registry().push_back({sub,
                        [o] {
    LoadedModel lm = load_checkpoint(o->ck);
    const ModelConfig& cfg = lm.model->config();
    const auto engine = inference_engine(o->ck.device, *lm.model, 1, o->ck.precision);
    const double crop_pct = eval_crop_pct(o->crop_pct, lm.train);
    data::AugmentConfig aug;
    aug.train = false;
    aug.out_size = cfg.img_size;
    std::tie(aug.mean, aug.std) = input_normalisation(lm.train, lm.model->config());
    for (const auto& path : o->images) {
      int h, w, c;
      std::vector<uint8_t> px;
      std::string err;
      KAT_CHECK(data::decode_image_file(path, h, w, c, px, &err),
                err.empty() ? path + ": cannot decode image" : err);
      // As `kat eval` fits a test image: as is at the model's size, else timm's evaluation fit.
      if (h != cfg.img_size || w != cfg.img_size) {
        std::vector<uint8_t> fitted(size_t(cfg.img_size) * cfg.img_size * c);
        data::eval_resize_center_crop(px.data(), h, w, c, cfg.img_size, crop_pct, fitted.data());
        px.swap(fitted);
        h = w = cfg.img_size;
      }
      const std::vector<float> x = data::eval_transform(px.data(), h, w, c, cfg.in_chans, aug);
      const float* z = engine->logits(x.data(), 1);
      const int K = cfg.num_classes;
      const float mx = *std::max_element(z, z + K);
      std::vector<double> p(K);
      double s = 0;
      for (int k = 0; k < K; ++k) s += p[k] = std::exp(double(z[k]) - mx);
      std::vector<int> idx(K);
      std::iota(idx.begin(), idx.end(), 0);
      std::stable_sort(idx.begin(), idx.end(), [&](int a, int b) { return p[a] > p[b]; });
      std::printf("%s\n", path.c_str());
      for (int i = 0; i < std::min(o->top, K); ++i) {
        const int k = idx[i];
        std::printf("  %6.2f%%  %2d %s\n", 100.0 * p[k] / s, k,
                    k < int(lm.class_names.size()) ? lm.class_names[k].c_str() : "");
      }
    }
    return 0;
                        }});
}

}  // namespace kat::cli
