// kat predict: top-5 classes (with names) for image files.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <memory>
#include <numeric>

#include "commands.h"
#include "device.h"
#include "core/error.h"
#include "data/data.h"
#include "train/inference.h"

namespace kat::cli {

void register_predict(CLI::App& app) {
  auto* sub = app.add_subcommand("predict", "Classify image files (PNG/JPEG) and print the top-5 classes");
  struct Opts {
    std::string weights, model, device = "cpu";
    std::vector<std::string> overrides, images;
    bool ema = false;
    int top = 5;
  };
  auto o = std::make_shared<Opts>();
  sub->add_option("--weights,-w", o->weights, "Training checkpoint or plain weights (.safetensors)")->required();
  sub->add_option("--model,-m", o->model, "Model name, needed for plain weights files");
  sub->add_option("--set", o->overrides, "Model config override key=value");
  sub->add_flag("--ema", o->ema, "Use the checkpoint's EMA weights");
  sub->add_option("--top", o->top, "How many classes to print")->capture_default_str();
  sub->add_option("--device", o->device, device_help())->capture_default_str();
  sub->add_option("images", o->images, "Image files")->required();
  registry().push_back({sub, [o] {
    LoadedModel lm = load_model_for_inference(o->weights, o->model, o->overrides, o->ema);
    const ModelConfig& cfg = lm.model->config();
    const auto gpu = inference_runner(o->device, *lm.model, 1);
    if (!gpu) lm.model->plan(1);
    data::AugmentConfig aug;
    aug.train = false;
    aug.out_size = cfg.img_size;
    aug.mean = lm.train.mean;
    aug.std = lm.train.std;
    for (const auto& path : o->images) {
      int h, w, c;
      std::vector<uint8_t> px;
      std::string err;
      KAT_CHECK(data::decode_image_file(path, h, w, c, px, &err), err.empty() ? path + ": cannot decode image" : err);
      const std::vector<float> x = data::eval_transform(px.data(), h, w, c, cfg.in_chans, aug);
      const float* z = gpu ? gpu->logits(x.data(), 1) : lm.model->forward(x.data(), 1);
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
