// The one-include public API compiles and does what its header comment says.
#include <kat/kat.h>

#include <gtest/gtest.h>

TEST(PublicApi, LoadPlanForward) {
  kat::KatModel m(kat::ModelConfig::load("kat_micro_patch4_28"));
  m.init_params(1);
  m.plan(2);
  std::vector<float> images(2 * 28 * 28);
  kat::Rng r(2);
  for (auto& v : images) v = float(r.normal());
  const float* logits = m.forward(images.data(), 2);
  for (int i = 0; i < 20; ++i) EXPECT_TRUE(std::isfinite(logits[i]));
  EXPECT_THROW(m.forward(images.data(), 3), kat::Error);  // beyond the planned batch
}
