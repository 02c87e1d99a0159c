// Uses the installed kat library through its public header only: a built-in model by name (the
// configs are compiled into the library, no file or source tree needed), parameters, a forward
// pass on a random batch. Prints the logits' shape; exits non-zero on any error.
#include <kat/kat.h>

#include <cmath>
#include <cstdio>
#include <vector>

int main() {
  try {
    const int batch = 2;
    kat::KatModel model(kat::ModelConfig::load("kat_micro_patch4_28"));
    const kat::ModelConfig& c = model.config();
    model.init_params(1);
    model.plan(batch);
    // (batch, in_chans, img, img) images, standard normal.
    std::vector<float> images(size_t(batch) * c.in_chans * c.img_size * c.img_size);
    kat::Rng rng(2);
    for (auto& v : images) v = float(rng.normal());
    const float* logits = model.forward(images.data(), batch);  // (batch, num_classes)
    for (int i = 0; i < batch * c.num_classes; ++i)
      if (!std::isfinite(logits[i])) {
        std::fprintf(stderr, "logit %d is not finite\n", i);
        return 1;
      }
    std::printf("kat_consumer: %s logits (%d, %d), %lld parameters\n", c.name.c_str(), batch, c.num_classes,
                (long long)model.num_params());
    return 0;
  } catch (const kat::Error& e) {
    std::fprintf(stderr, "kat_consumer: %s\n", e.what());
    return 1;
  }
}
