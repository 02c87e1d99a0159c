// Model configuration (data, not code): read from JSON (a built-in model, compiled in from
// configs/<name>.json, or a path), with command-line overrides "key=value". See docs/FORMATS.md.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

namespace kat {

struct ModelConfig {
  std::string name = "custom";
  int img_size = 224, patch_size = 16, in_chans = 3, num_classes = 1000;
  int embed_dim = 192, depth = 12, num_heads = 3, mlp_hidden = 768;
  std::string ffn = "kat";  // "kat" | "mlp"
  int groups = 8;
  bool shared_numerator = true;
  std::string act1_init = "identity", act2_init = "swish";
  double drop_path_rate = 0.0;
  std::string init = "paper";  // "paper" | "timm"
  // Input normalisation the weights expect, one value per input channel (timm's pretrained cfg:
  // ImageNet mean/std for the 224 models, docs/MODEL.md §4); empty: 0.5 / 0.5. Used by training and
  // evaluation unless --mean / --std are given (kat::input_normalisation).
  std::vector<float> mean, std;

  bool is_kat() const { return ffn == "kat"; }
  int grid() const { return img_size / patch_size; }
  int num_patches() const { return grid() * grid(); }
  int tokens() const { return num_patches() + 1; }
  int head_dim() const { return embed_dim / num_heads; }
  // Throws kat::Error naming the field at fault.
  void validate() const;
  std::string to_json(int indent = 2) const;
  static ModelConfig from_json(const std::string& text, const std::string& source);
  // name_or_path, first match wins: a JSON file path; <name>.json in $KAT_CONFIG_DIR (when set);
  // a built-in model (configs/*.json, compiled into the library: no file needed at run time).
  static ModelConfig load(const std::string& name_or_path);
  // "key=value" overrides (same keys as the JSON). Unknown key -> error listing the keys.
  void apply_override(const std::string& kv);
};

// $KAT_CONFIG_DIR, or "" when unset (the built-in models need no directory).
std::string config_dir();
// The built-in models plus the *.json in $KAT_CONFIG_DIR, sorted, without duplicates.
std::vector<std::string> builtin_config_names();

}  // namespace kat
