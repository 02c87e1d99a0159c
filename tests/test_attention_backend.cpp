// The attention implementation request (src/ops/attention_backend.h): names, the KAT_ATTENTION
// variable, the process-wide setting of --attention. What the GPU model does with it is tested on
// the GPU (tests/gpu/test_attention_cudnn.cu, ModelCuda.CudnnAttentionVsCpu).
#include <gtest/gtest.h>

#include <cstdlib>

#include "kat/core/error.h"
#include "ops/attention_backend.h"

using kat::ops::AttentionBackend;

namespace {
// Sets KAT_ATTENTION (or unsets it: null) for one scope, restoring the previous value.
struct EnvGuard {
  std::string old;
  bool had;
  explicit EnvGuard(const char* v) {
    const char* e = std::getenv("KAT_ATTENTION");
    had = e != nullptr;
    if (had) old = e;
    if (v)
      setenv("KAT_ATTENTION", v, 1);
    else
      unsetenv("KAT_ATTENTION");
  }
  ~EnvGuard() {
    if (had)
      setenv("KAT_ATTENTION", old.c_str(), 1);
    else
      unsetenv("KAT_ATTENTION");
    kat::ops::clear_attention_backend();
  }
};
}  // namespace

TEST(AttentionBackend, NamesRoundTripAndBadNamesSayWhere) {
  for (AttentionBackend b : {AttentionBackend::Ours, AttentionBackend::Cudnn, AttentionBackend::Auto})
    EXPECT_EQ(kat::ops::parse_attention_backend(kat::ops::attention_backend_name(b), "x"), b);
  try {
    kat::ops::parse_attention_backend("flash", "--attention");
    FAIL() << "no error";
  } catch (const kat::Error& e) {
    EXPECT_NE(std::string(e.what()).find("--attention 'flash'"), std::string::npos) << e.what();
  }
}

TEST(AttentionBackend, RequestComesFromTheSettingThenTheEnvironmentThenAuto) {
  {
    EnvGuard g(nullptr);
    EXPECT_EQ(kat::ops::requested_attention_backend(), AttentionBackend::Auto);
  }
  {
    EnvGuard g("cudnn");
    EXPECT_EQ(kat::ops::requested_attention_backend(), AttentionBackend::Cudnn);
    kat::ops::set_attention_backend(AttentionBackend::Ours);  // the flag wins over the variable
    EXPECT_EQ(kat::ops::requested_attention_backend(), AttentionBackend::Ours);
    kat::ops::clear_attention_backend();
    EXPECT_EQ(kat::ops::requested_attention_backend(), AttentionBackend::Cudnn);
  }
  {
    EnvGuard g("fast");
    EXPECT_THROW(kat::ops::requested_attention_backend(), kat::Error);  // names KAT_ATTENTION
  }
}
