// Loading and saving model weights as safetensors with timm names (SPEC.md §2).
#include <algorithm>
#include <set>

#include "core/error.h"
#include "io/safetensors.h"
#include "model/kat_model.h"

namespace kat {

namespace {
// Prefixes that a training checkpoint stores beside the model weights.
bool is_training_state(const std::string& name) {
  for (const char* p : {"ema.", "optim.", "state."})
    if (name.rfind(p, 0) == 0) return true;
  return false;
}
}  // namespace

void KatModel::load_weights(const io::SafetensorsFile& f, const std::string& prefix) {
  // Validate everything first, copy second: a bad file leaves the model untouched.
  std::vector<std::string> missing, problems;
  for (const auto& s : table_.specs()) {
    const std::string key = prefix + s.name;
    if (!f.has(key)) {
      missing.push_back(key);
      continue;
    }
    const auto& info = f.info(key);
    if (info.shape != s.shape)
      problems.push_back(detail::concat("tensor '", key, "' has shape ", shape_str(info.shape),
                                        ", model '", cfg_.name, "' expects ", shape_str(s.shape)));
    else if (info.dtype != io::DType::F32 && info.dtype != io::DType::F16 && info.dtype != io::DType::BF16)
      problems.push_back(detail::concat("tensor '", key, "' has dtype ", io::dtype_name(info.dtype),
                                        " (weights must be F32, F16 or BF16)"));
  }
  std::vector<std::string> unexpected;
  for (const auto& n : f.names()) {
    if (prefix.empty() ? is_training_state(n) : n.rfind(prefix, 0) != 0) continue;
    if (!table_.find(n.substr(prefix.size()))) unexpected.push_back(n);
  }
  auto list = [](const std::vector<std::string>& v) {
    std::string s;
    for (size_t i = 0; i < v.size() && i < 8; ++i) s += (i ? ", '" : "'") + v[i] + "'";
    if (v.size() > 8) s += detail::concat(" and ", v.size() - 8, " more");
    return s;
  };
  KAT_CHECK(problems.empty(), f.source(), ": ", problems.front(),
            problems.size() > 1 ? detail::concat(" (and ", problems.size() - 1, " more mis-shaped tensors)") : "");
  KAT_CHECK(missing.empty(), f.source(), ": missing tensor(s) ", list(missing), " for model '", cfg_.name, "'");
  KAT_CHECK(unexpected.empty(), f.source(), ": unexpected tensor(s) ", list(unexpected),
            " not in model '", cfg_.name, "' (wrong --model?)");
  for (const auto& s : table_.specs()) f.read_f32(prefix + s.name, params.data() + s.offset, s.numel);
}

void KatModel::add_weights(io::SafetensorsWriter& w, const std::string& prefix, const float* values) const {
  const float* src = values ? values : params.data();
  for (const auto& s : table_.specs()) w.add_f32(prefix + s.name, s.shape, src + s.offset);
}

}  // namespace kat
