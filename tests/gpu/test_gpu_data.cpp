// The decode / loader half of the GPU data pipeline (issue #11):
//  - NvjpegDecoder against libjpeg-turbo (the CPU loader's decode) on every kind of JPEG written at
//    test time (tests/jpeg_variants.h), output poisoned twice; truncated files named and counted;
//  - GpuLoader: the CPU loader's batch order, labels and mixing decisions; bitwise the same batches
//    from run to run, across reader counts and across a mid-epoch start (resume); images near the
//    CPU loader's; a corrupt file named, or skipped with skip_bad; the same with a CPU decode share
//    and two or three decode streams; a stalled pipeline reported after its timeout;
//  - GpuRunner::stage_device equals stage() of the same batch bitwise;
//  - `kat train --decode gpu` on a folder stopped and resumed bitwise.
#include <cuda_runtime.h>
#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <iterator>
#include <memory>
#include <string>
#include <vector>

#include "../jpeg_variants.h"
#include "../test_util.h"
#include "../train_run_util.h"
#include "kat/core/error.h"
#include "kat/core/rng.h"
#include "kat/data/data.h"
#include "kat/data/image_io.h"
#include "kat/model/kat_model.h"
#include "kat/train/evaluate.h"
#include "kat/train/gpu_runner.h"
#include "kat/train/trainer.h"
#include "ops/cuda/cuda_check.h"
#include "ops/cuda/device_memory.h"

#ifdef KAT_HAVE_NVJPEG
#include "data/cuda/gpu_loader.h"
#include "data/cuda/nvjpeg_decoder.h"
#include "data/cuda/ycbcr_to_rgb.h"
#include "data/jpeg_header.h"
#include "data/ycbcr.h"
#endif

namespace fs = std::filesystem;
using namespace kat;

namespace {

template <class T>
std::vector<T> download(const T* d, size_t n) {
  std::vector<T> h(n);
  KAT_CUDA_CHECK(cudaMemcpy(h.data(), d, n * sizeof(T), cudaMemcpyDeviceToHost));
  return h;
}

}  // namespace

// stage_device() of a batch already on the GPU trains exactly like stage() of the same batch from
// the host (the bf16 conversion is the same round-to-nearest-even on either side).
TEST(GpuData, StageDeviceEqualsStage) {
  if (!cuda_available()) GTEST_SKIP() << "no GPU";
  ModelConfig cfg = ModelConfig::load("kat_micro_patch4_28");
  cfg.apply_override("depth=2");
  KatModel m(cfg);
  m.init_params(5);
  const int B = 8, K = cfg.num_classes;
  const size_t ni = size_t(B) * cfg.in_chans * cfg.img_size * cfg.img_size, nt = size_t(B) * K;
  std::vector<std::vector<float>> xs(3, std::vector<float>(ni)), ts(3, std::vector<float>(nt, 0.f));
  Rng r(11);
  for (int i = 0; i < 3; ++i) {
    for (auto& v : xs[i]) v = float(r.normal());
    for (int b = 0; b < B; ++b) ts[i][size_t(b) * K + (b * 3 + i) % K] = 1.f;
  }
  cuda::DeviceBuffer<float> dx(ni), dt(nt);
  auto run = [&](bool device) {
    GpuRunner g(cfg, 0, DType::BF16, AdamWConfig{}, B, true);
    g.upload_params(m.params.data());
    std::vector<double> losses;
    for (int i = 0; i < 3; ++i) {
      Rng dp(40 + i);
      g.begin_step();
      if (device) {
        KAT_CUDA_CHECK(cudaMemcpy(dx.data(), xs[i].data(), ni * sizeof(float), cudaMemcpyHostToDevice));
        KAT_CUDA_CHECK(cudaMemcpy(dt.data(), ts[i].data(), nt * sizeof(float), cudaMemcpyHostToDevice));
        g.stage_device(dx.data(), dt.data(), B);
        // The source may be overwritten as soon as stage_device returns.
        KAT_CUDA_CHECK(cudaMemset(dx.data(), 0xFF, ni * sizeof(float)));
      } else {
        g.stage(xs[i].data(), ts[i].data(), B);
      }
      g.compute_staged(1, &dp);
      losses.push_back(g.staged_loss());
      g.finish_step(1e-3, 0.0);
    }
    std::vector<float> p(m.params.size());
    g.download_params(p.data());
    return std::make_pair(losses, p);
  };
  const auto host = run(false), dev = run(true);
  EXPECT_EQ(host.first, dev.first);
  EXPECT_TRUE(host.second == dev.second);
}

#ifdef KAT_HAVE_NVJPEG

namespace {

class GpuDataDir : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!cuda_available()) GTEST_SKIP() << "no GPU";
    dir_ = test::temp_path("kat_gpu_data");
    fs::remove_all(dir_);
    fs::create_directories(dir_);
  }
  void TearDown() override {
    if (!dir_.empty()) fs::remove_all(dir_);
  }
  std::string dir_;
};

struct Decoded {
  std::vector<std::vector<uint8_t>> px;
  std::vector<char> ok;
  std::vector<std::string> errors;
  data::cuda::DecodeStats stats;
};

