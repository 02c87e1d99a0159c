// The training data pipeline alone, from a folder of image files to normalised batches at 224^2:
// how many images per second it delivers, with nothing training. The GPU pipeline (nvJPEG + GPU
// augmentation, data/cuda/gpu_loader.h; batches end in device memory) or the CPU loader (lazy
// folder, --workers threads; batches end in host memory), with the full DeiT recipe (RRC, flip,
// RandAugment 2/9 m-std 0.5, random erasing 0.25, mixup 0.8 / cutmix 1.0, smoothing 0.1) or the
// light one (RRC, flip, normalise: what torchvision's GPU path is compared on).
//
//   data_bench DIR [--decode gpu|cpu] [--recipe deit|light] [--batch 256] [--batches 60]
//              [--workers N] [--device 0] [--cpu-share X] [--decode-streams 1..8] [--priority high|normal] [--csv]
// DIR holds DIR/train/<class>/*.jpg (bench/make_jpegs.py). One warm-up pass of 5 batches, then
// --batches timed batches (wrapping over epochs). Prints one line (and a CSV line with --csv:
// data_bench,decode,recipe,batch,img_per_s,backend,cpu_share,decode_streams). --cpu-share (GPU pipeline): the
// fraction of JPEGs the reader threads decode with libjpeg-turbo beside the JPEG engine
// (GpuLoaderOptions::cpu_decode_share); --decode-streams N: N nvJPEG decoders, each with a thread
// and a stream, decoding batches in parallel (GpuLoaderOptions::decode_streams, default 3);
// --priority high: the loader's streams at the greatest priority (experimental, see gpu_loader.h). The GPU
// pipeline also says on stderr where its time went.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <thread>

#include "deit_recipe.h"
#include "kat/core/error.h"
#include "kat/data/data.h"

#ifdef KAT_HAVE_NVJPEG
#include "data/cuda/gpu_loader.h"
#endif

using namespace kat;

