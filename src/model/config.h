// Model configuration (data, not code): read from JSON (configs/<name>.json or a path), with
// command-line overrides "key=value". See docs/FORMATS.md.
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
  // ImageNet mean/std for the 224 models, SPEC.md §4); empty: 0.5 / 0.5. Used by training and
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
  // name_or_path: a JSON file path, or a built-in name looked up in the config directory
  // ($KAT_CONFIG_DIR, else <source tree>/configs).
  static ModelConfig load(const std::string& name_or_path);
  // "key=value" overrides (same keys as the JSON). Unknown key -> error listing the keys.
  void apply_override(const std::string& kv);
};

std::string config_dir();
std::vector<std::string> builtin_config_names();

}  // namespace kat
