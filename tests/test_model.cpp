// Whole-model checks against golden files written by the PyTorch reference (reference/).
//
// Tolerances (norm-wise relative error ||ours - ref|| / ||ref||, reference computed in float64 from
// the same float32 parameters):
//  - logits / features / loss: 1e-5. Our fp32 forward rounds at ~6e-8 per op; a few dozen ops in
//    sequence and reductions of length <= 64 give ~1e-6 typical, so 1e-5 catches any real error.
//  - parameter gradients: 1e-4. The backward doubles the op count and sums over batch*tokens, and
//    small-norm gradients (e.g. cls_token) lose relative precision; 1e-4 is the bound.
#include <gtest/gtest.h>

#include <cmath>
#include <nlohmann/json.hpp>

#include "kat/core/error.h"
#include "kat/io/safetensors.h"
#include "kat/model/drop_path.h"
#include "kat/model/kat_model.h"
#include "kat/model/layout.h"
#include "kat/train/optim.h"
#include "kat/train/train_config.h"
#include "ops/cpu_ops.h"
#include "test_util.h"

using namespace kat;

namespace {

double rel_err(const float* a, const std::vector<float>& ref) {
  double num = 0, den = 0;
  for (size_t i = 0; i < ref.size(); ++i) {
    if (std::isnan(a[i])) return INFINITY;
    num += (double(a[i]) - ref[i]) * (double(a[i]) - ref[i]);
    den += double(ref[i]) * ref[i];
  }
  return std::sqrt(num / std::max(den, 1e-300));
}

std::string golden(const std::string& name) { return std::string(KAT_TEST_DATA) + "/golden/" + name; }

void check_golden(const std::string& file) {
  const auto g = io::SafetensorsFile::load(golden(file));
  const ModelConfig cfg = ModelConfig::from_json(g.metadata().at("config"), file);
  const float ls = std::stof(g.metadata().at("label_smoothing"));
  KatModel m(cfg);
  std::fill(m.params.begin(), m.params.end(), NAN);  // poison: every parameter must be loaded
  m.load_weights(g, "param.");
  const auto& in = g.info("input");
  const int B = int(in.shape[0]);
  const auto x = g.to_f32("input"), t = g.to_f32("target");
  m.plan(B);
  const float* z = m.forward(x.data(), B);
  EXPECT_LT(rel_err(z, g.to_f32("logits")), 1e-5) << file << " logits";
  EXPECT_LT(rel_err(m.features(), g.to_f32("features")), 1e-5) << file << " features";
  std::vector<float> dz(B * cfg.num_classes);
  const double loss = ops::softmax_xent<float>(B, cfg.num_classes, z, t.data(), ls, dz.data());
  EXPECT_NEAR(loss, g.to_f32("loss")[0], 1e-5 * std::abs(g.to_f32("loss")[0])) << file << " loss";
  m.zero_grad();
  m.backward(dz.data());
  int checked = 0;
  for (const auto& s : m.table().specs()) {
    const auto ref = g.to_f32("grad." + s.name);
    const double e = rel_err(m.grads.data() + s.offset, ref);
    EXPECT_LT(e, 1e-4) << file << " grad." << s.name;
    ++checked;
  }
  EXPECT_EQ(checked, int(m.table().specs().size()));
}

}  // namespace

TEST(ModelGolden, KatSmall) { check_golden("golden_kat_small.safetensors"); }
TEST(ModelGolden, KatPerGroupNumerator) { check_golden("golden_kat_pergroup.safetensors"); }
TEST(ModelGolden, DeitSmall) { check_golden("golden_deit_small.safetensors"); }

TEST(ModelConfigs, ParameterCountsMatchSpec) {
  // docs/MODEL.md §2 table; DeiT twins have 912 = 12 blocks x 2 activations x 38 fewer.
  const std::pair<const char*, int64_t> want[] = {
      {"kat_tiny_patch16_224", 5718328},          {"kat_small_patch16_224", 22051576},
      {"kat_base_patch16_224", 86568568},         {"deit_tiny_patch16_224", 5718328 - 912},
      {"deit_small_patch16_224", 22051576 - 912}, {"deit_base_patch16_224", 86568568 - 912}};
  for (const auto& [name, n] : want) EXPECT_EQ(KatModel(ModelConfig::load(name)).num_params(), n) << name;
}

