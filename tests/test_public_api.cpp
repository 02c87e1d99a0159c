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

// The GPU runner behind the same header: where a GPU is usable its logits match the CPU model
// (bf16 tolerance); elsewhere constructing it is a clear kat::Error naming the device.
TEST(PublicApi, GpuRunnerOrClearError) {
  kat::KatModel m(kat::ModelConfig::load("kat_micro_patch4_28"));
  m.init_params(1);
  m.plan(2);
  std::vector<float> images(2 * 28 * 28), logits(2 * 10);
  kat::Rng r(3);
  for (auto& v : images) v = float(r.normal());
  std::string why;
  if (!kat::cuda_available(&why)) {
    EXPECT_FALSE(why.empty());
    try {
      kat::GpuRunner gpu(m.config(), 0, kat::DType::BF16, kat::AdamWConfig{}, 2, false);
      FAIL() << "GpuRunner constructed without a usable GPU";
    } catch (const kat::Error& e) {
      EXPECT_NE(std::string(e.what()).find("cuda:0"), std::string::npos) << e.what();
    }
    return;
  }
  kat::GpuRunner gpu(m.config(), 0, kat::DType::BF16, kat::AdamWConfig{}, 2, false);
  gpu.upload_params(m.params.data());
  gpu.forward(images.data(), 2, logits.data());
  const float* ref = m.forward(images.data(), 2);
  double num = 0, den = 0;
  for (int i = 0; i < 20; ++i) {
    num += (logits[i] - ref[i]) * (logits[i] - ref[i]);
    den += ref[i] * ref[i];
  }
  EXPECT_LE(std::sqrt(num / den), 5e-2);  // bf16 compute (bench/records/MODEL_CUDA.md)
}