// Files read and parsed for NvjpegDecoder::decode, with a device buffer per image.
struct EncodedBatch {
  explicit EncodedBatch(const std::vector<std::string>& files) : names(files) {
    bytes.resize(files.size());
    enc.resize(files.size());
    dst.resize(files.size());
    for (size_t i = 0; i < files.size(); ++i) {
      bytes[i] = test::read_file_bytes(files[i]);
      enc[i].data = bytes[i].data();
      enc[i].size = bytes[i].size();
      enc[i].name = &names[i];
      enc[i].header = data::parse_image_header(bytes[i].data(), bytes[i].size(), files[i]);
      dst[i].allocate(size_t(enc[i].header.height) * enc[i].header.width * enc[i].header.channels);
      ptr.push_back(dst[i].data());
    }
  }
  int size() const { return int(enc.size()); }
  // Every output byte set to `poison`, on `stream`.
  void poison(uint8_t value, cudaStream_t stream) {
    for (auto& d : dst) KAT_CUDA_CHECK(cudaMemsetAsync(d.data(), value, d.size(), stream));
  }
  std::vector<std::vector<uint8_t>> download_all() const {
    std::vector<std::vector<uint8_t>> px;
    for (const auto& d : dst) px.push_back(download(d.data(), d.size()));
    return px;
  }
  std::vector<std::string> names;
  std::vector<std::vector<uint8_t>> bytes;
  std::vector<data::cuda::EncodedImage> enc;
  std::vector<cuda::DeviceBuffer<uint8_t>> dst;
  std::vector<uint8_t*> ptr;
};

// Decodes files (one batch) with a fresh NvjpegDecoder into device buffers first filled with
// `poison`, and downloads them (each in the file's channels).
Decoded gpu_decode(const std::vector<std::string>& files, uint8_t poison) {
  EncodedBatch in(files);
  cuda::CudaStream stream = cuda::CudaStream::create();
  in.poison(poison, stream);
  data::cuda::NvjpegDecoder dec(in.size());
  Decoded d;
  dec.decode(in.enc.data(), in.size(), in.ptr.data(), stream, d.ok, d.errors);
  stream.synchronize();
  d.px = in.download_all();
  d.stats = dec.stats();
  std::printf("  nvJPEG backend %s: %lld hardware, %lld cuda, %lld cpu, %lld bad\n", dec.backend().c_str(),
              (long long)d.stats.hardware, (long long)d.stats.cuda, (long long)d.stats.cpu,
              (long long)d.stats.bad);
  return d;
}

// |GPU pixels - libjpeg-turbo's decode of the same file|: the largest and the mean, in levels.
struct LibjpegDiff {
  int max = 0;
  double mean = 0;
};
LibjpegDiff diff_with_libjpeg(const std::string& file, const std::vector<uint8_t>& gpu_px) {
  int h = 0, w = 0, c = 0;
  std::vector<uint8_t> ref;
  std::string err;
  const auto bytes = test::read_file_bytes(file);
  KAT_CHECK(data::cuda::cpu_decode(bytes.data(), bytes.size(), file, h, w, c, ref, &err), err);
  KAT_CHECK(ref.size() == gpu_px.size(), file, ": libjpeg gives ", ref.size(), " bytes, the GPU ", gpu_px.size());
  LibjpegDiff d;
  double sum = 0;
  for (size_t k = 0; k < ref.size(); ++k) {
    const int e = std::abs(int(ref[k]) - int(gpu_px[k]));
    d.max = std::max(d.max, e);
    sum += e;
  }
  d.mean = ref.empty() ? 0.0 : sum / double(ref.size());
  return d;
}

}  // namespace

// Every kind of JPEG, in one batch (the hardware, CUDA-core and CPU paths side by side), against
// libjpeg-turbo (the CPU loader's decode), each in the file's channels. Bounds (levels of 255):
//  - files the CPU path takes (CMYK, YCCK): equal, it is the same code;
//  - gray and 4:4:4 files: max 3. Both decoders run an integer IDCT of their own (libjpeg-turbo's
//    "islow" vs nvJPEG's) and a YCbCr -> RGB conversion of their own: +-1 in Y, Cb, Cr each, which
//    the conversion (Cr x 1.402) can take to 3 in R;
//  - subsampled chroma (4:2:0, 4:2:2): max 14, mean <= 1.5. libjpeg's "fancy" upsampling is a
//    triangle filter; nvJPEG's (interpolated where the handle took
//    NVJPEG_FLAGS_UPSAMPLING_WITH_INTERPOLATION, else replicated) weights the neighbours differently.
//    Where the test pattern's sawtooth ripple jumps by 22 levels, the 2x-subsampled chroma sees the
//    jump between two samples and the two upsamplers can disagree by about half of it (11) plus the
//    rounding of the IDCT and colour conversion (3); elsewhere the pattern is smooth, hence the mean.
// The printed figures are the measured ones.
TEST_F(GpuDataDir, NvjpegMatchesLibjpegOnEveryVariant) {
  std::vector<std::string> files;
  const auto variants = test::jpeg_variants();
  for (const auto& v : variants) {
    files.push_back(dir_ + "/" + v.name + ".jpg");
    test::write_jpeg_variant(files.back(), v);
  }
  const Decoded a = gpu_decode(files, 0x00), b = gpu_decode(files, 0xFF);
  EXPECT_EQ(a.stats.bad, 0);
  EXPECT_GE(a.stats.cpu, 2);  // CMYK, YCCK (and whatever nvJPEG declines, e.g. a 1-row image)
  EXPECT_GE(a.stats.hardware + a.stats.cuda, int64_t(variants.size()) - 3);
  for (size_t i = 0; i < files.size(); ++i) {
    const auto& v = variants[i];
    SCOPED_TRACE(v.name);
    ASSERT_TRUE(a.ok[i]) << a.errors[i];
    // Two poisons, one result: every output byte was written.
    EXPECT_TRUE(a.px[i] == b.px[i]) << "output depends on the buffer's previous contents";
    const LibjpegDiff df = diff_with_libjpeg(files[i], a.px[i]);
    const int max_diff = df.max;
    const double mean = df.mean;
    std::printf("  %-14s c=%d: max |gpu - libjpeg| %d, mean %.3f\n", v.name.c_str(), v.components, max_diff, mean);
    if (v.components == 4) {
      EXPECT_EQ(max_diff, 0);
    } else if (v.components == 1 || (v.luma_h == 1 && v.luma_v == 1)) {
      EXPECT_LE(max_diff, 3);
    } else {
      EXPECT_LE(max_diff, 14);
      EXPECT_LE(mean, 1.5);
    }
  }
}

