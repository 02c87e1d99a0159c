// Loading and saving model weights as safetensors with timm names (docs/MODEL.md §2).
#include <algorithm>
#include <set>

#include "kat/core/error.h"
#include "kat/io/safetensors.h"
#include "kat/model/kat_model.h"

namespace kat {

namespace {
// Prefixes that a training checkpoint stores beside the model weights.
bool is_training_state(const std::string& name) {
  for (const char* p : {"ema.", "optim.", "state.", "fp8."})
    if (name.rfind(p, 0) == 0) return true;
  return false;
}
}  // namespace

std::string weight_dtype_problem(const io::SafetensorsFile& f, const std::string& key) {
  const io::DType d = f.info(key).dtype;
  if (d == io::DType::F32 || d == io::DType::F16 || d == io::DType::BF16) return "";
  return detail::concat("tensor '", key, "' has dtype ", io::dtype_name(d), " (weights must be F32, F16 or BF16)");
}

void check_weight_names(const KatModel& m, const io::SafetensorsFile& f, const std::string& prefix) {
  std::vector<std::string> missing, unexpected;
  for (const auto& s : m.table().specs())
    if (!f.has(prefix + s.name)) missing.push_back(prefix + s.name);
  for (const auto& n : f.names()) {
    if (prefix.empty() ? is_training_state(n) : n.rfind(prefix, 0) != 0) continue;
    if (!m.table().find(n.substr(prefix.size()))) unexpected.push_back(n);
  }
  auto list = [](const std::vector<std::string>& v) {
    std::string s;
    for (size_t i = 0; i < v.size() && i < 8; ++i) s += (i ? ", '" : "'") + v[i] + "'";
    if (v.size() > 8) s += detail::concat(" and ", v.size() - 8, " more");
    return s;
  };
  const std::string& name = m.config().name;
  KAT_CHECK(missing.empty(), f.source(), ": missing tensor(s) ", list(missing), " for model '", name, "'");
  KAT_CHECK(unexpected.empty(), f.source(), ": unexpected tensor(s) ", list(unexpected), " not in model '", name,
            "' (wrong --model?)");
}

void KatModel::load_weights(const io::SafetensorsFile& f, const std::string& prefix) {
  // Validate everything first, copy second: a bad file leaves the model untouched.
  std::vector<std::string> problems;
  for (const auto& s : table().specs()) {
    const std::string key = prefix + s.name;
    if (!f.has(key)) continue;  // reported by check_weight_names
    const auto& info = f.info(key);
    if (info.shape != s.shape)
      problems.push_back(detail::concat("tensor '", key, "' has shape ", shape_str(info.shape), ", model '",
                                        cfg_.name, "' expects ", shape_str(s.shape)));
    else if (std::string d = weight_dtype_problem(f, key); !d.empty())
      problems.push_back(d);
  }
  KAT_CHECK(problems.empty(), f.source(), ": ", problems.front(),
            problems.size() > 1 ? detail::concat(" (and ", problems.size() - 1, " more mis-shaped tensors)") : "");
  check_weight_names(*this, f, prefix);
  for (const auto& s : table().specs()) f.read_f32(prefix + s.name, params.data() + s.offset, s.numel);
}

void KatModel::add_weights(io::SafetensorsWriter& w, const std::string& prefix, const float* values) const {
  const float* src = values ? values : params.data();
  for (const auto& s : table().specs()) w.add_f32(prefix + s.name, s.shape, src + s.offset);
}

}  // namespace kat