TEST(ModelConfigs, ErrorsNameTheField) {
  ModelConfig c = ModelConfig::load("kat_tiny_patch16_224");
  try {
    c.apply_override("groups=5");
    FAIL() << "groups=5 must be rejected";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("divisible by groups 5"), std::string::npos) << e.what();
  }
  EXPECT_THROW(c.apply_override("nonsense=1"), Error);
  EXPECT_THROW(ModelConfig::load("no_such_model"), Error);
  c.apply_override("num_classes=10");
  EXPECT_EQ(c.num_classes, 10);
  EXPECT_THROW(ModelConfig::from_json("{\"depth\": \"x\"}", "t"), Error);
}

// The weights' input normalisation travels with the model config (timm's pretrained cfg, docs/MODEL.md
// §4): ImageNet statistics for the 224 models, 0.5 for the small ones; --mean/--std win; a new
// channel count drops it; a wrong count is an error naming the field.
TEST(ModelConfigs, InputNormalisation) {
  const ModelConfig tiny = ModelConfig::load("kat_tiny_patch16_224");
  EXPECT_EQ(tiny.mean, (std::vector<float>{0.485f, 0.456f, 0.406f}));
  EXPECT_EQ(tiny.std, (std::vector<float>{0.229f, 0.224f, 0.225f}));
  EXPECT_TRUE(ModelConfig::load("kat_micro_patch4_28").mean.empty());
  TrainConfig t;
  EXPECT_EQ(input_normalisation(t, tiny).first, tiny.mean);  // plain timm weights, default training
  t.mean = {0.5f, 0.5f, 0.5f};
  t.std = {0.25f, 0.25f, 0.25f};
  EXPECT_EQ(input_normalisation(t, tiny).second, t.std);  // --std given
  ModelConfig gray = tiny;
  gray.apply_override("in_chans=1");
  EXPECT_TRUE(gray.mean.empty() && gray.std.empty());
  EXPECT_EQ(ModelConfig::from_json(tiny.to_json(), "round trip").mean, tiny.mean);
  kat::test::expect_error(
      [&] {
    ModelConfig c = tiny;
    c.apply_override("mean=[0.5, 0.5]");
      },
      {"mean and std", "3"});
  kat::test::expect_error(
      [&] {
    ModelConfig c = tiny;
    c.apply_override("std=[1, 0, 1]");
      },
      {"std", "> 0"});
}

TEST(ModelWeights, RejectsMissingUnexpectedAndMisshaped) {
  ModelConfig cfg = ModelConfig::load("kat_micro_patch4_28");
  KatModel m(cfg);
  m.init_params(1);
  auto expect_error = [&](io::SafetensorsWriter& w, const std::string& needle) {
    auto f = io::SafetensorsFile::parse(w.serialize(), "test.safetensors");
    KatModel m2(cfg);
    try {
      m2.load_weights(f);
      FAIL() << "expected an error mentioning " << needle;
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
    }
  };
  {  // missing
    io::SafetensorsWriter w;
    for (const auto& s : m.table().specs())
      if (s.name != "blocks.1.mlp.fc1.bias") w.add_f32(s.name, s.shape, m.params.data() + s.offset);
    expect_error(w, "blocks.1.mlp.fc1.bias");
  }
  {  // unexpected
    io::SafetensorsWriter w;
    m.add_weights(w);
    float extra = 1;
    w.add_f32("blocks.9.foo", {1}, &extra);
    expect_error(w, "blocks.9.foo");
  }
  {  // mis-shaped
    io::SafetensorsWriter w;
    for (const auto& s : m.table().specs()) {
      auto shape = s.shape;
      if (s.name == "head.weight") shape = {shape[1], shape[0]};
      w.add_f32(s.name, shape, m.params.data() + s.offset);
    }
    expect_error(w, "head.weight");
  }
  {  // round trip, BF16 conversion on load
    io::SafetensorsWriter w;
    std::vector<uint16_t> bf;
    for (const auto& s : m.table().specs()) {
      bf.resize(s.numel);
      for (int64_t i = 0; i < s.numel; ++i) bf[i] = io::float_to_bf16(m.params[s.offset + i]);
      w.add(s.name, io::DType::BF16, s.shape, bf.data());
    }
    KatModel m2(cfg);
    m2.load_weights(io::SafetensorsFile::parse(w.serialize(), "bf16"));
    for (size_t i = 0; i < m.params.size(); ++i)
      ASSERT_EQ(m2.params[i], io::bf16_to_float(io::float_to_bf16(m.params[i])));
  }
}