// nvJPEG's buffers from memory the decoder keeps (KAT_NVJPEG_ALLOCATOR=kept: a stream-ordered
// device pool and a pinned free list instead of cudaMalloc/cudaFree): the same pixels as nvJPEG's
// own allocators, batch after batch on one decoder (the reuse path), every output byte written.
// Prints how often nvJPEG asked for memory after each batch: flat after the first means it keeps
// its buffers itself; growing means it allocates per batch (cudaFree's device-wide wait without us).
TEST_F(GpuDataDir, KeptMemoryDecodesAlike) {
  std::vector<std::string> files;
  for (const auto& v : test::jpeg_variants()) {
    files.push_back(dir_ + "/" + v.name + ".jpg");
    test::write_jpeg_variant(files.back(), v);
  }
  const Decoded ref = gpu_decode(files, 0x00);  // nvJPEG's own allocators
  EncodedBatch in(files);
  ASSERT_EQ(setenv("KAT_NVJPEG_ALLOCATOR", "kept", 1), 0);
  std::unique_ptr<data::cuda::NvjpegDecoder> dec;
  try {
    dec = std::make_unique<data::cuda::NvjpegDecoder>(in.size());
  } catch (...) {
    unsetenv("KAT_NVJPEG_ALLOCATOR");
    throw;
  }
  unsetenv("KAT_NVJPEG_ALLOCATOR");
  cuda::CudaStream stream = cuda::CudaStream::create();
  for (int batch = 0; batch < 4; ++batch) {
    SCOPED_TRACE(batch);
    in.poison(batch % 2 ? 0xFF : 0x5A, stream);
    std::vector<char> ok;
    std::vector<std::string> errors;
    dec->decode(in.enc.data(), in.size(), in.ptr.data(), stream, ok, errors);
    stream.synchronize();
    const data::cuda::DecodeStats st = dec->stats();
    std::printf("  kept memory, after batch %d: nvJPEG asked for device memory %lld, pinned %lld times\n", batch,
                (long long)st.device_allocs, (long long)st.pinned_allocs);
    EXPECT_GE(st.device_allocs, 0) << "KAT_NVJPEG_ALLOCATOR=kept was not taken";
    EXPECT_GE(st.pinned_allocs, 0);
    const auto px = in.download_all();
    for (size_t i = 0; i < files.size(); ++i) {
      SCOPED_TRACE(files[i]);
      ASSERT_EQ(bool(ok[i]), bool(ref.ok[i])) << errors[i];
      EXPECT_TRUE(px[i] == ref.px[i]) << "pixels differ from nvJPEG's own allocators";
    }
  }
  EXPECT_EQ(ref.stats.device_allocs, -1);  // the default allocators are not counted
}

