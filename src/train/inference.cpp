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

}  // namespace kat