TEST(ModelShapes, InputShapeErrorIsClear) {
  ModelConfig cfg = ModelConfig::load("kat_tiny_patch16_224");
  try {
    check_input_shape(cfg, {2, 3, 32, 32}, "input.safetensors: tensor 'input'");
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("expects (N, 3, 224, 224)"), std::string::npos) << e.what();
  }
}

TEST(ModelInit, PaperInitVariance) {
  ModelConfig cfg = ModelConfig::load("kat_tiny_patch16_224");
  KatModel m(cfg);
  m.init_params(7);
  auto var = [&](const std::string& n) {
    const auto& s = m.table().at(n);
    double v = 0;
    for (int64_t i = 0; i < s.numel; ++i) v += double(m.params[s.offset + i]) * m.params[s.offset + i];
    return v / s.numel;
  };
  EXPECT_NEAR(var("blocks.0.mlp.fc1.weight") * 192, 1.0, 0.02);                 // identity act1
  EXPECT_NEAR(var("blocks.0.mlp.fc2.weight") * 768, 2.8178, 0.06);              // swish act2
  EXPECT_NEAR(std::sqrt(var("blocks.0.attn.qkv.weight")), 0.02 * 0.88, 0.002);  // trunc_normal(.02)
  EXPECT_FLOAT_EQ(m.param("blocks.0.mlp.act2.weight_denominator")[1], 0.10652899335007572f);
}

TEST(ModelTrain, DropPathIsStochasticAndScaled) {
  ModelConfig cfg = ModelConfig::load("kat_micro_patch4_28");
  cfg.drop_path_rate = 0.5;
  cfg.depth = 2;
  KatModel m(cfg);
  m.init_params(3);
  m.plan(8);
  std::vector<float> x(8 * 28 * 28);
  Rng r(4);
  for (auto& v : x) v = float(r.normal());
  std::vector<float> eval1(m.forward(x.data(), 8), m.forward(x.data(), 8) + 80);
  std::vector<float> eval2(m.forward(x.data(), 8), m.forward(x.data(), 8) + 80);
  EXPECT_EQ(eval1, eval2);  // eval: deterministic, no drop-path
  Rng d(5);
  std::vector<float> tr(m.forward(x.data(), 8, true, &d), m.forward(x.data(), 8, true, &d) + 80);
  EXPECT_NE(tr, eval1);
}

TEST(ModelInit, TimmMimeticAttention) {
  // Per head, W_q^T W_k ≈ rank-hd part of 0.7 Z + 0.7 I: its trace is positive (≈ 0.7 hd + noise),
  // and W_v^T W_proj^T has a negative trace (≈ -0.4 hd).
  ModelConfig cfg = ModelConfig::load("kat_micro_patch4_28");
  cfg.init = "timm";
  KatModel m(cfg);
  m.init_params(1);
  const int D = cfg.embed_dim, hd = cfg.head_dim();
  const float* W = m.param("blocks.0.attn.qkv.weight");
  const float* P = m.param("blocks.0.attn.proj.weight");
  for (int h = 0; h < cfg.num_heads; ++h) {
    double tqk = 0, tvp = 0;
    for (int c = 0; c < D; ++c)
      for (int r = 0; r < hd; ++r) {
        tqk += double(W[(h * hd + r) * D + c]) * W[(D + h * hd + r) * D + c];    // (W_q^T W_k)_cc
        tvp += double(W[(2 * D + h * hd + r) * D + c]) * P[c * D + h * hd + r];  // (W_v^T W_p^T)_cc
      }
    EXPECT_GT(tqk, 0.35 * hd) << "head " << h;
    EXPECT_LT(tvp, -0.2 * hd) << "head " << h;
  }
  const float* fc1 = m.param("blocks.0.mlp.fc1.weight");
  double v = 0;
  for (int i = 0; i < cfg.mlp_hidden * D; ++i) v += double(fc1[i]) * fc1[i];
  EXPECT_NEAR(std::sqrt(v / (cfg.mlp_hidden * D)), 0.02 * 0.88, 0.002);  // trunc_normal(0.02)
}