// The planar-YUV conversion kernel (data/cuda/ycbcr_to_rgb.h) against its CPU reference
// (data/ycbcr.h, itself equal to libjpeg-turbo: tests/test_ycbcr.cpp) on random planes of every
// subsampling it takes, odd and tiny sizes, a batch of them in one call, outputs poisoned twice:
// the same integer arithmetic on both sides, so equal bit for bit.
TEST_F(GpuDataDir, YcbcrKernelEqualsCpu) {
  const int factors[][2] = {{1, 1}, {2, 1}, {2, 2}, {1, 2}};
  const int sizes[][2] = {{375, 500}, {37, 53}, {1, 17}, {17, 1}, {4, 3}, {1, 1}};
  struct Image {
    data::ycbcr::Planes host;
    std::vector<uint8_t> y, cb, cr, want;
    cuda::DeviceBuffer<uint8_t> dy, dcb, dcr, rgb;
  };
  std::vector<Image> ims;
  ims.reserve(std::size(factors) * std::size(sizes));
  Rng rng(7);
  for (const auto& f : factors)
    for (const auto& hw : sizes) {
      Image& im = ims.emplace_back();
      data::ycbcr::Planes& p = im.host;
      p.height = hw[0], p.width = hw[1], p.h_factor = f[0], p.v_factor = f[1];
      p.c_width = (p.width + f[0] - 1) / f[0], p.c_height = (p.height + f[1] - 1) / f[1];
      p.y_pitch = p.width + 3, p.c_pitch = p.c_width + 5;  // pitches wider than the rows
      im.y.resize(size_t(p.y_pitch) * p.height);
      im.cb.resize(size_t(p.c_pitch) * p.c_height);
      im.cr.resize(im.cb.size());
      for (auto* v : {&im.y, &im.cb, &im.cr})
        for (auto& b : *v) b = uint8_t(rng.next_u64() & 0xFF);
      p.y = im.y.data(), p.cb = im.cb.data(), p.cr = im.cr.data();
      im.want.resize(size_t(p.width) * p.height * 3);
      data::ycbcr::to_rgb_image(p, im.want.data());
    }
  std::vector<data::cuda::YcbcrJob> jobs;
  for (Image& im : ims) {
    im.dy.allocate(im.y.size());
    im.dcb.allocate(im.cb.size());
    im.dcr.allocate(im.cr.size());
    im.rgb.allocate(im.want.size());
    KAT_CUDA_CHECK(cudaMemcpy(im.dy.data(), im.y.data(), im.y.size(), cudaMemcpyHostToDevice));
    KAT_CUDA_CHECK(cudaMemcpy(im.dcb.data(), im.cb.data(), im.cb.size(), cudaMemcpyHostToDevice));
    KAT_CUDA_CHECK(cudaMemcpy(im.dcr.data(), im.cr.data(), im.cr.size(), cudaMemcpyHostToDevice));
    data::cuda::YcbcrJob j;
    j.planes = im.host;
    j.planes.y = im.dy.data(), j.planes.cb = im.dcb.data(), j.planes.cr = im.dcr.data();
    j.rgb = im.rgb.data();
    jobs.push_back(j);
  }
  cuda::CudaStream stream = cuda::CudaStream::create();
  for (uint8_t poison : {uint8_t(0x00), uint8_t(0xFF)}) {
    for (Image& im : ims) KAT_CUDA_CHECK(cudaMemsetAsync(im.rgb.data(), poison, im.rgb.size(), stream));
    data::cuda::ycbcr_to_rgb(jobs.data(), int(jobs.size()), stream);
    stream.synchronize();
    for (const Image& im : ims) {
      SCOPED_TRACE(std::to_string(im.host.height) + "x" + std::to_string(im.host.width) + " factors " +
                   std::to_string(im.host.h_factor) + "x" + std::to_string(im.host.v_factor));
      EXPECT_TRUE(download(im.rgb.data(), im.rgb.size()) == im.want);
    }
  }
}

// KAT_NVJPEG_OUTPUT=yuv and =nv12: the hardware decoder's planes converted by our kernel, against
// libjpeg-turbo on every variant. Only the IDCTs differ then (nvJPEG's vs libjpeg-turbo's islow:
// +-1 in Y, Cb and Cr each; upsampling averages such errors, it does not grow them), which the
// conversion takes to at most 1 + 1.772 -> 3 levels in a channel, 4 with the rounding of the
// fixed-point products: max 4 on every file our kernel converted, subsampled ones included
// (nvJPEG's own conversion: up to 14, see above). Files the mode sends elsewhere (progressive and
// gray files; with nv12 all but 4:2:0) keep the bounds of NvjpegMatchesLibjpegOnEveryVariant.
// Every output byte written (two poisons, one result).
TEST_F(GpuDataDir, YuvOutputMatchesLibjpeg) {
  std::vector<std::string> files;
  const auto variants = test::jpeg_variants();
  for (const auto& v : variants) {
    files.push_back(dir_ + "/" + v.name + ".jpg");
    test::write_jpeg_variant(files.back(), v);
  }
  for (const std::string mode : {"yuv", "nv12"}) {
    SCOPED_TRACE("KAT_NVJPEG_OUTPUT=" + mode);
    ASSERT_EQ(setenv("KAT_NVJPEG_OUTPUT", mode.c_str(), 1), 0);
    Decoded a, b;
    std::string backend;
    try {
      a = gpu_decode(files, 0x00);
      b = gpu_decode(files, 0xFF);
      backend = data::cuda::NvjpegDecoder(1).backend();
    } catch (...) {
      unsetenv("KAT_NVJPEG_OUTPUT");
      throw;
    }
    unsetenv("KAT_NVJPEG_OUTPUT");
    if (backend.find("hardware") == std::string::npos) GTEST_SKIP() << "no JPEG engine on this GPU: " << backend;
    EXPECT_NE(backend.find(mode == "yuv" ? "planar output converted by kat" : "NV12 output converted by kat"),
              std::string::npos)
        << backend;
    EXPECT_GE(a.stats.hardware, 4);  // the baseline 4:2:0 colour files at least
    EXPECT_EQ(a.stats.bad, 0);
    for (size_t i = 0; i < files.size(); ++i) {
      const auto& v = variants[i];
      SCOPED_TRACE(v.name);
      ASSERT_TRUE(a.ok[i]) << a.errors[i];
      EXPECT_TRUE(a.px[i] == b.px[i]) << "output depends on the buffer's previous contents";
      const LibjpegDiff df = diff_with_libjpeg(files[i], a.px[i]);
      std::printf("  %-5s %-14s c=%d: max |gpu - libjpeg| %d, mean %.3f\n", mode.c_str(), v.name.c_str(),
                  v.components, df.max, df.mean);
      const bool subsampled = !(v.luma_h == 1 && v.luma_v == 1);
      const bool ours = v.components == 3 && !v.progressive && (mode == "yuv" || (v.luma_h == 2 && v.luma_v == 2));
      if (v.components == 4)
        EXPECT_EQ(df.max, 0);
      else if (ours)
        EXPECT_LE(df.max, 4);
      else
        EXPECT_LE(df.max, v.components == 1 || !subsampled ? 3 : 14);
    }
  }
}

