// Fine-tuning initialisation (`kat train --init`, src/model/pretrained.cpp): the pos_embed grid
// resampling against torch's F.interpolate(bicubic, antialias) as timm calls it (golden file from
// reference/pos_embed_golden.py), the adaptations (new head, new grid, RGB -> gray stem), the
// errors, and the trainer starting from the file's weights.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <filesystem>
#include <sstream>
#include <tuple>

#include "kat/core/error.h"
#include "kat/io/safetensors.h"
#include "kat/model/kat_model.h"
#include "kat/model/pretrained.h"
#include "kat/train/trainer.h"
#include "test_util.h"
#include "train_run_util.h"

using namespace kat;
namespace fs = std::filesystem;

#ifndef KAT_TEST_DATA
#define KAT_TEST_DATA "tests"
#endif

namespace {
// The grid of reference/pos_embed_golden.py, channels last.
std::vector<float> formula_grid(int side, int C) {
  std::vector<float> v(size_t(side) * side * C);
  for (int y = 0; y < side; ++y)
    for (int x = 0; x < side; ++x)
      for (int c = 0; c < C; ++c)
        v[(size_t(y) * side + x) * C + c] =
            float(std::sin(0.3 * y + 0.7 * c) + std::cos(0.45 * x - 0.2 * c) + 0.1 * ((x * y) % 5));
  return v;
}

ModelConfig micro(std::initializer_list<const char*> overrides) {
  ModelConfig c = ModelConfig::load("kat_micro_patch4_28");
  c.apply_override("depth=2");
  for (const char* o : overrides) c.apply_override(o);
  return c;
}

std::string save_weights(const KatModel& m, const std::string& name) {
  const std::string p = (fs::temp_directory_path() / name).string();
  io::SafetensorsWriter w;
  m.add_weights(w);
  w.write_atomic(p);
  return p;
}

std::vector<float> param(const KatModel& m, const std::string& n) {
  const ParamSpec* s = m.table().find(n);
  EXPECT_NE(s, nullptr) << n;
  return std::vector<float>(m.params.begin() + s->offset, m.params.begin() + s->offset + s->numel);
}
}  // namespace

// Tolerance: both sides accumulate 4-10 float products per pass, two passes; values are O(1):
// a few 1e-7 of rounding, 1e-5 leaves room for torch computing its weights in another precision.
TEST(Pretrained, ResampleMatchesTorch) {
  const auto g = io::SafetensorsFile::load(std::string(KAT_TEST_DATA) + "/golden/pos_embed_resample.safetensors");
  const int cases[][3] = {{7, 8, 6}, {14, 24, 5}, {14, 7, 4}, {7, 5, 3}, {8, 8, 2}};
  for (int i = 0; i < 5; ++i) {
    const auto [a, b, C] = std::tuple(cases[i][0], cases[i][1], cases[i][2]);
    const auto in = formula_grid(a, C);
    std::vector<float> out(size_t(b) * b * C, NAN);
    resample_grid_bicubic_aa(in.data(), a, a, C, b, b, out.data());
    const auto ref = g.to_f32("case" + std::to_string(i));
    ASSERT_EQ(ref.size(), out.size());
    double worst = 0;
    for (size_t k = 0; k < out.size(); ++k) worst = std::max(worst, double(std::fabs(out[k] - ref[k])));
    std::printf("    pos grid %d -> %d (C %d): max |ours - torch| %.2e\n", a, b, C, worst);
    EXPECT_LE(worst, 1e-5) << a << " -> " << b;
    if (a == b) {  // the same size is the identity
      for (size_t k = 0; k < out.size(); ++k) ASSERT_EQ(out[k], in[k]);
    }
  }
}