// The one model description (model/layout.h): the CPU layout is the flat table layout, the CUDA
// layout pads every tensor to 128 elements with the same table; pack/unpack round-trip; the decay
// mask follows ParamSpec::decay and agrees with the optimizer's, with and without the rational switch.
TEST(ModelLayout, BackendAlignmentPackAndDecay) {
  for (const char* name : {"kat_micro_patch4_28", "deit_micro_patch4_28"}) {
    const ModelConfig cfg = ModelConfig::load(name);
    const ModelLayout cpu(cfg, ModelLayout::kCpuAlign), gpu(cfg, ModelLayout::kCudaAlign);
    const auto& specs = cpu.table().specs();
    ASSERT_EQ(specs.size(), gpu.table().specs().size());
    EXPECT_EQ(cpu.total(), cpu.table().total());
    EXPECT_EQ(gpu.total() % 128, 0);
    for (size_t i = 0; i < specs.size(); ++i) {
      EXPECT_EQ(cpu.offset(i), specs[i].offset) << specs[i].name;
      EXPECT_EQ(gpu.offset(i) % 128, 0) << specs[i].name;
      EXPECT_EQ(gpu.offset(specs[i].name), gpu.offset(i));
      EXPECT_EQ(gpu.table().specs()[i].offset, specs[i].offset);  // the table itself is the flat layout
    }
    EXPECT_EQ(gpu.blocks.size(), size_t(cfg.depth));
    EXPECT_EQ(gpu.blocks[1].fc2w, gpu.offset("blocks.1.mlp.fc2.weight"));
    EXPECT_EQ(gpu.head_b, gpu.offset("head.bias"));
    std::vector<float> flat(size_t(cpu.total())), padded(size_t(gpu.total()), 7.f), back(flat.size());
    for (size_t i = 0; i < flat.size(); ++i) flat[i] = float(i) + 0.5f;
    gpu.pack(flat.data(), padded.data());
    gpu.unpack(padded.data(), back.data());
    EXPECT_EQ(back, flat);
    double pad_sum = 0;
    for (float v : padded) pad_sum += v;
    double flat_sum = 0;
    for (float v : flat) flat_sum += v;
    EXPECT_EQ(pad_sum, flat_sum);  // padding is zero
    for (bool rational : {true, false}) {
      AdamWConfig oc;
      oc.decay_rational = rational;
      const AdamW opt(cpu.table(), oc);
      EXPECT_EQ(cpu.decay_mask(rational), opt.decay_mask()) << name << " decay_rational " << rational;
      const auto gm = gpu.decay_mask(rational);
      for (size_t i = 0; i < specs.size(); ++i)
        EXPECT_EQ(gm[size_t(gpu.offset(i))], uint8_t(specs[i].decay(rational))) << specs[i].name;
    }
  }
  auto spec = [](ParamKind k) {
    ParamSpec s;
    s.kind = k;
    return s;
  };
  EXPECT_TRUE(spec(ParamKind::Weight).decay(false));
  EXPECT_TRUE(spec(ParamKind::Rational).decay(true));
  EXPECT_FALSE(spec(ParamKind::Rational).decay(false));
  for (ParamKind k : {ParamKind::Bias, ParamKind::Norm, ParamKind::Embed}) EXPECT_FALSE(spec(k).decay(true));
}

// The drop-path draw shared by the CPU and GPU models: (depth, 2, B), block by block, sample by
// sample, attention before FFN, no draw for a block at rate 0.
TEST(ModelTrain, DropPathDrawOrder) {
  ModelConfig cfg = ModelConfig::load("kat_micro_patch4_28");
  cfg.drop_path_rate = 0.5;
  const int B = 3;
  std::vector<float> scales(size_t(drop_path_scale_count(cfg, B)));
  Rng a(17), b(17);
  draw_drop_path(cfg, B, a, scales.data());
  for (int i = 0; i < cfg.depth; ++i) {
    const double rate = cfg.depth > 1 ? cfg.drop_path_rate * i / (cfg.depth - 1) : cfg.drop_path_rate;
    for (int s = 0; s < B; ++s) {
      float at = 1.f, ff = 1.f;
      if (rate > 0) {
        const float keep = float(1.0 / (1.0 - rate));
        at = b.uniform() < rate ? 0.f : keep;
        ff = b.uniform() < rate ? 0.f : keep;
      }
      EXPECT_EQ(scales[size_t((i * 2) * B + s)], at) << i << " " << s;
      EXPECT_EQ(scales[size_t((i * 2 + 1) * B + s)], ff) << i << " " << s;
    }
  }
  EXPECT_EQ(a.next_u64(), b.next_u64());  // the same number of draws
}
