// Loader throughput at ImageNet geometry: how many training images per second the CPU side can
// feed a GPU. Writes a synthetic JPEG folder (500 x 375 photos-like gradients + noise, quality 90,
// the typical ImageNet file) once, then times the Loader over it at 224^2 with the DeiT recipe
// (bench/deit_recipe.h, data_bench's too: RRC, flip, RandAugment 2/9 m-std 0.5 (before session 7:
// m-std 0), random erasing 0.25, mixup 0.8 / cutmix 1.0, smoothing 0.1, normalisation), for
// the in-memory dataset (decoded and resized up front) and the lazy one (--lazy-data: JPEG decode
// + resize per sample), for each worker count: one warm-up epoch, then two timed epochs.
//
//   build/loader_bench [DIR] [IMAGES] [WORKERS...]     defaults: /tmp/kat_loader_bench 512 1 2
//
// Prints one line per (mode, workers): img/s, ms per batch of 128.
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <string>
#include <vector>

#include "deit_recipe.h"
#include "kat/core/rng.h"
#include "kat/data/data.h"
#include "kat/data/image_io.h"

namespace fs = std::filesystem;
using namespace kat;

int main(int argc, char** argv) try {
  const std::string dir = argc > 1 ? argv[1] : "/tmp/kat_loader_bench";
  const int n = argc > 2 ? std::stoi(argv[2]) : 512;
  std::vector<int> workers;
  for (int i = 3; i < argc; ++i) workers.push_back(std::stoi(argv[i]));
  if (workers.empty()) workers = {1, 2};
  const fs::path tr = fs::path(dir) / "train";
  if (!fs::exists(tr / "c0" / (std::to_string(n / 2 - 1) + ".jpg"))) {
    std::printf("writing %d JPEGs (500x375, q90) to %s ...\n", n, tr.c_str());
    Rng r(1);
    for (int c = 0; c < 2; ++c) {
      fs::create_directories(tr / ("c" + std::to_string(c)));
      for (int i = 0; i < n / 2; ++i) {
        const int h = 375, w = 500;
        std::vector<uint8_t> px(size_t(h) * w * 3);
        const int a = int(r.below(200)), b = int(r.below(200));
        for (int y = 0; y < h; ++y)
          for (int x = 0; x < w; ++x)
            for (int k = 0; k < 3; ++k)
              px[(size_t(y) * w + x) * 3 + k] =
                  uint8_t((a + y * (k + 1) / 3 + x * (3 - k) / 4 + b * k + r.below(24)) & 255);
        data::write_jpeg((tr / ("c" + std::to_string(c)) / (std::to_string(i) + ".jpg")).string(), h, w, 3,
                         px.data(), 90);
      }
    }
  }
  data::LoaderConfig lc = bench::deit_recipe(128);
  for (const bool lazy : {false, true}) {
    const auto t0 = std::chrono::steady_clock::now();
    const data::Dataset ds = data::load_image_folder(tr.string(), 224, false, nullptr, 3, nullptr, lazy);
    const double load_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    for (const int w : workers) {
      lc.num_workers = w;
      data::Loader loader(ds, lc);
      data::Batch b;
      // Warm-up epoch: threads started, every prefetch slot's buffers allocated (a training run
      // allocates them once; timing the first batches would count page faults it does not pay).
      loader.start_epoch(0, 0);
      while (loader.next(b)) {
      }
      const auto t1 = std::chrono::steady_clock::now();
      int64_t imgs = 0, batches = 0;
      for (int64_t epoch = 1; epoch <= 2; ++epoch) {
        loader.start_epoch(epoch, 0);
        while (loader.next(b)) {
          imgs += b.n;
          ++batches;
        }
      }
      const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t1).count();
      std::printf("%-6s workers %2d: %7.0f img/s  (%6.1f ms per batch of 128; dataset load %.1f s)\n",
                  lazy ? "lazy" : "memory", w, imgs / s, 1e3 * s / double(batches), load_s);
    }
  }
  return 0;
} catch (const std::exception& e) {
  std::fprintf(stderr, "error: %s\n", e.what());
  return 1;
}