TEST(Pretrained, AdaptsHeadGridAndStem) {
  KatModel src(micro({"in_chans=3", "num_classes=10"}));  // 7x7 grid, RGB, 10 classes
  src.init_params(1);
  const std::string path = save_weights(src, "kat_pretrained_src.safetensors");
  KatModel dst(micro({"in_chans=1", "num_classes=5", "img_size=32"}));  // 8x8 grid, gray, 5 classes
  dst.init_params(2);
  const auto head_init = param(dst, "head.weight");
  const auto notes = load_pretrained(dst, io::SafetensorsFile::load(path));
  ASSERT_EQ(notes.size(), 4u);
  std::ostringstream all;
  for (const auto& n : notes) all << n << "\n";
  EXPECT_NE(all.str().find("head.weight (10, 64) -> (5, 64): re-initialised"), std::string::npos) << all.str();
  EXPECT_NE(all.str().find("7x7 patch grid resampled to 8x8"), std::string::npos) << all.str();
  EXPECT_NE(all.str().find("3 input channels summed"), std::string::npos) << all.str();
  // Unchanged tensors copied, the new head kept, the stem summed, the grid resampled.
  EXPECT_EQ(param(dst, "blocks.1.mlp.fc1.weight"), param(src, "blocks.1.mlp.fc1.weight"));
  EXPECT_EQ(param(dst, "blocks.0.mlp.act1.weight_numerator"), param(src, "blocks.0.mlp.act1.weight_numerator"));
  EXPECT_EQ(param(dst, "head.weight"), head_init);
  const auto w3 = param(src, "patch_embed.proj.weight"), w1 = param(dst, "patch_embed.proj.weight");
  const size_t hw = 16;
  for (size_t o = 0; o < w1.size() / hw; ++o)
    for (size_t k = 0; k < hw; ++k)
      ASSERT_EQ(w1[o * hw + k], w3[(o * 3) * hw + k] + w3[(o * 3 + 1) * hw + k] + w3[(o * 3 + 2) * hw + k]);
  const auto ps = param(src, "pos_embed"), pd = param(dst, "pos_embed");
  const int D = 64;
  std::vector<float> grid(size_t(64) * D);
  resample_grid_bicubic_aa(ps.data() + D, 7, 7, D, 8, 8, grid.data());
  EXPECT_TRUE(std::equal(pd.begin(), pd.begin() + D, ps.begin()));  // class token
  EXPECT_TRUE(std::equal(pd.begin() + D, pd.end(), grid.begin()));
  fs::remove(path);
}

TEST(Pretrained, RefusesWhatCannotBeAdapted) {
  KatModel src(micro({}));
  src.init_params(1);
  const std::string path = save_weights(src, "kat_pretrained_bad.safetensors");
  const auto f = io::SafetensorsFile::load(path);
  KatModel wide(micro({"embed_dim=96", "num_heads=3"}));
  wide.init_params(2);
  const auto before = wide.params;
  kat::test::expect_error([&] { load_pretrained(wide, f); }, {"expects"});  // 64-wide file, 96-wide model
  EXPECT_EQ(wide.params, before);                                           // untouched
  KatModel rgb(micro({"in_chans=3"}));  // gray checkpoint, RGB model: not adapted
  rgb.init_params(4);
  kat::test::expect_error([&] { load_pretrained(rgb, f); }, {"1 -> 3 input channels"});
  KatModel deeper(micro({"depth=3"}));
  deeper.init_params(3);
  kat::test::expect_error([&] { load_pretrained(deeper, f); }, {"missing tensor(s) 'blocks.2."});
  fs::remove(path);
}

// `kat train --init`: training starts from the file's weights (after one step at the warm-up
// learning rate every norm weight is still within 1e-3 of the file's), and a missing file is an
// error naming it.
TEST(Pretrained, TrainerStartsFromInit) {
  const std::string d = kat::test::temp_path("kat_test_init_run");
  fs::remove_all(d);
  TrainConfig c = kat::test::tiny_run(d);
  {
    ModelConfig mc = ModelConfig::load(c.model);
    for (const auto& o : c.model_overrides) mc.apply_override(o);
    KatModel m(mc);
    m.init_params(99);
    for (size_t i = 0; i < m.params.size(); ++i) m.params[i] += 0.25f;  // far from any fresh init
    c.init = save_weights(m, "kat_init_weights.safetensors");
    c.max_steps = 1;
    const TrainResult r = train(c);
    ASSERT_TRUE(r.interrupted);
    const auto got = io::SafetensorsFile::load(r.last_checkpoint).to_f32("blocks.0.norm1.weight");
    const auto want = param(m, "blocks.0.norm1.weight");
    ASSERT_EQ(got.size(), want.size());
    for (size_t i = 0; i < got.size(); ++i) EXPECT_NEAR(got[i], want[i], 1e-3);
  }
  fs::remove_all(d);
  c.init = kat::test::temp_path("no_such_weights.safetensors");
  kat::test::expect_error([&] { train(c); }, {"no_such_weights.safetensors"});  // missing --init file
  fs::remove_all(d);
}