// A truncated JPEG (header intact, scan cut) and garbage after the header: the file is named and
// counted, the other images of the batch decode.
TEST_F(GpuDataDir, TruncatedFileNamedAndCounted) {
  const std::string good = dir_ + "/good.jpg", cut = dir_ + "/cut.jpg";
  test::write_jpeg_variant(good, {"good", 120, 160});
  const auto bytes = test::read_file_bytes(good);
  test::write_truncated(good, cut, bytes.size() * 3 / 5);
  const Decoded d = gpu_decode({good, cut, good}, 0);
  EXPECT_TRUE(d.ok[0]);
  EXPECT_TRUE(d.ok[2]);
  EXPECT_FALSE(d.ok[1]);
  EXPECT_NE(d.errors[1].find(cut), std::string::npos) << d.errors[1];
  EXPECT_EQ(d.stats.bad, 1);
  EXPECT_TRUE(d.px[0] == d.px[2]);
}

namespace {

// A lazy folder (train split) of n JPEGs of mixed kinds and sizes in 2 classes, plus a PNG.
data::Dataset write_folder(const std::string& root, int n, int size) {
  const auto kinds = test::jpeg_variants();
  for (int i = 0; i < n; ++i) {
    const fs::path cdir = fs::path(root) / (i % 2 ? "b" : "a");
    fs::create_directories(cdir);
    test::JpegVariant v = kinds[size_t(i) % kinds.size()];
    v.h = 40 + (i * 7) % 31;
    v.w = 36 + (i * 11) % 45;
    char name[32];
    std::snprintf(name, sizeof name, "%03d.jpg", i);
    test::write_jpeg_variant((cdir / name).string(), v, i);
  }
  const auto png = test::test_pattern(45, 50, 3, 3);
  data::write_png((fs::path(root) / "a" / "png.png").string(), 45, 50, 3, png.data());
  return data::load_image_folder(root, size, false, nullptr, 3, nullptr, true);
}

data::LoaderConfig deit_config(int batch, int size, bool erase) {
  data::LoaderConfig c;
  c.batch_size = batch;
  c.seed = 17;
  c.num_workers = 2;
  c.aug.out_size = size;
  c.aug.crop = "rrc";
  c.aug.hflip = true;
  c.aug.randaug_n = 2;
  c.aug.randaug_m = 9;
  c.aug.random_erase = erase ? 0.25 : 0.0;
  c.mix.mixup_alpha = 0.8;
  c.mix.cutmix_alpha = 1.0;
  c.mix.label_smoothing = 0.1;
  return c;
}

struct HostBatch {
  std::vector<float> images, targets;
  std::vector<int32_t> labels;
  std::vector<int64_t> indices;
  data::MixResult mix;
};

HostBatch to_host(const data::cuda::GpuBatch& b) {
  HostBatch h;
  h.images = download(b.images, size_t(b.n) * b.c * b.h * b.w);
  h.targets = download(b.targets, size_t(b.n) * b.classes);
  h.labels = b.labels;
  h.indices = b.indices;
  h.mix = b.mix;
  return h;
}

std::vector<HostBatch> epoch_batches(data::cuda::GpuLoader& l, int64_t epoch, int64_t first = 0) {
  std::vector<HostBatch> v;
  l.start_epoch(epoch, first);
  data::cuda::GpuBatch b;
  while (l.next(b)) v.push_back(to_host(b));
  return v;
}

bool same(const HostBatch& a, const HostBatch& b) {
  return a.images == b.images && a.targets == b.targets && a.labels == b.labels && a.indices == b.indices &&
         a.mix.lam == b.mix.lam && a.mix.applied == b.mix.applied && a.mix.cutmix == b.mix.cutmix;
}

}  // namespace

