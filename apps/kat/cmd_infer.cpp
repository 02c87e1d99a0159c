// kat infer: batch inference on tensors (the interop path with numpy / PyTorch users).
#include <cstdio>
#include <memory>

#include "commands.h"
#include "device.h"
#include "kat/core/error.h"
#include "kat/io/safetensors.h"
#include "kat/model/kat_model.h"

namespace kat::cli {

void register_infer(CLI::App& app) {
  auto* sub = app.add_subcommand(
      "infer",
      "Run a model on a batch of images stored as a safetensors tensor.\n"
      "  --input holds 'input': float32 (N, C, H, W), already normalized.\n"
      "  --output gets 'logits' (N, classes) and 'features' (N, tokens, D) (after the final norm).");
  struct Opts {
    std::string model = "kat_tiny_patch16_224", weights, input, output, device = "cpu", precision = "auto";
    std::vector<std::string> overrides;
    int batch = 64;
  };
  auto o = std::make_shared<Opts>();
  sub->add_option("--model,-m", o->model, "Model name (configs/<name>.json) or path to a config JSON")
      ->capture_default_str();
  sub->add_option("--weights,-w", o->weights, "Weights (.safetensors, timm names; F32/F16/BF16)")->required();
  sub->add_option("--input,-i", o->input, "Input .safetensors with tensor 'input' (N,C,H,W)")->required();
  sub->add_option("--output,-o", o->output, "Output .safetensors (written atomically)")->required();
  sub->add_option("--set", o->overrides, "Config override key=value (repeatable), e.g. --set num_classes=10");
  sub->add_option("--batch", o->batch, "Images per forward pass")->capture_default_str();
  sub->add_option("--device", o->device, device_help())->capture_default_str();
  add_precision_option(sub, o->precision);
  registry().push_back({sub,
                        [o] {
    check_precision(o->precision, o->device);
    ModelConfig cfg = ModelConfig::load(o->model);
    for (const auto& kv : o->overrides) cfg.apply_override(kv);
    KatModel model(cfg);
    model.load_weights(io::SafetensorsFile::load(o->weights));
    const auto in = io::SafetensorsFile::load(o->input);
    KAT_CHECK(
        in.has("input"), o->input, ": no tensor named 'input' (found: ",
        [&] {
      std::string s;
      for (const auto& n : in.names()) s += n + " ";
      return s;
        }(),
        ")");
    const auto& info = in.info("input");
    check_input_shape(cfg, info.shape, o->input + ": tensor 'input'");
    const std::vector<float> x = in.to_f32("input");
    const int64_t N = info.shape[0], per_img = x.size() / N;
    const int64_t K = cfg.num_classes, T = cfg.tokens(), D = cfg.embed_dim;
    std::vector<float> logits(N * K), feats(N * T * D);
    const int max_batch = int(std::min<int64_t>(N, o->batch));
    const auto gpu = inference_runner(o->device, model, max_batch, o->precision);
    if (!gpu) {
      prepare_cpu_inference(model, o->precision);
      model.plan(max_batch);
    }
    for (int64_t b0 = 0; b0 < N; b0 += o->batch) {
      const int nb = int(std::min<int64_t>(o->batch, N - b0));
      if (gpu) {
        gpu->forward(x.data() + b0 * per_img, nb, logits.data() + b0 * K, feats.data() + b0 * T * D);
        continue;
      }
      const float* z = model.forward(x.data() + b0 * per_img, nb);
      std::copy(z, z + nb * K, logits.begin() + b0 * K);
      std::copy(model.features(), model.features() + nb * T * D, feats.begin() + b0 * T * D);
    }
    io::SafetensorsWriter w;
    w.add_f32("logits", {N, K}, logits.data());
    w.add_f32("features", {N, T, D}, feats.data());
    w.set_metadata("model", cfg.name);
    w.set_metadata("device", o->device);
    w.set_metadata("precision", o->precision);
    w.write_atomic(o->output);
    std::printf("wrote %s: logits (%lld, %lld), features (%lld, %lld, %lld)\n", o->output.c_str(), (long long)N,
                (long long)K, (long long)N, (long long)T, (long long)D);
    return 0;
                        }});
}

}  // namespace kat::cli
