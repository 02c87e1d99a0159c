// ModelLayout: the one description of where a model's parameters live, for every backend.
//
//   table   the ParamTable (timm names, state_dict order, shapes, kinds) with offsets in the flat
//           checkpoint layout: tensors back to back, as KatModel::params and every file use.
//   offsets the same tensors in one backend's buffer, each starting at a multiple of `align`
//           elements (padding zero, never decayed, zero gradient). align = 1 on the CPU (the
//           backend layout is the flat layout); 128 on the GPU (every tensor 256-byte aligned for
//           cuBLASLt). pack()/unpack() convert between the two.
//   named   offsets (backend layout) of the embedding, head and every block's tensors, which the
//           hand-written forward/backward of each backend index with.
//
// The weight-decay rule (docs/MODEL.md §4) is ParamSpec::decay(decay_rational); decay_mask() expands it over
// the backend layout for the optimizer.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "kat/model/config.h"
#include "kat/model/params.h"

namespace kat {

// Backend offsets of one block's parameters.
struct BlockParams {
  int64_t n1w, n1b, qkvw, qkvb, projw, projb, n2w, n2b, fc1w, fc1b, fc2w, fc2b;
  int64_t a1n = -1, a1d = -1, a2n = -1, a2d = -1;  // rational coefficients (KAT only)
};

class ModelLayout {
 public:
  static constexpr int64_t kCpuAlign = 1;     // elements
  static constexpr int64_t kCudaAlign = 128;  // elements: 512 bytes of fp32, 256 of bf16

  ModelLayout(const ModelConfig& cfg, int64_t align);

  const ParamTable& table() const { return table_; }
  int64_t align() const { return align_; }
  // Elements of this backend's parameter buffer (padding included); table().total() without.
  int64_t total() const { return total_; }
  // Backend offset of table().specs()[i], and of a named tensor (throws naming it).
  int64_t offset(size_t spec_index) const { return offsets_[spec_index]; }
  int64_t offset(const std::string& name) const;

  // flat (table().total() floats, checkpoint layout) -> backend (total() floats, padding zero).
  void pack(const float* flat, float* backend) const;
  // backend -> flat.
  void unpack(const float* backend, float* flat) const;
  // Per element of the backend layout: 1 where AdamW's weight decay applies (padding: 0).
  std::vector<uint8_t> decay_mask(bool decay_rational) const;

  // Backend offsets of the tensors outside the blocks, and of each block's.
  int64_t cls_token, pos_embed, patch_w, patch_b, norm_w, norm_b, head_w, head_b;
  std::vector<BlockParams> blocks;

 private:
  ParamTable table_;
  int64_t align_;
  std::vector<int64_t> offsets_;
  int64_t total_ = 0;
};

}  // namespace kat