TEST_F(GpuDataDir, LoaderDeterministicAcrossRunsThreadsAndResume) {
  const data::Dataset ds = write_folder(dir_, 45, 32);
  const data::LoaderConfig cfg = deit_config(8, 32, true);
  data::cuda::GpuLoaderOptions o1, o4;
  o1.read_threads = 1;
  o4.read_threads = 4;
  data::cuda::GpuLoader a(ds, cfg, o1), b(ds, cfg, o4);
  ASSERT_EQ(a.batches_per_epoch(), 5);  // 46 files, drop_last
  for (const int64_t epoch : {0, 1}) {
    const auto ea = epoch_batches(a, epoch), eb = epoch_batches(b, epoch);
    ASSERT_EQ(ea.size(), 5u);
    ASSERT_EQ(eb.size(), 5u);
    for (size_t i = 0; i < ea.size(); ++i) EXPECT_TRUE(same(ea[i], eb[i])) << "epoch " << epoch << " batch " << i;
    // Resume at batch 3 (after another epoch was read, so stale state would show).
    const auto tail = epoch_batches(b, epoch, 3);
    ASSERT_EQ(tail.size(), 2u);
    for (size_t i = 0; i < tail.size(); ++i) EXPECT_TRUE(same(ea[3 + i], tail[i])) << "resumed batch " << 3 + i;
    for (const auto& hb : ea)
      for (float v : hb.images) ASSERT_TRUE(std::isfinite(v));
  }
  // Restart in the middle of an epoch, with batches still in flight.
  a.start_epoch(1, 0);
  data::cuda::GpuBatch tmp;
  ASSERT_TRUE(a.next(tmp));
  const auto again = epoch_batches(a, 0, 1);
  const auto ref = epoch_batches(b, 0);
  ASSERT_EQ(again.size(), 4u);
  for (size_t i = 0; i < again.size(); ++i) EXPECT_TRUE(same(ref[1 + i], again[i]));
  const auto st = a.decode_stats();
  EXPECT_GT(st.cpu, 0);  // the PNG and the CMYK files
  EXPECT_GT(st.hardware + st.cuda, 0);
}

// The CPU decode share: which files is a pure function of (index, share), about `share` of them,
// nested (what 0.25 picks, 0.5 picks too).
TEST(GpuData, CpuDecodeChoiceIsAFixedShare) {
  const int n = 20000;
  for (const double share : {0.0, 0.25, 0.4, 0.5, 1.0}) {
    int chosen = 0;
    for (int64_t i = 0; i < n; ++i) {
      const bool c = data::cuda::cpu_decode_chosen(i, share);
      chosen += c;
      EXPECT_EQ(c, data::cuda::cpu_decode_chosen(i, share));
      if (c && share <= 0.5) EXPECT_TRUE(data::cuda::cpu_decode_chosen(i, 0.5)) << i;
    }
    // Binomial: sd = sqrt(n p (1 - p)) <= 71 images; 0.02 n = 400 is over 5 sd.
    EXPECT_NEAR(double(chosen) / n, share, 0.02) << "share " << share;
  }
}

// cpu_decode_share 0.5 (half the JPEGs decoded by libjpeg-turbo in the reader threads, uploaded from
// pinned memory) and two or three decode streams: bitwise the same batches run to run and between
// one, two and three decode streams; the same order, labels, targets and mixing as share 0 (the pixels differ by
// the decoders' rounding, bounded in NvjpegMatchesLibjpegOnEveryVariant).
TEST_F(GpuDataDir, LoaderCpuShareAndTwoStreamsDeterministic) {
  const data::Dataset ds = write_folder(dir_, 45, 32);
  const data::LoaderConfig cfg = deit_config(8, 32, true);
  data::cuda::GpuLoaderOptions o0, o5, o5b, o5c;
  o0.read_threads = 3;
  o5.read_threads = 3;
  o5.cpu_decode_share = 0.5;
  o5b.read_threads = 2;
  o5b.cpu_decode_share = 0.5;
  o5b.decode_streams = 2;
  o5c.read_threads = 4;
  o5c.cpu_decode_share = 0.5;
  o5c.decode_streams = 3;
  o5c.host_slots = 3;  // fewer than the default 2 + 2 x 3: the decode threads wait for files, same batches
  data::cuda::GpuLoader a(ds, cfg, o0), b(ds, cfg, o5), c(ds, cfg, o5b), d(ds, cfg, o5c);
  data::cuda::DecodeStats sa, sb;  // of epoch 0 (nothing is built past an epoch's last batch)
  for (const int64_t epoch : {0, 1}) {
    const auto ea = epoch_batches(a, epoch), eb = epoch_batches(b, epoch);
    if (epoch == 0) {
      sa = a.decode_stats();
      sb = b.decode_stats();
    }
    const auto eb2 = epoch_batches(b, epoch), ec = epoch_batches(c, epoch), ed = epoch_batches(d, epoch);
    ASSERT_EQ(ea.size(), 5u);
    ASSERT_EQ(eb.size(), 5u);
    ASSERT_EQ(eb2.size(), 5u);
    ASSERT_EQ(ec.size(), 5u);
    ASSERT_EQ(ed.size(), 5u);
    for (size_t i = 0; i < ea.size(); ++i) {
      EXPECT_TRUE(same(eb[i], ed[i])) << "share 0.5, 1 vs 3 decode streams, epoch " << epoch << " batch " << i;
      EXPECT_TRUE(same(eb[i], eb2[i])) << "share 0.5, run to run, epoch " << epoch << " batch " << i;
      EXPECT_TRUE(same(eb[i], ec[i])) << "share 0.5, 1 vs 2 decode streams, epoch " << epoch << " batch " << i;
      EXPECT_EQ(ea[i].indices, eb[i].indices);
      EXPECT_EQ(ea[i].labels, eb[i].labels);
      EXPECT_EQ(ea[i].targets, eb[i].targets);
      EXPECT_EQ(ea[i].mix.lam, eb[i].mix.lam);
      EXPECT_EQ(ea[i].mix.applied, eb[i].mix.applied);
      EXPECT_EQ(ea[i].mix.cutmix, eb[i].mix.cutmix);
      for (float v : eb[i].images) ASSERT_TRUE(std::isfinite(v));
    }
  }
  // Resume mid-epoch with two streams and the share.
  const auto ref = epoch_batches(b, 1);
  const auto tail = epoch_batches(c, 1, 2);
  ASSERT_EQ(tail.size(), 3u);
  for (size_t i = 0; i < tail.size(); ++i) EXPECT_TRUE(same(ref[2 + i], tail[i])) << "resumed batch " << 2 + i;
  // The share moved files of epoch 0 from nvJPEG to the CPU, none lost.
  EXPECT_GT(sb.cpu, sa.cpu);
  EXPECT_LT(sb.hardware + sb.cuda, sa.hardware + sa.cuda);
  EXPECT_EQ(sb.hardware + sb.cuda + sb.cpu + sb.bad, sa.hardware + sa.cuda + sa.cpu + sa.bad);
  EXPECT_GT(b.times().cpu_decode, 0.0);
  EXPECT_GT(b.times().batches, 0);
  // GPU time per batch, from the events around each phase (10 batches: arenas and out slots reused).
  EXPECT_GT(b.times().gpu_decode, 0.0);
  EXPECT_GT(b.times().gpu_augment, 0.0);
  EXPECT_LT(b.times().gpu_augment, 10.0);
}

