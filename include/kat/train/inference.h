// Loading a model for evaluation / prediction from either a training checkpoint (config, class
// names and normalisation come from its metadata) or a plain timm-named weights file (config from
// --model).
#pragma once
#include <memory>
#include <string>
#include <vector>

#include "kat/model/kat_model.h"
#include "kat/train/train_config.h"

namespace kat {

struct LoadedModel {
  std::unique_ptr<KatModel> model;
  TrainConfig train;  // defaults when the file is not a training checkpoint
  bool from_checkpoint = false;
  std::vector<std::string> class_names;  // may be empty
};

// model_name: used when the file carries no model config (plain weights); overrides apply on top.
// use_ema: load the EMA weights of a training checkpoint (error if it has none).
LoadedModel load_model_for_inference(const std::string& weights, const std::string& model_name,
                                     const std::vector<std::string>& overrides, bool use_ema);

}  // namespace kat
