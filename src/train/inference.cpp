#include "kat/train/inference.h"

#include <nlohmann/json.hpp>

#include "kat/core/error.h"
#include "kat/io/safetensors.h"

namespace kat {

LoadedModel load_model_for_inference(const std::string& weights, const std::string& model_name,
                                     const std::vector<std::string>& overrides, bool use_ema) {
  const auto f = io::SafetensorsFile::load(weights);
  LoadedModel r;
  ModelConfig cfg;
  const auto& md = f.metadata();
  if (md.count("model_config")) {
    cfg = ModelConfig::from_json(md.at("model_config"), weights + " (model_config metadata)");
    r.from_checkpoint = true;
    if (md.count("train_config")) r.train = TrainConfig::from_json(md.at("train_config"), weights);
    if (md.count("class_names")) {
      try {
        r.class_names = nlohmann::json::parse(md.at("class_names")).get<std::vector<std::string>>();
      } catch (...) {
        throw Error(weights + ": metadata 'class_names' is not a JSON list of strings");
      }
    }
  } else {
    KAT_CHECK(!model_name.empty(), weights, ": plain weights file without a model config: pass --model");
    cfg = ModelConfig::load(model_name);
  }
  for (const auto& kv : overrides) cfg.apply_override(kv);
  r.model = std::make_unique<KatModel>(cfg);
  if (use_ema) {
    KAT_CHECK(f.has("ema." + r.model->table().specs().front().name), weights,
              ": --ema requested but the file holds no EMA weights (train with --ema DECAY)");
    r.model->load_weights(f, "ema.");
  } else {
    r.model->load_weights(f);
  }
  return r;
}

void check_inference_precision(const std::string& precision, bool on_gpu) {
  KAT_CHECK(precision == "auto" || precision == "fp32" || precision == "bf16" || precision == "fp8",
            "--precision must be auto, fp32, bf16 or fp8, got '", precision, "'");
  KAT_CHECK(precision != "bf16" || on_gpu,
            "--precision bf16 is GPU only (--device cuda); the CPU computes in fp32 (--precision auto or fp32)");
}

void prepare_cpu_inference(KatModel& m, const std::string& precision) {
  check_inference_precision(precision, false);
  if (precision == "fp8") m.enable_fp8();  // the CPU emulation
}

std::unique_ptr<GpuRunner> make_inference_runner(const KatModel& m, int device, int max_batch,
                                                 const std::string& precision) {
  check_inference_precision(precision, true);
  auto gpu = std::make_unique<GpuRunner>(m.config(), device, precision == "fp32" ? DType::F32 : DType::BF16,
                                         AdamWConfig{}, max_batch, /*training=*/false);
  if (precision == "fp8") gpu->enable_fp8();  // before the upload: the FP8 buffers are planned first
  gpu->upload_params(m.params.data());
  return gpu;
}

}  // namespace kat