// The same batches as the CPU loader decides them: order, labels, mixing; the pixels near (resampling
// and decode rounding). No erasing here: its noise is drawn on the device and differs by design.
TEST_F(GpuDataDir, LoaderAgreesWithCpuLoader) {
  const data::Dataset ds = write_folder(dir_, 45, 32);
  const data::LoaderConfig cfg = deit_config(8, 32, false);
  data::cuda::GpuLoader g(ds, cfg);
  data::Loader c(ds, cfg);
  g.start_epoch(2);
  c.start_epoch(2);
  data::cuda::GpuBatch gb;
  data::Batch cb;
  double sum = 0;
  size_t count = 0;
  while (g.next(gb)) {
    ASSERT_TRUE(c.next(cb));
    const HostBatch h = to_host(gb);
    EXPECT_EQ(h.indices, cb.indices);
    EXPECT_EQ(h.labels, cb.labels);
    EXPECT_EQ(h.mix.applied, cb.mix.applied);
    EXPECT_EQ(h.mix.cutmix, cb.mix.cutmix);
    EXPECT_EQ(h.mix.lam, cb.mix.lam);
    ASSERT_EQ(h.targets.size(), cb.targets.size());
    for (size_t k = 0; k < h.targets.size(); ++k) EXPECT_NEAR(h.targets[k], cb.targets[k], 1e-6f);
    ASSERT_EQ(h.images.size(), cb.images.size());
    for (size_t k = 0; k < h.images.size(); ++k) sum += std::abs(h.images[k] - cb.images[k]);
    count += h.images.size();
  }
  EXPECT_FALSE(c.next(cb));
  // Normalised units (std 0.5: one level is 1/127.5 = 0.0078). Decode differences (above) of ~1 level
  // on average, carried through resampling and RandAugment (whose thresholds, e.g. Solarize and
  // Posterize, turn a one-level difference into a large one on the few pixels at the threshold): a
  // mean of 4 levels bounds it loosely.
  const double mean = sum / double(count);
  std::printf("  GPU vs CPU loader: mean |diff| %.4f (%.2f levels)\n", mean, mean * 127.5);
  EXPECT_LE(mean, 4.0 / 127.5);
}

TEST_F(GpuDataDir, BadFileNamedOrSkipped) {
  data::Dataset ds = write_folder(dir_, 15, 32);
  const std::string bad = (fs::path(dir_) / "a" / "000.jpg").string();
  const auto bytes = test::read_file_bytes(bad);
  test::write_truncated(bad, bad + ".tmp", bytes.size() / 2);
  fs::rename(bad + ".tmp", bad);
  data::LoaderConfig cfg = deit_config(4, 32, true);
  cfg.shuffle = false;  // the bad file is the first: batch 0
  {
    data::cuda::GpuLoader l(ds, cfg);
    l.start_epoch(0);
    data::cuda::GpuBatch b;
    test::expect_error([&] { l.next(b); }, {bad, "batch 0"});
    ASSERT_TRUE(l.next(b));  // the next batches are fine
    EXPECT_EQ(b.n, 4);
  }
  data::cuda::GpuLoaderOptions o;
  o.skip_bad = true;
  data::cuda::GpuLoader l(ds, cfg, o);
  l.start_epoch(0);
  data::cuda::GpuBatch b;
  ASSERT_TRUE(l.next(b));
  EXPECT_EQ(b.n, 3);
  EXPECT_EQ(l.bad_files(), 1);
  int batches = 1;
  while (l.next(b)) ++batches;
  EXPECT_EQ(batches, 4);
}

