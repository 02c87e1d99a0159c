// Parameter table: every parameter of a model lives in one contiguous fp32 buffer, carved by this
// table (name -> offset, shape). Gradients, optimizer moments and EMA use the same layout, so an
// optimizer step is a loop over flat arrays and a checkpoint is a loop over the table.
#pragma once
#include <cstdint>
#include <string>
#include <unordered_map>
#include <vector>

namespace kat {

enum class ParamKind { Weight, Bias, Norm, Embed, Rational };

struct ParamSpec {
  std::string name;            // timm state_dict name, e.g. "blocks.3.mlp.fc1.weight"
  std::vector<int64_t> shape;  // timm shape, e.g. (4D, D)
  int64_t offset = 0, numel = 0;
  ParamKind kind = ParamKind::Weight;
  // The weight-decay rule, the only copy (docs/MODEL.md §4, DeiT parameter groups): decay on matrices
  // (linear and patch-embedding weights), not on biases, norms, pos_embed or cls_token; timm also
  // decays the rational coefficients, switchable (TrainConfig::decay_rational, default on).
  bool decay(bool decay_rational) const {
    return kind == ParamKind::Weight || (kind == ParamKind::Rational && decay_rational);
  }
};

class ParamTable {
 public:
  int64_t add(const std::string& name, std::vector<int64_t> shape, ParamKind kind);
  const std::vector<ParamSpec>& specs() const { return specs_; }
  int64_t total() const { return total_; }
  const ParamSpec* find(const std::string& name) const;
  const ParamSpec& at(const std::string& name) const;  // throws naming the parameter

 private:
  std::vector<ParamSpec> specs_;
  std::unordered_map<std::string, size_t> index_;
  int64_t total_ = 0;
};

std::string shape_str(const std::vector<int64_t>& shape);

}  // namespace kat