namespace {

data::LoaderConfig recipe(const std::string& name, int batch) {
  KAT_CHECK(name == "deit" || name == "light", "--recipe must be deit or light, got '", name, "'");
  return bench::deit_recipe(batch, name == "light");
}

// Runs `warm` then `timed` batches through next(), starting new epochs as needed; seconds of the timed part.
template <class Loader, class Batch>
double time_batches(Loader& l, Batch& b, int warm, int timed, int64_t& images) {
  int64_t epoch = 0;
  l.start_epoch(epoch, 0);
  auto one = [&] {
    if (!l.next(b)) {
      l.start_epoch(++epoch, 0);
      KAT_CHECK(l.next(b), "empty epoch");
    }
    return int64_t(b.n);
  };
  for (int i = 0; i < warm; ++i) one();
  const auto t0 = std::chrono::steady_clock::now();
  images = 0;
  for (int i = 0; i < timed; ++i) images += one();
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

}  // namespace

int main(int argc, char** argv) try {
  KAT_CHECK(argc >= 2,
            "usage: data_bench DIR [--decode gpu|cpu] [--recipe deit|light] [--batch N] [--batches N] "
            "[--workers N] [--device N] [--cpu-share X] [--decode-streams 1..8] [--priority high|normal] [--csv]");
  const std::string dir = argv[1];
  std::string decode = "gpu", rec = "deit";
  int batch = 256, batches = 60, workers = 0, device = 0;
  double cpu_share = 0.0;
  int decode_streams = 3;           // GpuLoaderOptions' default
  std::string priority = "normal";  // GpuLoaderOptions::high_priority
  bool csv = false;
  for (int i = 2; i < argc; ++i) {
    const std::string a = argv[i];
    auto value = [&]() -> std::string {
      KAT_CHECK(i + 1 < argc, a, " needs a value");
      return argv[++i];
    };
    if (a == "--decode")
      decode = value();
    else if (a == "--recipe")
      rec = value();
    else if (a == "--batch")
      batch = std::stoi(value());
    else if (a == "--batches")
      batches = std::stoi(value());
    else if (a == "--workers")
      workers = std::stoi(value());
    else if (a == "--device")
      device = std::stoi(value());
    else if (a == "--cpu-share")
      cpu_share = std::stod(value());
    else if (a == "--decode-streams")
      decode_streams = std::stoi(value());
    else if (a == "--priority")
      priority = value();
    else if (a == "--csv")
      csv = true;
    else
      throw Error("unknown argument '" + a + "'");
  }
  KAT_CHECK(decode == "gpu" || decode == "cpu", "--decode must be gpu or cpu");
  if (workers <= 0) workers = std::max(1, int(std::thread::hardware_concurrency()) - 1);
  const data::Dataset ds = data::load_dataset("folder:" + dir, true, false, 224, nullptr, true, 3);
  data::LoaderConfig cfg = recipe(rec, batch);
  cfg.num_workers = workers;
  int64_t images = 0;
  double s = 0;
  std::string backend = "cpu";
  if (decode == "cpu") {
    data::Loader l(ds, cfg);
    data::Batch b;
    s = time_batches(l, b, 5, batches, images);
  } else {
#ifdef KAT_HAVE_NVJPEG
    data::cuda::GpuLoaderOptions o;
    o.device = device;
    o.read_threads = workers;
    o.cpu_decode_share = cpu_share;
    o.decode_streams = decode_streams;
    KAT_CHECK(priority == "high" || priority == "normal", "--priority must be high or normal");
    o.high_priority = priority == "high";
    data::cuda::GpuLoader l(ds, cfg, o);
    data::cuda::GpuBatch b;
    s = time_batches(l, b, 5, batches, images);
    const auto st = l.decode_stats();
    // Per batch built (warm-up included): the decode threads' and the augmenting thread's time by
    // phase, the readers' busy thread-time, the consumer's wait.
    const auto t = l.times();
    const double nb = double(std::max<int64_t>(1, t.batches)), ms = 1e3 / nb;
    std::fprintf(stderr,
                 "per batch (%lld built, cpu share %.2f, %d decode streams): decode threads idle %.1f ms, in "
                 "the decode call %.1f ms (thread-time); augmenting thread idle %.1f ms, augment call %.1f ms, "
                 "wait for GPU %.1f ms; readers read %.1f ms, CPU decode %.1f ms (thread-time, %d threads); "
                 "next() waited %.1f ms; on the GPU: decode %.1f ms, augmentation %.1f ms\n",
                 (long long)t.batches, cpu_share, decode_streams, t.decode_idle * ms, t.device_decode * ms,
                 t.device_idle * ms, t.device_augment * ms, t.device_wait_gpu * ms, t.read * ms, t.cpu_decode * ms,
                 workers, t.next_wait * ms, t.gpu_decode * 1e3, t.gpu_augment * 1e3);
    backend = "nvjpeg-" + l.decode_backend();
    std::fprintf(
        stderr,
        "decoded: %lld on the JPEG engine, %lld on CUDA cores, %lld on the CPU, %lld bad; nvJPEG asked "
        "for memory %lld (device) / %lld (pinned) times (-1: not counted, without KAT_NVJPEG_ALLOCATOR=kept)\n",
        (long long)st.hardware, (long long)st.cuda, (long long)st.cpu, (long long)st.bad,
        (long long)st.device_allocs, (long long)st.pinned_allocs);
#else
    throw Error("--decode gpu needs a build with CUDA and nvJPEG (KAT_NVJPEG)");
#endif
  }
  const double ips = double(images) / s;
  std::printf(
      "data pipeline %s, %s recipe, batch %d, %d threads, cpu share %.2f, %d decode streams: %.0f img/s (%.1f ms "
      "per "
      "batch, %s)\n",
      decode.c_str(), rec.c_str(), batch, workers, cpu_share, decode_streams, ips, 1e3 * s / batches,
      backend.c_str());
  if (csv)
    std::printf("data_bench,%s,%s,%d,%.1f,%s,%.2f,%d\n", decode.c_str(), rec.c_str(), batch, ips, backend.c_str(),
                cpu_share, decode_streams);
  return 0;
} catch (const std::exception& e) {
  std::fprintf(stderr, "error: %s\n", e.what());
  return 1;
}
