#include "kat/model/config.h"

#include <algorithm>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <span>
#include <sstream>
#include <string_view>
#include <utility>

#include "kat/core/error.h"

namespace kat {

using nlohmann::json;

void ModelConfig::validate() const {
  auto pos = [&](int v, const char* k) { KAT_CHECK(v > 0, "config '", name, "': ", k, " must be > 0, got ", v); };
  pos(img_size, "img_size");
  pos(patch_size, "patch_size");
  pos(in_chans, "in_chans");
  pos(num_classes, "num_classes");
  pos(embed_dim, "embed_dim");
  pos(depth, "depth");
  pos(num_heads, "num_heads");
  pos(mlp_hidden, "mlp_hidden");
  pos(groups, "groups");
  KAT_CHECK(img_size % patch_size == 0, "config '", name, "': img_size ", img_size,
            " is not a multiple of patch_size ", patch_size);
  KAT_CHECK(embed_dim % num_heads == 0, "config '", name, "': embed_dim ", embed_dim,
            " is not divisible by num_heads ", num_heads);
  KAT_CHECK(ffn == "kat" || ffn == "mlp", "config '", name, "': ffn must be \"kat\" or \"mlp\", got \"", ffn,
            "\"");
  if (is_kat()) {
    KAT_CHECK(embed_dim % groups == 0, "config '", name, "': embed_dim ", embed_dim,
              " is not divisible by groups ", groups, " (GR-KAN act1)");
    KAT_CHECK(mlp_hidden % groups == 0, "config '", name, "': mlp_hidden ", mlp_hidden,
              " is not divisible by groups ", groups, " (GR-KAN act2)");
  }
  for (const auto* m : {&act1_init, &act2_init})
    KAT_CHECK(*m == "identity" || *m == "swish" || *m == "gelu", "config '", name,
              "': activation init must be identity, swish or gelu, got \"", *m, "\"");
  KAT_CHECK(init == "paper" || init == "timm", "config '", name, "': init must be \"paper\" or \"timm\", got \"",
            init, "\"");
  KAT_CHECK(drop_path_rate >= 0 && drop_path_rate < 1, "config '", name, "': drop_path_rate must be in [0, 1)");
  KAT_CHECK(mean.size() == std.size() && (mean.empty() || int(mean.size()) == in_chans), "config '", name,
            "': mean and std need one value per input channel (", in_chans, "), got ", mean.size(), " and ",
            std.size());
  for (float s : std) KAT_CHECK(s > 0, "config '", name, "': std values must be > 0");
}

// An X-macro list: clang-format lays it out differently on every pass, so it is left as written.
// clang-format off
#define KAT_CONFIG_FIELDS(X)                                                                    \
  X(name) X(img_size) X(patch_size) X(in_chans) X(num_classes) X(embed_dim) X(depth) X(num_heads) \
  X(mlp_hidden) X(ffn) X(groups) X(shared_numerator) X(act1_init) X(act2_init) X(drop_path_rate) X(init) \
  X(mean) X(std)
// clang-format on

std::string ModelConfig::to_json(int indent) const {
  json j;
#define X(f) j[#f] = f;
  KAT_CONFIG_FIELDS(X)
#undef X
  return j.dump(indent);
}

namespace {
template <typename T>
void read_field(const json& j, const char* key, T& dst, const std::string& source) {
  if (!j.contains(key)) return;
  try {
    dst = j.at(key).get<T>();
  } catch (const json::exception& e) {
    throw Error(detail::concat(source, ": config field '", key, "' has the wrong type (", e.what(), ")"));
  }
}
}  // namespace

ModelConfig ModelConfig::from_json(const std::string& text, const std::string& source) {
  json j;
  try {
    j = json::parse(text);
  } catch (const json::exception& e) {
    throw Error(detail::concat(source, ": invalid JSON: ", e.what()));
  }
  KAT_CHECK(j.is_object(), source, ": model config must be a JSON object");
  static const std::vector<std::string> keys = {
#define X(f) #f,
      KAT_CONFIG_FIELDS(X)
#undef X
  };
  for (auto it = j.begin(); it != j.end(); ++it)
    KAT_CHECK(std::find(keys.begin(), keys.end(), it.key()) != keys.end(), source, ": unknown config field '",
              it.key(), "'");
  ModelConfig c;
#define X(f) read_field(j, #f, c.f, source);
  KAT_CONFIG_FIELDS(X)
#undef X
  c.validate();
  return c;
}

namespace detail {
// (name, JSON text) of every configs/*.json, sorted by name: generated at build time by
// cmake/embed_configs.cmake, so built-in models need no file at run time.
std::span<const std::pair<std::string_view, std::string_view>> builtin_config_table();
}  // namespace detail

namespace {
std::string_view builtin_config_text(const std::string& name) {
  for (const auto& [n, text] : detail::builtin_config_table())
    if (n == name) return text;
  return {};
}
}  // namespace

std::string config_dir() {
  const char* e = std::getenv("KAT_CONFIG_DIR");
  return e ? e : "";
}

std::vector<std::string> builtin_config_names() {
  std::vector<std::string> names;
  for (const auto& entry : detail::builtin_config_table()) names.emplace_back(entry.first);
  if (const std::string dir = config_dir(); !dir.empty()) {
    std::error_code ec;
    for (const auto& e : std::filesystem::directory_iterator(dir, ec))
      if (e.path().extension() == ".json") names.push_back(e.path().stem().string());
  }
  std::sort(names.begin(), names.end());
  names.erase(std::unique(names.begin(), names.end()), names.end());
  return names;
}

ModelConfig ModelConfig::load(const std::string& name_or_path) {
  // 1. a JSON file; 2. <$KAT_CONFIG_DIR>/<name>.json; 3. a built-in model.
  std::string path = name_or_path;
  const std::string dir = config_dir();
  if (!std::filesystem::exists(path) && !dir.empty()) path = dir + "/" + name_or_path + ".json";
  if (!std::filesystem::exists(path)) {
    const std::string_view text = builtin_config_text(name_or_path);
    if (!text.empty()) return from_json(std::string(text), "built-in config '" + name_or_path + "'");
  }
  std::ifstream f(path);
  if (!f) {
    std::string known;
    for (const auto& n : builtin_config_names()) known += " " + n;
    throw Error(detail::concat("unknown model '", name_or_path, "': no such file",
                               dir.empty() ? std::string() : ", no " + path + ",",
                               " and not a built-in model (built-in models:", known, ")"));
  }
  std::stringstream ss;
  ss << f.rdbuf();
  return from_json(ss.str(), path);
}

void ModelConfig::apply_override(const std::string& kv) {
  const auto eq = kv.find('=');
  KAT_CHECK(eq != std::string::npos && eq > 0, "model override '", kv, "' must look like key=value");
  const std::string key = kv.substr(0, eq), val = kv.substr(eq + 1);
  json j = json::parse(to_json());
  KAT_CHECK(
      j.contains(key), "model override: unknown field '", key, "' (fields: ",
      [&] {
    std::string s;
    for (auto it = j.begin(); it != j.end(); ++it) s += it.key() + " ";
    return s;
      }(),
      ")");
  json v;
  try {
    v = json::parse(val);
  } catch (...) {
    v = val;  // bare string
  }
  if (j[key].is_string() && !v.is_string()) v = val;
  j[key] = v;
  // A new channel count makes the weights' per-channel normalisation meaningless: back to 0.5.
  if (key == "in_chans" && v.is_number_integer() && j["mean"].size() != size_t(v.get<int>())) {
    j["mean"] = json::array();
    j["std"] = json::array();
  }
  *this = from_json(j.dump(), "override '" + kv + "'");
}

}  // namespace kat
