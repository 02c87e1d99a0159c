#include "kat/model/layout.h"

#include <cstring>

#include "kat/core/error.h"

namespace kat {

ModelLayout::ModelLayout(const ModelConfig& cfg, int64_t align) : align_(align) {
  KAT_CHECK(align >= 1, "ModelLayout: alignment must be >= 1 element, got ", align);
  const int64_t D = cfg.embed_dim, Hd = cfg.mlp_hidden, C = cfg.in_chans, p = cfg.patch_size;
  const int64_t G = cfg.groups, An = cfg.shared_numerator ? 1 : G;
  // Adds a tensor to the table; returns its offset in the backend layout.
  auto add = [&](const std::string& name, std::vector<int64_t> shape, ParamKind kind) {
    table_.add(name, std::move(shape), kind);
    const int64_t off = total_;
    offsets_.push_back(off);
    total_ = (total_ + table_.specs().back().numel + align_ - 1) / align_ * align_;
    return off;
  };
  // Order = timm state_dict order.
  cls_token = add("cls_token", {1, 1, D}, ParamKind::Embed);
  pos_embed = add("pos_embed", {1, cfg.tokens(), D}, ParamKind::Embed);
  patch_w = add("patch_embed.proj.weight", {D, C, p, p}, ParamKind::Weight);
  patch_b = add("patch_embed.proj.bias", {D}, ParamKind::Bias);
  for (int i = 0; i < cfg.depth; ++i) {
    const std::string b = "blocks." + std::to_string(i) + ".";
    BlockParams o;
    o.n1w = add(b + "norm1.weight", {D}, ParamKind::Norm);
    o.n1b = add(b + "norm1.bias", {D}, ParamKind::Norm);
    o.qkvw = add(b + "attn.qkv.weight", {3 * D, D}, ParamKind::Weight);
    o.qkvb = add(b + "attn.qkv.bias", {3 * D}, ParamKind::Bias);
    o.projw = add(b + "attn.proj.weight", {D, D}, ParamKind::Weight);
    o.projb = add(b + "attn.proj.bias", {D}, ParamKind::Bias);
    o.n2w = add(b + "norm2.weight", {D}, ParamKind::Norm);
    o.n2b = add(b + "norm2.bias", {D}, ParamKind::Norm);
    if (cfg.is_kat()) {
      o.a1n = add(b + "mlp.act1.weight_numerator", {An, 6}, ParamKind::Rational);
      o.a1d = add(b + "mlp.act1.weight_denominator", {G, 4}, ParamKind::Rational);
    }
    o.fc1w = add(b + "mlp.fc1.weight", {Hd, D}, ParamKind::Weight);
    o.fc1b = add(b + "mlp.fc1.bias", {Hd}, ParamKind::Bias);
    if (cfg.is_kat()) {
      o.a2n = add(b + "mlp.act2.weight_numerator", {An, 6}, ParamKind::Rational);
      o.a2d = add(b + "mlp.act2.weight_denominator", {G, 4}, ParamKind::Rational);
    }
    o.fc2w = add(b + "mlp.fc2.weight", {D, Hd}, ParamKind::Weight);
    o.fc2b = add(b + "mlp.fc2.bias", {D}, ParamKind::Bias);
    blocks.push_back(o);
  }
  norm_w = add("norm.weight", {D}, ParamKind::Norm);
  norm_b = add("norm.bias", {D}, ParamKind::Norm);
  head_w = add("head.weight", {cfg.num_classes, D}, ParamKind::Weight);
  head_b = add("head.bias", {cfg.num_classes}, ParamKind::Bias);
}

int64_t ModelLayout::offset(const std::string& name) const {
  const ParamSpec& s = table_.at(name);
  return offsets_[size_t(&s - table_.specs().data())];
}

void ModelLayout::pack(const float* flat, float* backend) const {
  if (align_ == 1) {
    std::memcpy(backend, flat, size_t(total_) * sizeof(float));
    return;
  }
  std::memset(backend, 0, size_t(total_) * sizeof(float));
  const auto& specs = table_.specs();
  for (size_t i = 0; i < specs.size(); ++i)
    std::memcpy(backend + offsets_[i], flat + specs[i].offset, size_t(specs[i].numel) * sizeof(float));
}

void ModelLayout::unpack(const float* backend, float* flat) const {
  const auto& specs = table_.specs();
  for (size_t i = 0; i < specs.size(); ++i)
    std::memcpy(flat + specs[i].offset, backend + offsets_[i], size_t(specs[i].numel) * sizeof(float));
}

std::vector<uint8_t> ModelLayout::decay_mask(bool decay_rational) const {
  std::vector<uint8_t> mask(size_t(total_), 0);
  const auto& specs = table_.specs();
  for (size_t i = 0; i < specs.size(); ++i)
    std::fill_n(mask.begin() + offsets_[i], specs[i].numel, uint8_t(specs[i].decay(decay_rational)));
  return mask;
}

}  // namespace kat