// A stage that never finishes is reported, not waited for forever: a FIFO in place of a JPEG blocks
// its reader in open() (no writer), the pipeline stops making progress, and next() gives up after
// stall_timeout_s with what the batch waits for. A writer then unblocks the reader (the file is
// named "not a regular file"), so the loader's threads can be joined.
TEST_F(GpuDataDir, StalledPipelineIsReported) {
  data::Dataset ds = write_folder(dir_, 15, 32);
  const std::string fifo = (fs::path(dir_) / "a" / "000.jpg").string();
  fs::remove(fifo);
  ASSERT_EQ(::mkfifo(fifo.c_str(), 0600), 0);
  data::LoaderConfig cfg = deit_config(4, 32, true);
  cfg.shuffle = false;  // the FIFO is the first file: batch 0
  data::cuda::GpuLoaderOptions o;
  o.read_threads = 2;
  o.stall_timeout_s = 2;
  data::cuda::GpuLoader l(ds, cfg, o);
  l.start_epoch(0);
  data::cuda::GpuBatch b;
  const auto t0 = std::chrono::steady_clock::now();
  test::expect_error([&] { l.next(b); }, {"no progress in 2 s", "batch 0 of epoch 0", "3 of 4 files read"});
  const double waited = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  EXPECT_GE(waited, 2.0);
  EXPECT_LT(waited, 30.0);
  const int w = ::open(fifo.c_str(), O_WRONLY | O_NONBLOCK);  // succeeds: the reader has it open
  ASSERT_GE(w, 0);
  ::close(w);
}

// `kat eval --decode gpu`: the GPU eval fit (nvJPEG + bicubic fit + center crop on the device) gives
// the CPU evaluation's result up to the decode: same count, loss within 0.05 and at most 2 of the 46
// predictions different (pixels differ by about one level on average, see above, which moves a
// freshly initialised model's logits by far less than its loss scale; a near-tie may flip).
TEST_F(GpuDataDir, EvalGpuDecodeAgreesWithCpu) {
  write_folder(dir_ + "/val", 45, 28);
  const data::Dataset ds = data::load_image_folder(dir_ + "/val", 28, false, nullptr, 3, nullptr, true, 0.875);
  ModelConfig mc = ModelConfig::load("kat_micro_patch4_28");
  for (const char* o : {"depth=2", "in_chans=3", "num_classes=2"}) mc.apply_override(o);
  KatModel m(mc);
  m.init_params(3);
  GpuRunner g(mc, 0, DType::BF16, AdamWConfig{}, 16, false);
  g.upload_params(m.params.data());
  data::LoaderConfig lc;
  lc.aug.out_size = 28;
  const data::LoaderConfig ec = data::LoaderConfig::eval(lc, 16);
  const EvalResult cpu = evaluate(g, ds, ec, false);
  int64_t skipped = -1;
  const EvalResult gpu = evaluate_gpu_decode(g, ds, ec, 0, false, &skipped, false);
  EXPECT_EQ(skipped, 0);
  EXPECT_EQ(gpu.count, 46);
  EXPECT_EQ(cpu.count, gpu.count);
  EXPECT_NEAR(cpu.loss, gpu.loss, 0.05);
  EXPECT_LE(std::abs(cpu.top1 - gpu.top1), 100.0 * 2 / 46 + 1e-9);
  std::printf("  eval cpu decode: top-1 %.2f loss %.5f; gpu decode: top-1 %.2f loss %.5f\n", cpu.top1, cpu.loss,
              gpu.top1, gpu.loss);
}

// `kat train --decode gpu` from a folder of JPEGs: stopped mid-epoch and resumed, bitwise the
// straight run (the CPU trainer test's recipe, RRC + flip on; a gray model on colour files: the
// augmenter converts to gray as the CPU loader does; evaluation of the lazy test split on the GPU).
TEST_F(GpuDataDir, TrainFromFolderResumesBitwise) {
  const fs::path root = fs::path(dir_) / "ds";
  write_folder((root / "train").string(), 383, 28);  // + 1 PNG = 384: 6 steps of 32 x 2
  write_folder((root / "val").string(), 63, 28);
  TrainConfig c = test::tiny_run("");
  c.data = "folder:" + root.string();
  c.model_overrides.push_back("num_classes=2");
  c.device = "cuda";
  c.devices = {0};
  c.decode = "gpu";
  c.lazy_data = true;  // the test split too: evaluation through the GPU pipeline
  c.crop = "rrc";
  c.hflip = true;
  c.train_subset = 0;
  c.test_subset = 0;
  const std::string a = dir_ + "/run_a", b = dir_ + "/run_b";
  const auto r = test::check_resume_bitwise(c, a, b);
  for (double l : r.full.step_losses) EXPECT_TRUE(std::isfinite(l));
}

#endif  // KAT_HAVE_NVJPEG
