#include <gtest/gtest.h>

#include <png.h>
#include <unistd.h>
#include <zlib.h>
#include <array>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <numeric>
#include <string>
#include <vector>

#include "kat/core/error.h"
#include "kat/core/rng.h"
#include "kat/data/data.h"
#include "kat/io/safetensors.h"
#include "test_util.h"

namespace fs = std::filesystem;
using namespace kat;
using namespace kat::data;

namespace {

// Per-test temp dir, removed at the end.
class TempDir {
 public:
  TempDir() {
    const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
    path_ = fs::temp_directory_path() /
            ("kat_data_" + std::to_string(::getpid()) + "_" + info->test_suite_name() + "_" + info->name());
    fs::remove_all(path_);
    fs::create_directories(path_);
  }
  ~TempDir() {
    std::error_code ec;
    fs::remove_all(path_, ec);
  }
  std::string operator/(const std::string& name) const { return (path_ / name).string(); }
  const fs::path& path() const { return path_; }

 private:
  fs::path path_;
};

void put_be32(std::vector<uint8_t>& v, uint32_t x) {
  v.push_back(uint8_t(x >> 24));
  v.push_back(uint8_t(x >> 16));
  v.push_back(uint8_t(x >> 8));
  v.push_back(uint8_t(x));
}

void write_bytes(const std::string& path, const std::vector<uint8_t>& b) {
  std::ofstream f(path, std::ios::binary);
  f.write(reinterpret_cast<const char*>(b.data()), static_cast<std::streamsize>(b.size()));
}

void write_gz(const std::string& path, const std::vector<uint8_t>& b) {
  gzFile f = gzopen(path.c_str(), "wb");
  ASSERT_NE(f, nullptr);
  ASSERT_EQ(gzwrite(f, b.data(), static_cast<unsigned>(b.size())), static_cast<int>(b.size()));
  gzclose(f);
}

std::vector<uint8_t> idx_images(uint32_t magic, uint32_t n, uint32_t rows, uint32_t cols, size_t data_bytes) {
  std::vector<uint8_t> v;
  put_be32(v, magic);
  put_be32(v, n);
  put_be32(v, rows);
  put_be32(v, cols);
  for (size_t i = 0; i < data_bytes; ++i) v.push_back(uint8_t(i * 7 + 3));
  return v;
}

std::vector<uint8_t> idx_labels(uint32_t magic, uint32_t n, const std::vector<uint8_t>& labels) {
  std::vector<uint8_t> v;
  put_be32(v, magic);
  put_be32(v, n);
  v.insert(v.end(), labels.begin(), labels.end());
  return v;
}

using kat::test::expect_error;

const Dataset& fashion_train() {
  static const Dataset ds = load_dataset("fashion-mnist", true);
  return ds;
}

using kat::test::synthetic;

bool same_batch(const Batch& a, const Batch& b) {
  return a.n == b.n && a.c == b.c && a.h == b.h && a.w == b.w && a.classes == b.classes && a.images == b.images &&
         a.labels == b.labels && a.targets == b.targets && a.indices == b.indices;
}

std::vector<Batch> run_epoch(Loader& L, int64_t epoch, int64_t first = 0) {
  L.start_epoch(epoch, first);
  std::vector<Batch> out;
  Batch b;
  while (L.next(b)) out.push_back(b);
  return out;
}

LoaderConfig heavy_config(int workers) {
  LoaderConfig cfg;
  cfg.batch_size = 16;
  cfg.seed = 1234;
  cfg.num_workers = workers;
  cfg.prefetch = 3;
  cfg.aug.crop = "pad";
  cfg.aug.hflip = true;
  cfg.aug.randaug_n = 2;
  cfg.aug.random_erase = 0.25;
  cfg.mix.mixup_alpha = 0.8;
  cfg.mix.cutmix_alpha = 1.0;
  cfg.mix.label_smoothing = 0.1;
  return cfg;
}

}  // namespace

// ---- real Fashion-MNIST -----------------------------------------------------------------------------
TEST(DataFashionMnist, LoadsTrainAndTest) {
  const Dataset& tr = fashion_train();
  EXPECT_EQ(tr.size(), 60000u);
  EXPECT_EQ(tr.height, 28);
  EXPECT_EQ(tr.width, 28);
  EXPECT_EQ(tr.channels, 1);
  EXPECT_EQ(tr.num_classes, 10);
  EXPECT_EQ(tr.pixels.size(), 60000u * 784);
  ASSERT_EQ(tr.class_names.size(), 10u);
  EXPECT_EQ(tr.class_names[0], "T-shirt/top");
  EXPECT_EQ(tr.class_names[9], "Ankle boot");
  std::vector<int> hist(10, 0);
  for (int32_t l : tr.labels) {
    ASSERT_GE(l, 0);
    ASSERT_LT(l, 10);
    hist[l]++;
  }
  for (int k = 0; k < 10; ++k) EXPECT_EQ(hist[k], 6000);  // Fashion-MNIST is balanced
  EXPECT_GT(*std::max_element(tr.pixels.begin(), tr.pixels.end()), 200);

  const Dataset te = load_dataset("fashion-mnist", false);
  EXPECT_EQ(te.size(), 10000u);
  EXPECT_EQ(te.height, 28);
  EXPECT_EQ(te.class_names[3], "Dress");
  // Auto-detected names from the path.
  const Dataset te2 = load_idx(std::string(kFashionMnistDir) + "/t10k-images-idx3-ubyte.gz",
                               std::string(kFashionMnistDir) + "/t10k-labels-idx1-ubyte.gz");
  EXPECT_EQ(te2.class_names[8], "Bag");
  EXPECT_EQ(te2.labels, te.labels);

  const Dataset s = subset(tr, 100);
  EXPECT_EQ(s.size(), 100u);
  EXPECT_EQ(s.pixels.size(), 100u * 784);
  EXPECT_TRUE(std::equal(s.pixels.begin(), s.pixels.end(), tr.pixels.begin()));
  EXPECT_EQ(subset(tr, 1u << 30).size(), 60000u);
}

// ---- IDX -------------------------------------------------------------------------------------------------
TEST(DataIdx, RoundTripRawAndGzip) {
  TempDir t;
  const auto imgs = idx_images(0x803, 3, 4, 5, 60);
  const auto labs = idx_labels(0x801, 3, {2, 0, 9});
  write_bytes(t / "i", imgs);
  write_bytes(t / "l", labs);
  write_gz(t / "i.gz", imgs);
  write_gz(t / "l.gz", labs);
  for (const auto& [ip, lp] : {std::pair{t / "i", t / "l"}, std::pair{t / "i.gz", t / "l.gz"}}) {
    const Dataset ds = load_idx(ip, lp);
    EXPECT_EQ(ds.size(), 3u);
    EXPECT_EQ(ds.height, 4);
    EXPECT_EQ(ds.width, 5);
    EXPECT_EQ(ds.channels, 1);
    EXPECT_EQ(ds.labels, (std::vector<int32_t>{2, 0, 9}));
    EXPECT_EQ(ds.pixels, std::vector<uint8_t>(imgs.begin() + 16, imgs.end()));
    EXPECT_EQ(ds.class_names[2], "2");  // no "fashion" in the path: digit names
  }
  EXPECT_EQ(load_idx(t / "i", t / "l", "fashion").class_names[0], "T-shirt/top");
}

TEST(DataIdx, ErrorsNameFileAndIndex) {
  TempDir t;
  write_bytes(t / "good_i", idx_images(0x803, 4, 3, 3, 36));
  write_bytes(t / "good_l", idx_labels(0x801, 4, {0, 1, 2, 3}));
  // wrong magic
  write_bytes(t / "magic_i", idx_images(0x801, 4, 3, 3, 36));
  expect_error([&] { load_idx(t / "magic_i", t / "good_l"); }, {t / "magic_i", "magic", "0x00000801"});
  write_bytes(t / "magic_l", idx_labels(0x803, 4, {0, 1, 2, 3}));
  expect_error([&] { load_idx(t / "good_i", t / "magic_l"); }, {t / "magic_l", "magic"});
  // truncated images (2.5 images present), raw and gzip
  write_bytes(t / "trunc_i", idx_images(0x803, 4, 3, 3, 22));
  expect_error([&] { load_idx(t / "trunc_i", t / "good_l"); }, {"file " + t / "trunc_i", "truncated at image 2"});
  write_gz(t / "trunc_i.gz", idx_images(0x803, 4, 3, 3, 22));
  expect_error([&] { load_idx(t / "trunc_i.gz", t / "good_l"); }, {t / "trunc_i.gz", "truncated at image 2"});
  // a gzip stream cut short
  {
    write_gz(t / "cut.gz", idx_images(0x803, 4, 3, 3, 36));
    std::ifstream f(t / "cut.gz", std::ios::binary);
    std::vector<uint8_t> b((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
    b.resize(b.size() - 20);
    write_bytes(t / "cut.gz", b);
    expect_error([&] { load_idx(t / "cut.gz", t / "good_l"); }, {t / "cut.gz"});
  }
  // truncated header
  write_bytes(t / "hdr_i", {0, 0, 8, 3, 0, 0});
  expect_error([&] { load_idx(t / "hdr_i", t / "good_l"); }, {t / "hdr_i", "truncated header"});
  // truncated labels
  write_bytes(t / "trunc_l", idx_labels(0x801, 4, {0, 1}));
  expect_error([&] { load_idx(t / "good_i", t / "trunc_l"); }, {t / "trunc_l", "truncated at label 2"});
  // label out of range
  write_bytes(t / "range_l", idx_labels(0x801, 4, {0, 1, 10, 3}));
  expect_error([&] { load_idx(t / "good_i", t / "range_l"); }, {t / "range_l", "label 10 at index 2"});
  // count mismatch
  write_bytes(t / "count_l", idx_labels(0x801, 5, {0, 1, 2, 3, 4}));
  expect_error([&] { load_idx(t / "good_i", t / "count_l"); }, {t / "count_l", "5 labels", "4 images"});
  // trailing garbage
  auto extra = idx_images(0x803, 4, 3, 3, 40);
  write_bytes(t / "extra_i", extra);
  expect_error([&] { load_idx(t / "extra_i", t / "good_l"); }, {t / "extra_i", "unexpected data"});
  // missing file
  expect_error([&] { load_idx(t / "nope", t / "good_l"); }, {t / "nope", "not found"});
  EXPECT_NO_THROW(load_idx(t / "good_i", t / "good_l"));
}

// ---- CIFAR -------------------------------------------------------------------------------------------------
TEST(DataCifar, BinaryRoundTrip) {
  TempDir t;
  const int n = 3;
  std::vector<uint8_t> f10, f100;
  std::vector<std::vector<uint8_t>> chw(n, std::vector<uint8_t>(3072));
  for (int i = 0; i < n; ++i) {
    for (int j = 0; j < 3072; ++j) chw[i][j] = uint8_t((i * 31 + j * 13) & 255);
    f10.push_back(uint8_t(i * 3));  // labels 0, 3, 6
    f10.insert(f10.end(), chw[i].begin(), chw[i].end());
    f100.push_back(uint8_t(i + 5));   // coarse
    f100.push_back(uint8_t(i * 40));  // fine: 0, 40, 80
    f100.insert(f100.end(), chw[i].begin(), chw[i].end());
  }
  write_bytes(t / "data_batch_1.bin", f10);
  write_bytes(t / "data_batch_2.bin", f10);
  const Dataset d = load_cifar({t / "data_batch_1.bin", t / "data_batch_2.bin"}, 10);
  ASSERT_EQ(d.size(), 6u);
  EXPECT_EQ(d.height, 32);
  EXPECT_EQ(d.width, 32);
  EXPECT_EQ(d.channels, 3);
  EXPECT_EQ(d.labels, (std::vector<int32_t>{0, 3, 6, 0, 3, 6}));
  EXPECT_EQ(d.class_names[0], "airplane");
  for (int i = 0; i < n; ++i)
    for (int y : {0, 7, 31})
      for (int x : {0, 19, 31})
        for (int c = 0; c < 3; ++c) ASSERT_EQ(d.image(i)[(y * 32 + x) * 3 + c], chw[i][c * 1024 + y * 32 + x]);
  // class names from batches.meta.txt
  {
    std::ofstream m(t / "batches.meta.txt");
    for (int k = 0; k < 10; ++k) m << "name" << k << "\n";
    m << "\n";
  }
  EXPECT_EQ(load_cifar({t / "data_batch_1.bin"}, 10).class_names[4], "name4");

  write_bytes(t / "train.bin", f100);
  const Dataset d100 = load_cifar({t / "train.bin"}, 100);
  EXPECT_EQ(d100.labels, (std::vector<int32_t>{0, 40, 80}));
  EXPECT_EQ(d100.num_classes, 100);
  EXPECT_EQ(std::vector<uint8_t>(d100.pixels.begin(), d100.pixels.begin() + 3072),
            std::vector<uint8_t>(d.pixels.begin(), d.pixels.begin() + 3072));

  // errors
  auto bad = f10;
  bad.resize(bad.size() - 100);
  write_bytes(t / "trunc.bin", bad);
  expect_error([&] { load_cifar({t / "trunc.bin"}, 10); }, {t / "trunc.bin", "truncated at image 2"});
  bad = f10;
  bad[3073] = 10;
  write_bytes(t / "lab.bin", bad);
  expect_error([&] { load_cifar({t / "lab.bin"}, 10); }, {t / "lab.bin", "label 10 at index 1"});
  expect_error([&] { load_cifar({t / "missing.bin"}, 10); }, {t / "missing.bin"});
  expect_error([&] { load_cifar({t / "train.bin"}, 7); }, {"10 or 100"});

  // load_dataset dispatch for CIFAR-100 (train.bin / test.bin)
  write_bytes(t / "test.bin", f100);
  EXPECT_EQ(load_dataset("cifar100:" + t.path().string(), false).size(), 3u);
  expect_error([&] { load_dataset("cifar10:" + t.path().string(), false); }, {"test_batch.bin"});
}

// ---- image folder ----------------------------------------------------------------------------------------
namespace {
std::vector<uint8_t> pattern(int h, int w, int c, int seed) {
  std::vector<uint8_t> v(static_cast<size_t>(h) * w * c);
  for (size_t i = 0; i < v.size(); ++i) v[i] = uint8_t((i * 37 + seed * 101) & 255);
  return v;
}
std::vector<uint8_t> smooth(int h, int w, int c, int seed) {  // JPEG-friendly
  std::vector<uint8_t> v(static_cast<size_t>(h) * w * c);
  for (int y = 0; y < h; ++y)
    for (int x = 0; x < w; ++x)
      for (int k = 0; k < c; ++k) v[(y * w + x) * c + k] = uint8_t(40 + 10 * y + 5 * x + 30 * k + seed);
  return v;
}
void write_rgba_png(const std::string& path, int h, int w, const std::vector<uint8_t>& rgba) {
  png_image img;
  std::memset(&img, 0, sizeof(img));
  img.version = PNG_IMAGE_VERSION;
  img.width = w;
  img.height = h;
  img.format = PNG_FORMAT_RGBA;
  ASSERT_TRUE(png_image_write_to_file(&img, path.c_str(), 0, rgba.data(), 0, nullptr));
}
}  // namespace

TEST(DataImageFolder, PngJpegGrayRgbAndCorrupt) {
  TempDir t;
  const fs::path root = t.path() / "ds";
  fs::create_directories(root / "b_dog");
  fs::create_directories(root / "a_cat");
  fs::create_directories(root / ".hidden");
  const int H = 8, W = 6;
  const auto g0 = pattern(H, W, 1, 0);
  const auto c1 = pattern(H, W, 3, 1);
  write_png((root / "a_cat" / "0.png").string(), H, W, 1, g0.data());
  write_png((root / "a_cat" / "1.PNG").string(), H, W, 3, c1.data());
  const auto j0 = smooth(H, W, 3, 0);
  write_jpeg((root / "b_dog" / "x.jpg").string(), H, W, 3, j0.data(), 100);
  const auto jg = smooth(H, W, 1, 7);
  write_jpeg((root / "b_dog" / "y.jpeg").string(), H, W, 1, jg.data(), 100);
  std::vector<uint8_t> rgba(H * W * 4);
  for (size_t i = 0; i < rgba.size(); ++i) rgba[i] = uint8_t(i * 5);
  write_rgba_png((root / "b_dog" / "z.png").string(), H, W, rgba);
  { std::ofstream(root / "b_dog" / "notes.txt") << "ignored"; }

  int skipped = -1;
  const Dataset ds = load_image_folder(root.string(), 0, false, &skipped);
  EXPECT_EQ(skipped, 0);
  ASSERT_EQ(ds.size(), 5u);
  EXPECT_EQ(ds.class_names, (std::vector<std::string>{"a_cat", "b_dog"}));
  EXPECT_EQ(ds.num_classes, 2);
  EXPECT_EQ(ds.labels, (std::vector<int32_t>{0, 0, 1, 1, 1}));
  EXPECT_EQ(ds.channels, 3);
  EXPECT_EQ(ds.height, H);
  EXPECT_EQ(ds.width, W);
  for (int p = 0; p < H * W; ++p) {  // gray PNG expanded to RGB, exact
    ASSERT_EQ(ds.image(0)[p * 3 + 0], g0[p]);
    ASSERT_EQ(ds.image(0)[p * 3 + 2], g0[p]);
  }
  EXPECT_TRUE(std::equal(c1.begin(), c1.end(), ds.image(1)));  // RGB PNG exact
  int maxdiff = 0;
  for (int i = 0; i < H * W * 3; ++i) maxdiff = std::max(maxdiff, std::abs(int(ds.image(2)[i]) - int(j0[i])));
  EXPECT_LE(maxdiff, 12);          // JPEG q100 of a smooth ramp is near-lossless
  for (int p = 0; p < H * W; ++p)  // RGBA: alpha dropped
    for (int k = 0; k < 3; ++k) ASSERT_EQ(ds.image(4)[p * 3 + k], rgba[p * 4 + k]);

  // corrupt files: error naming the file, or skipped & counted
  const std::string bad = (root / "b_dog" / "w_bad.png").string();
  {
    std::vector<uint8_t> junk = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n', 1, 2, 3, 4, 5};
    write_bytes(bad, junk);
  }
  expect_error([&] { load_image_folder(root.string(), 0, false, &skipped); }, {bad});
  const Dataset ds2 = load_image_folder(root.string(), 0, true, &skipped);
  EXPECT_EQ(skipped, 1);
  EXPECT_EQ(ds2.size(), 5u);
  // a truncated JPEG also counts as corrupt
  {
    std::ifstream f(root / "b_dog" / "x.jpg", std::ios::binary);
    std::vector<uint8_t> b((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
    b.resize(b.size() / 2);
    write_bytes((root / "b_dog" / "v_trunc.jpg").string(), b);
  }
  expect_error([&] { load_image_folder(root.string(), 0, false); }, {"v_trunc.jpg"});
  load_image_folder(root.string(), 0, true, &skipped);
  EXPECT_EQ(skipped, 2);
  int h, w, c;
  std::vector<uint8_t> px;
  std::string err;
  EXPECT_FALSE(decode_image_file(bad, h, w, c, px, &err));
  EXPECT_NE(err.find(bad), std::string::npos);
  EXPECT_TRUE(decode_image_file((root / "a_cat" / "1.PNG").string(), h, w, c, px, &err));
  EXPECT_EQ(h, H);
  EXPECT_EQ(w, W);
  EXPECT_EQ(c, 3);
}

TEST(DataImageFolder, GrayResizeAndSplits) {
  TempDir t;
  const fs::path root = t.path() / "ds";
  for (const char* split : {"train", "val"})
    for (const char* cls : {"one", "two", "three"}) fs::create_directories(root / split / cls);
  int k = 0;
  for (const char* cls : {"one", "two", "three"}) {
    const auto a = pattern(10, 16, 1, k++);
    write_png((root / "train" / cls / "a.png").string(), 10, 16, 1, a.data());
    const auto b = pattern(12, 9, 1, k++);
    write_png((root / "train" / cls / "b.png").string(), 12, 9, 1, b.data());
  }
  fs::remove_all(root / "val" / "one");  // val lacks a class: indices must still follow train
  const auto v = pattern(20, 20, 1, 3);
  write_png((root / "val" / "two" / "v.png").string(), 20, 20, 1, v.data());

  expect_error([&] { load_image_folder((root / "train").string(), 0); }, {"b.png", "differs", "resize"});
  const Dataset tr = load_dataset("folder:" + root.string(), true, false, 6);
  EXPECT_EQ(tr.size(), 6u);
  EXPECT_EQ(tr.channels, 1);
  EXPECT_EQ(tr.height, 6);
  EXPECT_EQ(tr.width, 6);
  EXPECT_EQ(tr.class_names, (std::vector<std::string>{"one", "three", "two"}));
  const Dataset va = load_dataset("folder:" + root.string(), false, false, 6);
  EXPECT_EQ(va.size(), 1u);
  EXPECT_EQ(va.num_classes, 3);
  EXPECT_EQ(va.labels[0], 2);  // "two" is class 2 of the train listing
  // resize of a constant image stays constant
  std::vector<uint8_t> flat(30 * 50, 77), out(8 * 8);
  resize_shorter_center_crop(flat.data(), 30, 50, 1, 8, out.data());
  for (uint8_t p : out) ASSERT_EQ(p, 77);
}

// timm's evaluation resampling, bit for bit: PIL's Image.resize(BICUBIC) (shrink, enlarge, one axis)
// and torchvision's Resize(floor(size / crop_pct), BICUBIC) + CenterCrop(size) on the golden images
// of reference/pil_eval_golden.py (PIL 9.4, torchvision 0.14). Names: in{i}, resize{i}_{h}x{w},
// eval{i}_{size}_{pct}; tensors U8 (H, W, C).
TEST(DataImage, ResampleMatchesPilAndTorchvision) {
#ifndef KAT_TEST_DATA
#define KAT_TEST_DATA "tests"
#endif
  const auto f = io::SafetensorsFile::load(std::string(KAT_TEST_DATA) + "/golden/pil_eval.safetensors");
  auto image = [&](const std::string& name) {
    const auto& info = f.info(name);
    EXPECT_EQ(info.dtype, io::DType::U8) << name;
    const uint8_t* p = f.raw(name);
    return std::vector<uint8_t>(p, p + info.numel());
  };
  int resizes = 0, evals = 0;
  for (const std::string& name : f.names()) {
    const bool is_resize = name.rfind("resize", 0) == 0, is_eval = name.rfind("eval", 0) == 0;
    if (!is_resize && !is_eval) continue;
    const std::string rest = name.substr(is_resize ? 6 : 4);
    const std::string input = "in" + rest.substr(0, rest.find('_'));
    const auto& in = f.info(input);
    const int h = int(in.shape[0]), w = int(in.shape[1]), c = int(in.shape[2]);
    const std::vector<uint8_t> src = image(input), want = image(name);
    const auto& out = f.info(name);
    std::vector<uint8_t> got(want.size(), 0xAB);
    if (is_resize) {
      resize_bicubic_pil(src.data(), h, w, c, got.data(), int(out.shape[0]), int(out.shape[1]));
      ++resizes;
    } else {
      const std::string args = rest.substr(rest.find('_') + 1);  // "{size}_{pct}"
      const int size = std::stoi(args.substr(0, args.find('_')));
      const double pct = std::stod(args.substr(args.find('_') + 1));
      ASSERT_EQ(out.shape[0], size);
      eval_resize_center_crop(src.data(), h, w, c, size, pct, got.data());
      ++evals;
    }
    size_t diff = 0;
    for (size_t i = 0; i < got.size(); ++i) diff += got[i] != want[i];
    EXPECT_EQ(diff, 0u) << name << ": " << diff << " of " << got.size() << " bytes differ from PIL/torchvision";
  }
  EXPECT_EQ(resizes, 11);
  EXPECT_EQ(evals, 8);
}

// A folder's test split loaded for evaluation (folder_eval_crop_pct > 0) holds exactly timm's eval
// fit of each decoded file (full JPEG decode, PIL bicubic, center crop), eagerly and lazily alike;
// the training split keeps the training fit.
TEST(DataLoadDataset, FolderEvalSplitUsesTimmEvalFit) {
  TempDir t;
  const fs::path root = t.path();
  Rng r(5);
  std::vector<std::pair<std::string, std::array<int, 2>>> files = {
      {"a.jpg", {90, 130}}, {"b.png", {120, 70}}, {"c.png", {32, 32}}};  // c: already at the model's size
  for (const char* split : {"train", "val"})
    for (const auto& [name, hw] : files) {
      std::vector<uint8_t> px(size_t(hw[0]) * hw[1] * 3);
      for (auto& v : px) v = uint8_t(r.below(256));
      fs::create_directories(root / split / "cls");
      const std::string path = (root / split / "cls" / name).string();
      if (fs::path(name).extension() == ".jpg")
        write_jpeg(path, hw[0], hw[1], 3, px.data(), 90);
      else
        write_png(path, hw[0], hw[1], 3, px.data());
    }
  const int size = 32;
  const Dataset ev = load_dataset("folder:" + root.string(), false, false, size, nullptr, false, 3, 0.875);
  const Dataset ev_lazy = load_dataset("folder:" + root.string(), false, false, size, nullptr, true, 3, 0.875);
  ASSERT_EQ(ev.size(), 3u);
  for (size_t i = 0; i < ev.size(); ++i) {
    int h, w, c;
    std::vector<uint8_t> dec, want(size_t(size) * size * 3), lazy(want.size());
    ASSERT_TRUE(decode_image_file((root / "val" / "cls" / files[i].first).string(), h, w, c, dec));
    if (h == size && w == size)
      want = dec;  // kept as is, not zoomed by 1 / crop_pct
    else
      eval_resize_center_crop(dec.data(), h, w, c, size, 0.875, want.data());
    EXPECT_TRUE(std::equal(want.begin(), want.end(), ev.image(i))) << files[i].first;
    ev_lazy.read_image(i, lazy.data());
    EXPECT_EQ(lazy, want) << files[i].first << " (lazy)";
  }
  // The training split: shorter side resized (bilinear) and center-cropped, not the eval fit.
  const Dataset tr = load_dataset("folder:" + root.string(), true, false, size, nullptr, false, 3, 0.0);
  int h, w, c;
  std::vector<uint8_t> dec, fit(size_t(size) * size * 3);
  ASSERT_TRUE(decode_image_file((root / "train" / "cls" / "b.png").string(), h, w, c, dec));
  resize_shorter_center_crop(dec.data(), h, w, c, size, fit.data());
  EXPECT_TRUE(std::equal(fit.begin(), fit.end(), tr.image(1)));
  expect_error([&] { load_image_folder((root / "val").string(), size, false, nullptr, 3, nullptr, false, 1.5); },
               {"crop_pct", "1.5"});
}

TEST(DataLoadDataset, SpecErrors) {
  TempDir t;
  expect_error([&] { load_dataset("imagenet", true); }, {"unknown dataset spec 'imagenet'"});
  expect_error([&] { load_dataset("foo:" + t.path().string(), true); }, {"unknown dataset spec"});
  expect_error([&] { load_dataset("mnist:" + t / "nodir", true); }, {t / "nodir", "not found"});
  expect_error([&] { load_dataset("mnist:" + t.path().string(), true); }, {"train-images-idx3-ubyte"});
  expect_error([&] { load_dataset("folder:" + t.path().string(), true); }, {"train"});
  expect_error([&] { load_dataset("idx:", true); }, {"missing directory"});
}

// ---- augmentation -------------------------------------------------------------------------------------------
TEST(DataAugment, ShapesAndRanges) {
  const Dataset ds = synthetic(4, 28, 28, 1, 10, 5);
  const Dataset rgb = synthetic(4, 32, 32, 3, 10, 6);
  struct Case {
    const Dataset* d;
    AugmentConfig cfg;
  };
  std::vector<Case> cases;
  for (const char* crop : {"none", "pad", "rrc"})
    for (int out : {0, 20, 40})
      for (const Dataset* d : {&ds, &rgb}) {
        AugmentConfig a;
        a.crop = crop;
        a.out_size = out;
        a.hflip = true;
        a.randaug_n = 2;
        a.pad_mode = out == 20 ? "reflect" : "zero";
        if (d == &rgb) {
          a.mean = {0.485f, 0.456f, 0.406f};
          a.std = {0.229f, 0.224f, 0.225f};
        }
        cases.push_back({d, a});
        a.train = false;
        cases.push_back({d, a});
      }
  for (const auto& cs : cases) {
    const Dataset& d = *cs.d;
    validate(cs.cfg, d.height, d.width, d.channels);
    const auto lut = make_norm_lut(cs.cfg, d.channels);
    const int oh = aug_out_h(cs.cfg, d.height), ow = aug_out_w(cs.cfg, d.width);
    std::vector<float> out(static_cast<size_t>(d.channels) * oh * ow, 1e9f);
    AugScratch s;
    for (size_t i = 0; i < d.size(); ++i) {
      Rng rng(i);
      augment_image(d.image(i), d.height, d.width, d.channels, cs.cfg, lut.data(), rng, s, out.data());
      for (int c = 0; c < d.channels; ++c) {
        const float lo = lut[c * 256], hi = lut[c * 256 + 255];
        for (int p = 0; p < oh * ow; ++p) {
          const float v = out[static_cast<size_t>(c) * oh * ow + p];
          ASSERT_TRUE(v >= lo - 1e-6f && v <= hi + 1e-6f) << cs.cfg.crop << " " << cs.cfg.out_size << " " << v;
        }
      }
    }
  }
  // eval at the native size is exactly the normalized image (CHW)
  AugmentConfig ev;
  ev.train = false;
  const auto lut = make_norm_lut(ev, 3);
  std::vector<float> out(3 * 32 * 32);
  AugScratch s;
  Rng rng(0);
  augment_image(rgb.image(1), 32, 32, 3, ev, lut.data(), rng, s, out.data());
  for (int c = 0; c < 3; ++c)
    for (int p = 0; p < 1024; ++p)
      ASSERT_FLOAT_EQ(out[c * 1024 + p], (rgb.image(1)[p * 3 + c] / 255.f - 0.5f) / 0.5f);
  // pad crop keeps the content up to a shift: the non-fill pixels are a shifted copy
  AugmentConfig pc;
  pc.crop = "pad";
  std::vector<uint8_t> one(28 * 28, 200);
  const auto l1 = make_norm_lut(pc, 1);
  std::vector<float> o1(28 * 28);
  int zeros_seen = 0;
  for (int seed = 0; seed < 20; ++seed) {
    Rng r(seed);
    augment_image(one.data(), 28, 28, 1, pc, l1.data(), r, s, o1.data());
    int z = 0;
    for (float v : o1) z += v == l1[0];
    zeros_seen += z > 0;
    for (float v : o1) ASSERT_TRUE(v == l1[0] || v == l1[200]);
  }
  EXPECT_GT(zeros_seen, 10);  // most random shifts expose padding
  // random erasing changes pixels to noise in some samples
  AugmentConfig re;
  re.random_erase = 1.0;
  std::vector<float> o2(28 * 28);
  Rng r2(3);
  augment_image(one.data(), 28, 28, 1, re, l1.data(), r2, s, o2.data());
  int changed = 0;
  for (float v : o2) changed += v != l1[200];
  EXPECT_GE(changed, int(0.02 * 784) - 5);
  EXPECT_LE(changed, 784 / 3 + 30);
  // bad configs name the field
  AugmentConfig bad;
  bad.crop = "zoom";
  expect_error([&] { validate(bad, 28, 28, 1); }, {"crop", "zoom"});
  bad = AugmentConfig{};
  bad.mean = {0.1f, 0.2f};
  expect_error([&] { validate(bad, 28, 28, 1); }, {"mean"});
}

TEST(DataAugment, RandAugmentOpsRun) {
  Rng prng(9);
  for (int c : {1, 3}) {
    const int H = 17, W = 23;
    std::vector<uint8_t> img(H * W * c);
    for (auto& p : img) p = uint8_t(prng.below(200) + 20);
    const auto& ops = randaug_ops(c);
    EXPECT_EQ(ops.size(), c == 1 ? 13u : 15u);
    for (RandAugOp op : ops) {
      for (double m : {0.0, 5.0, 10.0}) {
        std::vector<uint8_t> x = img, scratch;
        Rng rng(42);
        apply_randaug_op(op, m, rng, x.data(), H, W, c, 0, scratch);
        ASSERT_EQ(x.size(), img.size()) << randaug_op_name(op);
        const bool geometric = op == RandAugOp::Rotate || op == RandAugOp::ShearX || op == RandAugOp::ShearY ||
                               op == RandAugOp::TranslateX || op == RandAugOp::TranslateY;
        const bool magnitude_free = op == RandAugOp::AutoContrast || op == RandAugOp::Equalize;
        if (op == RandAugOp::Identity || (m == 0.0 && !magnitude_free)) {
          EXPECT_EQ(x, img) << randaug_op_name(op) << " m=" << m;
        }
        if (m == 10.0 && (geometric || magnitude_free || op == RandAugOp::Solarize || op == RandAugOp::Posterize ||
                          op == RandAugOp::Contrast || op == RandAugOp::Brightness || op == RandAugOp::Sharpness ||
                          op == RandAugOp::SolarizeAdd || (op == RandAugOp::Color && c == 3))) {
          EXPECT_NE(x, img) << randaug_op_name(op) << " m=" << m;
        }
        if (op == RandAugOp::Solarize && m == 10.0) {
          for (size_t i = 0; i < x.size(); ++i) ASSERT_EQ(x[i], 255 - img[i]);
        }
        if (op == RandAugOp::Posterize && m == 10.0) {
          for (uint8_t p : x) ASSERT_EQ(p & 15, 0);
        }
        if (op == RandAugOp::AutoContrast) {
          EXPECT_EQ(*std::min_element(x.begin(), x.end()), 0);
          EXPECT_EQ(*std::max_element(x.begin(), x.end()), 255);
        }
      }
    }
  }
  // translate by a whole image fills
  std::vector<uint8_t> x(10 * 10, 99), scratch;
  Rng rng(1);
  apply_randaug_op(RandAugOp::TranslateX, 10.0, rng, x.data(), 10, 10, 1, 7, scratch);
  EXPECT_GE(std::count(x.begin(), x.end(), 7), 40);
  // full policy keeps shape and is deterministic in the Rng
  AugmentConfig cfg;
  cfg.randaug_n = 3;
  cfg.randaug_p = 1.0;
  std::vector<uint8_t> a(28 * 28 * 3), b;
  for (auto& p : a) p = uint8_t(prng.below(256));
  b = a;
  Rng r1(5), r2(5);
  rand_augment(cfg, r1, a.data(), 28, 28, 3, scratch);
  rand_augment(cfg, r2, b.data(), 28, 28, 3, scratch);
  EXPECT_EQ(a, b);
}

// ---- mixup / cutmix -------------------------------------------------------------------------------------------
TEST(DataMix, TargetsSumToOneAndLambda) {
  const Dataset ds = synthetic(64, 12, 12, 3, 7, 11);
  LoaderConfig base;
  base.batch_size = 16;
  base.seed = 77;
  base.num_workers = 0;
  base.aug.crop = "pad";
  base.aug.padding = 2;
  base.mix.label_smoothing = 0.1;
  Loader plain(ds, base);
  const auto ref = run_epoch(plain, 0);

  for (int mode = 0; mode < 2; ++mode) {
    LoaderConfig cfg = base;
    (mode == 0 ? cfg.mix.mixup_alpha : cfg.mix.cutmix_alpha) = 1.0;
    Loader L(ds, cfg);
    const auto got = run_epoch(L, 0);
    ASSERT_EQ(got.size(), ref.size());
    int applied = 0;
    for (size_t bi = 0; bi < got.size(); ++bi) {
      const Batch& b = got[bi];
      const Batch& r = ref[bi];
      ASSERT_EQ(b.indices, r.indices);  // mixing does not change order or per-sample aug
      ASSERT_EQ(b.labels, r.labels);
      const double lam = b.mix.lam, ls = 0.1, K = 7;
      EXPECT_GE(lam, 0.0);
      EXPECT_LE(lam, 1.0);
      applied += b.mix.applied;
      EXPECT_EQ(b.mix.cutmix, mode == 1);
      const size_t img = size_t(3) * 12 * 12;
      for (int i = 0; i < b.n; ++i) {
        const int j = b.n - 1 - i;
        double sum = 0;
        for (int k = 0; k < b.classes; ++k) sum += b.targets[i * b.classes + k];
        EXPECT_NEAR(sum, 1.0, 1e-5);
        double expect_yi = lam * (1 - ls) + ls / K, expect_yj = (1 - lam) * (1 - ls) + ls / K;
        if (b.labels[i] == b.labels[j]) expect_yi = expect_yj = (1 - ls) + ls / K;
        EXPECT_NEAR(b.targets[i * b.classes + b.labels[i]], expect_yi, 1e-5);
        EXPECT_NEAR(b.targets[i * b.classes + b.labels[j]], expect_yj, 1e-5);
        if (mode == 0) {  // mixup: x_i = lam * a_i + (1 - lam) * a_j
          for (size_t o = 0; o < img; o += 17)
            ASSERT_NEAR(b.images[i * img + o], lam * r.images[i * img + o] + (1 - lam) * r.images[j * img + o],
                        1e-5);
        } else {  // cutmix: inside the box from j, outside from i; lam = 1 - box area / image area
          const auto& m = b.mix;
          EXPECT_NEAR(lam, 1.0 - double(m.y1 - m.y0) * (m.x1 - m.x0) / 144.0, 1e-12);
          for (int c = 0; c < 3; ++c)
            for (int y = 0; y < 12; ++y)
              for (int x = 0; x < 12; ++x) {
                const size_t o = c * 144 + y * 12 + x;
                const bool in = y >= m.y0 && y < m.y1 && x >= m.x0 && x < m.x1;
                ASSERT_EQ(b.images[i * img + o], (in ? r.images[j * img + o] : r.images[i * img + o]));
              }
        }
      }
    }
    EXPECT_GE(applied, 2);
  }
  // Without mixing: smoothed one-hot
  for (const Batch& b : ref)
    for (int i = 0; i < b.n; ++i)
      for (int k = 0; k < b.classes; ++k)
        ASSERT_NEAR(b.targets[i * b.classes + k], k == b.labels[i] ? 0.9 + 0.1 / 7 : 0.1 / 7, 1e-6);
  // switch_prob chooses between the two
  LoaderConfig both = base;
  both.mix.mixup_alpha = 0.8;
  both.mix.cutmix_alpha = 1.0;
  Loader L(ds, both);
  int cut = 0, total = 0;
  for (int e = 0; e < 6; ++e)
    for (const Batch& b : run_epoch(L, e)) {
      cut += b.mix.cutmix;
      ++total;
    }
  EXPECT_GT(cut, 0);
  EXPECT_LT(cut, total);
  // The mean of Beta(a, a) draws is ~0.5
  Rng rng(3);
  double s = 0;
  for (int i = 0; i < 4000; ++i) s += rng.beta(0.8, 0.8);
  EXPECT_NEAR(s / 4000, 0.5, 0.03);
}

// ---- loader determinism
// -----------------------------------------------------------------------------------------
TEST(DataLoader, SameBatchesForAnyWorkerCount) {
  const Dataset ds = synthetic(203, 16, 16, 1, 10, 21);
  Loader l0(ds, heavy_config(0));
  Loader l1(ds, heavy_config(1));
  LoaderConfig c2 = heavy_config(2);
  c2.prefetch = 1;
  Loader l2(ds, c2);
  LoaderConfig c3 = heavy_config(3);
  c3.prefetch = 8;
  Loader l3(ds, c3);
  EXPECT_EQ(l0.batches_per_epoch(), 203 / 16);
  for (int64_t e : {0, 3}) {
    const auto a = run_epoch(l0, e), b = run_epoch(l1, e), c = run_epoch(l2, e), d = run_epoch(l3, e);
    ASSERT_EQ(a.size(), 12u);
    ASSERT_EQ(b.size(), a.size());
    ASSERT_EQ(c.size(), a.size());
    ASSERT_EQ(d.size(), a.size());
    for (size_t i = 0; i < a.size(); ++i) {
      EXPECT_TRUE(same_batch(a[i], b[i])) << "epoch " << e << " batch " << i;
      EXPECT_TRUE(same_batch(a[i], c[i])) << "epoch " << e << " batch " << i;
      EXPECT_TRUE(same_batch(a[i], d[i])) << "epoch " << e << " batch " << i;
      EXPECT_EQ(a[i].batch, int64_t(i));
      EXPECT_EQ(a[i].n, 16);
      EXPECT_EQ(a[i].images.size(), 16u * 256);
    }
    // every index at most once; 203 - 12*16 = 11 dropped
    std::vector<int64_t> all;
    for (const auto& b : a) all.insert(all.end(), b.indices.begin(), b.indices.end());
    std::sort(all.begin(), all.end());
    EXPECT_EQ(std::unique(all.begin(), all.end()), all.end());
  }
  // epochs differ, seeds differ
  EXPECT_NE(run_epoch(l0, 0)[0].indices, run_epoch(l0, 1)[0].indices);
  LoaderConfig other = heavy_config(1);
  other.seed = 99;
  Loader lo(ds, other);
  EXPECT_NE(run_epoch(lo, 0)[0].indices, run_epoch(l1, 0)[0].indices);
}

// One process of a multi-process job loads only its rows of every global batch (issue #14): the
// rows of every rank, put together in rank order, must be the one-process batch bit for bit,
// through Mixup and CutMix (which pair row i with row n-1-i, possibly on another rank).
TEST(DataLoader, ShardRowsRebuildTheWholeBatch) {
  const Dataset ds = synthetic(45, 12, 12, 3, 5, 17);
  LoaderConfig cfg = heavy_config(0);
  cfg.batch_size = 10;
  cfg.drop_last = false;  // the last batch has 5 rows: an odd count, a middle row without partner
  int mixed = 0, cut = 0, plain = 0;
  for (int64_t epoch : {0, 1, 2}) {
    const std::vector<int64_t> order = epoch_order(ds.size(), cfg.seed, epoch, true);
    for (int64_t b = 0; b < 5; ++b) {
      Batch whole;
      make_batch(ds, cfg, epoch, b, order, whole);
      const int n = batch_rows(cfg, ds.size(), b);
      ASSERT_EQ(whole.n, n);
      (whole.mix.applied ? (whole.mix.cutmix ? cut : mixed) : plain)++;
      for (int world : {1, 2, 3, 4, 7}) {
        Batch joined;
        int next = 0;
        for (int rank = 0; rank < world; ++rank) {
          const RowRange r = shard_rows(n, world, rank);
          ASSERT_EQ(r.lo, next) << "shards must tile the batch in order";
          ASSERT_LE(r.hi - r.lo, (n + world - 1) / world);
          next = r.hi;
          Batch part;
          make_batch_rows(ds, cfg, epoch, b, order, r.lo, r.hi, part);
          ASSERT_EQ(part.n, r.hi - r.lo);
          EXPECT_EQ(part.mix.applied, whole.mix.applied);
          EXPECT_EQ(part.mix.lam, whole.mix.lam);
          joined.images.insert(joined.images.end(), part.images.begin(), part.images.end());
          joined.targets.insert(joined.targets.end(), part.targets.begin(), part.targets.end());
          joined.labels.insert(joined.labels.end(), part.labels.begin(), part.labels.end());
          joined.indices.insert(joined.indices.end(), part.indices.begin(), part.indices.end());
        }
        ASSERT_EQ(next, n);
        const std::string where =
            "epoch " + std::to_string(epoch) + " batch " + std::to_string(b) + " world " + std::to_string(world);
        EXPECT_EQ(joined.indices, whole.indices) << where;
        EXPECT_EQ(joined.labels, whole.labels) << where;
        ASSERT_EQ(joined.images.size(), whole.images.size()) << where;
        EXPECT_EQ(std::memcmp(joined.images.data(), whole.images.data(), whole.images.size() * sizeof(float)), 0)
            << where;
        EXPECT_EQ(joined.targets, whole.targets) << where;
      }
    }
  }
  // Both kinds of mixing were seen (mix_prob 1: every batch mixes, only the kind varies).
  EXPECT_GT(mixed, 0);
  EXPECT_GT(cut, 0);
  EXPECT_EQ(plain, 0);
  {  // without mixing a rank augments its own rows only
    LoaderConfig nomix = cfg;
    nomix.mix.mixup_alpha = nomix.mix.cutmix_alpha = 0;
    const std::vector<int64_t> order = epoch_order(ds.size(), nomix.seed, 0, true);
    Batch whole, part;
    make_batch(ds, nomix, 0, 1, order, whole);
    ASSERT_FALSE(whole.mix.applied);
    const RowRange r = shard_rows(whole.n, 3, 1);
    make_batch_rows(ds, nomix, 0, 1, order, r.lo, r.hi, part);
    const size_t img = size_t(whole.c) * whole.h * whole.w;
    EXPECT_TRUE(std::equal(part.images.begin(), part.images.end(), whole.images.begin() + img * r.lo));
    EXPECT_TRUE(
        std::equal(part.targets.begin(), part.targets.end(), whole.targets.begin() + whole.classes * r.lo));
  }
  kat::test::expect_error([&] { shard_rows(10, 2, 2); }, {"rank 2", "world of 2"});
  Batch part;
  const std::vector<int64_t> order = epoch_order(ds.size(), cfg.seed, 0, true);
  kat::test::expect_error([&] { make_batch_rows(ds, cfg, 0, 0, order, 3, 11, part); }, {"[3, 11)", "batch of 10"});
}

TEST(DataLoader, ResumeMidEpochIsBitExact) {
  const Dataset ds = synthetic(150, 12, 12, 3, 5, 8);
  LoaderConfig cfg = heavy_config(2);
  cfg.aug.crop = "rrc";
  cfg.aug.out_size = 10;
  cfg.batch_size = 10;
  Loader L(ds, cfg);
  const auto full = run_epoch(L, 2);
  ASSERT_EQ(full.size(), 15u);
  for (int64_t k : {0, 1, 7, 14, 15}) {
    Loader R(ds, cfg);
    const auto part = run_epoch(R, 2, k);
    ASSERT_EQ(part.size(), full.size() - k);
    for (size_t i = 0; i < part.size(); ++i)
      EXPECT_TRUE(same_batch(part[i], full[k + i])) << "k=" << k << " i=" << i;
  }
  // restarting while workers are busy (abandoning an epoch) is clean
  Batch b;
  L.start_epoch(5);
  ASSERT_TRUE(L.next(b));
  L.start_epoch(2, 3);
  ASSERT_TRUE(L.next(b));
  EXPECT_TRUE(same_batch(b, full[3]));
  L.start_epoch(2, 0);  // destroy with batches in flight
  expect_error([&] { L.start_epoch(2, 16); }, {"first batch 16"});
}

TEST(DataLoader, EvalLoaderAndErrors) {
  Dataset ds = synthetic(37, 8, 8, 1, 4, 2);
  LoaderConfig train = heavy_config(1);
  train.aug.out_size = 12;
  LoaderConfig ev = LoaderConfig::eval(train, 10);
  Loader L(ds, ev);
  EXPECT_EQ(L.batches_per_epoch(), 4);
  const auto bs = run_epoch(L, 0);
  ASSERT_EQ(bs.size(), 4u);
  EXPECT_EQ(bs[3].n, 7);
  int64_t next = 0;
  for (const auto& b : bs) {
    EXPECT_EQ(b.h, 12);
    for (int i = 0; i < b.n; ++i) {
      EXPECT_EQ(b.indices[i], next++);
      for (int k = 0; k < 4; ++k) ASSERT_EQ(b.targets[i * 4 + k], k == b.labels[i] ? 1.f : 0.f);
    }
  }
  // eval is deterministic across epochs
  EXPECT_TRUE(same_batch(run_epoch(L, 0)[1], run_epoch(L, 9)[1]));
  // eval_transform (kat predict) of a dataset image matches the eval loader
  int oh = 0, ow = 0;
  const auto one = eval_transform(ds.image(12), 8, 8, 1, 1, ev.aug, &oh, &ow);
  EXPECT_EQ(oh, 12);
  EXPECT_EQ(ow, 12);
  EXPECT_EQ(one, std::vector<float>(bs[1].images.begin() + 2 * 144, bs[1].images.begin() + 3 * 144));
  const auto rgb = eval_transform(ds.image(12), 8, 8, 1, 3, ev.aug);
  ASSERT_EQ(rgb.size(), 3u * 144);
  EXPECT_EQ(std::vector<float>(rgb.begin() + 144, rgb.begin() + 288), one);

  // worker exceptions are rethrown by next(), in order
  LoaderConfig c = heavy_config(2);
  c.batch_size = 4;
  c.shuffle = false;
  Loader E(ds, c);
  ds.labels[9] = 17;  // corrupt after construction: batch 2 (indices 8..11) fails
  E.start_epoch(0);
  Batch b;
  EXPECT_TRUE(E.next(b));
  EXPECT_TRUE(E.next(b));
  expect_error([&] { E.next(b); }, {"label 17 at index 9"});
  EXPECT_TRUE(E.next(b));  // the loader keeps going after a failed batch
  EXPECT_EQ(b.batch, 3);
  ds.labels[9] = 0;

  Loader N(ds, c);
  expect_error([&] { N.next(b); }, {"start_epoch"});
  LoaderConfig big = c;
  big.batch_size = 100;
  expect_error([&] { Loader X(ds, big); }, {"37 samples", "batch of 100"});
  LoaderConfig badaug = c;
  badaug.aug.crop = "foo";
  expect_error([&] { Loader X(ds, badaug); }, {"crop"});
}

// A lazy folder in training with RandomResizedCrop crops from the file's full image (as timm does),
// not from the image fitted to the model's size: with scale 1 and a fixed 3:2 ratio the crop box
// is the whole 40x60 original, so the sample is that image resampled to 8x8; the eager dataset
// only has the fitted (center-cropped) 8x8 image. Other crops use the fitted image in both.
TEST(DataLoader, LazyRrcCropsFromTheOriginal) {
  TempDir t;
  Rng r(9);
  std::vector<uint8_t> px(40 * 60 * 3);
  for (auto& v : px) v = uint8_t(r.below(256));
  fs::create_directories(t.path() / "c");
  write_png((t.path() / "c" / "a.png").string(), 40, 60, 3, px.data());
  const Dataset lazy = load_image_folder(t.path().string(), 8, false, nullptr, 3, nullptr, true);
  LoaderConfig cfg;
  cfg.batch_size = 1;
  cfg.shuffle = false;
  cfg.num_workers = 1;
  cfg.aug.train = true;
  cfg.aug.out_size = 8;
  cfg.aug.crop = "rrc";
  cfg.aug.rrc_scale_min = cfg.aug.rrc_scale_max = 1.0;
  cfg.aug.rrc_ratio_min = cfg.aug.rrc_ratio_max = 1.5;
  cfg.mix.label_smoothing = 0;
  Loader L(lazy, cfg);
  const auto b = run_epoch(L, 0);
  ASSERT_EQ(b.size(), 1u);
  std::vector<uint8_t> want(8 * 8 * 3);
  resample_bilinear(px.data(), 40, 60, 3, 0, 0, 40, 60, want.data(), 8, 8);
  for (int ch = 0; ch < 3; ++ch)
    for (int i = 0; i < 64; ++i)
      ASSERT_EQ(b[0].images[size_t(ch) * 64 + i], (want[size_t(i) * 3 + ch] / 255.f - 0.5f) / 0.5f)
          << ch << " " << i;
  // The fitted image (what an eager dataset holds) is a different picture.
  std::vector<uint8_t> fitted(8 * 8 * 3);
  lazy.read_image(0, fitted.data());
  EXPECT_NE(fitted, want);
}

TEST(DataLoader, FashionMnistDefaultPipelineIsFast) {
  const Dataset& ds = fashion_train();
  LoaderConfig cfg;
  cfg.batch_size = 128;
  cfg.num_workers = 1;
  cfg.aug.crop = "pad";
  Loader L(ds, cfg);
  EXPECT_EQ(L.batches_per_epoch(), 468);
  L.start_epoch(0);
  Batch b;
  const auto t0 = std::chrono::steady_clock::now();
  int n = 0;
  while (n < 100 && L.next(b)) ++n;
  const double ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
  EXPECT_EQ(n, 100);
  EXPECT_EQ(b.images.size(), 128u * 784);
  // generous bound (shared CI machines); the design target is well under 1 ms per batch
  EXPECT_LT(ms / n, 20.0) << ms / n << " ms per batch";
  std::printf("[ info ] fashion-mnist pad-crop loader: %.3f ms/batch (1 worker)\n", ms / n);
}

// Lazy folders (--lazy-data): the same images, decoded when a batch needs them. With the same
// geometry and channels the loader's batches (train augmentation, mixing, several workers) are
// bitwise those of the in-memory dataset; corrupt files stop the loader naming the file; the
// options lazy loading cannot honour are refused up front.
TEST(DataImageFolder, LazyEqualsEager) {
  TempDir t;
  const fs::path root = t.path() / "ds";
  int k = 0;
  for (const char* cls : {"a", "b", "c"}) {
    fs::create_directories(root / cls);
    for (int i = 0; i < 6; ++i, ++k) {  // mixed sizes, gray and colour, PNG and JPEG
      const int h = 10 + (k % 5), w = 9 + (k % 7), c = (k % 3 == 0) ? 1 : 3;
      const auto px = smooth(h, w, c, k);
      const std::string stem = (root / cls / ("img" + std::to_string(i))).string();
      if (k % 2)
        write_jpeg(stem + ".jpg", h, w, c, px.data(), 95);
      else
        write_png(stem + ".png", h, w, c, px.data());
    }
  }
  const Dataset eager = load_image_folder(root.string(), 8, false, nullptr, 3);
  const Dataset lazy = load_image_folder(root.string(), 8, false, nullptr, 3, nullptr, true);
  ASSERT_TRUE(lazy.lazy());
  EXPECT_FALSE(eager.lazy());
  EXPECT_TRUE(lazy.pixels.empty());
  EXPECT_EQ(lazy.size(), eager.size());
  EXPECT_EQ(lazy.labels, eager.labels);
  EXPECT_EQ(lazy.class_names, eager.class_names);
  EXPECT_EQ(lazy.image_bytes(), eager.image_bytes());
  std::vector<uint8_t> a(eager.image_bytes()), b(eager.image_bytes());
  for (size_t i = 0; i < eager.size(); ++i) {
    eager.read_image(i, a.data());
    lazy.read_image(i, b.data());
    EXPECT_EQ(a, b) << "image " << i;
  }
  LoaderConfig lc;
  lc.batch_size = 5;
  lc.num_workers = 3;
  lc.seed = 7;
  lc.aug.train = true;
  lc.aug.out_size = 8;
  lc.aug.crop = "pad";  // (RandomResizedCrop differs by design: DataLoader.LazyRrcCropsFromTheOriginal)
  lc.aug.hflip = true;
  lc.aug.randaug_n = 2;
  lc.mix.mixup_alpha = 0.8;
  lc.mix.label_smoothing = 0.1;
  Loader le(eager, lc), ll(lazy, lc);
  for (int e = 0; e < 2; ++e) {
    const auto be = run_epoch(le, e), bl = run_epoch(ll, e);
    ASSERT_EQ(be.size(), bl.size());
    for (size_t i = 0; i < be.size(); ++i)
      EXPECT_TRUE(same_batch(be[i], bl[i])) << "epoch " << e << " batch " << i;
  }
  const Dataset part = subset(lazy, 4);
  EXPECT_TRUE(part.lazy());
  EXPECT_EQ(part.files.size(), 4u);
  // Refused: no fixed size; --skip-bad.
  expect_error([&] { load_image_folder(root.string(), 0, false, nullptr, 3, nullptr, true); }, {"resize"});
  expect_error([&] { load_image_folder(root.string(), 8, true, nullptr, 3, nullptr, true); }, {"--skip-bad"});
  // A corrupt file is found when read: the loader stops with its name.
  { std::ofstream(root / "b" / "img3.jpg", std::ios::trunc) << "not a jpeg"; }
  const Dataset lazy2 = load_image_folder(root.string(), 8, false, nullptr, 3, nullptr, true);
  LoaderConfig lc2 = lc;
  lc2.batch_size = int(lazy2.size());
  Loader bad(lazy2, lc2);
  bad.start_epoch(0, 0);
  Batch bt;
  expect_error([&] { bad.next(bt); }, {"img3.jpg"});
}

// decode with a min_side hint: JPEGs decode at 1/8, 1/4 or 1/2 scale when the shorter side stays
// >= min_side (the folder loaders pass their resize size); PNGs and small targets decode in full.
TEST(DataImageIo, JpegScaledDecode) {
  TempDir t;
  const std::string jp = (t.path() / "a.jpg").string(), pp = (t.path() / "a.png").string();
  std::vector<uint8_t> px(48 * 64 * 3);  // a smooth gradient (no wrap-around edges)
  for (int y = 0; y < 48; ++y)
    for (int x = 0; x < 64; ++x)
      for (int k = 0; k < 3; ++k) px[(y * 64 + x) * 3 + k] = uint8_t(20 + y + x + 25 * k);
  write_jpeg(jp, 48, 64, 3, px.data(), 95);
  write_png(pp, 48, 64, 3, px.data());
  std::vector<uint8_t> out;
  int h = 0, w = 0, c = 0;
  std::string err;
  const std::vector<std::array<int, 3>> cases = {{0, 48, 64},  {5, 6, 8},    {6, 6, 8},    {7, 12, 16},
                                                 {12, 12, 16}, {13, 24, 32}, {25, 48, 64}, {100, 48, 64}};
  for (const auto& [min_side, eh, ew] : cases) {
    ASSERT_TRUE(decode_image_file(jp, h, w, c, out, &err, min_side)) << err;
    EXPECT_EQ(h, eh) << "min_side " << min_side;
    EXPECT_EQ(w, ew) << "min_side " << min_side;
    EXPECT_EQ(out.size(), size_t(h) * w * 3);
  }
  ASSERT_TRUE(decode_image_file(pp, h, w, c, out, &err, 5)) << err;
  EXPECT_EQ(h, 48);  // PNG: always full size
  // The scaled decode is a fair low-pass of the image: a 1/2-scale decode matches a 2x2 box
  // average of the full decode within JPEG noise.
  std::vector<uint8_t> full, half;
  ASSERT_TRUE(decode_image_file(jp, h, w, c, full, &err));
  ASSERT_TRUE(decode_image_file(jp, h, w, c, half, &err, 24));
  ASSERT_EQ(h, 24);
  double diff = 0;
  for (int y = 0; y < 24; ++y)
    for (int x = 0; x < 32; ++x)
      for (int k = 0; k < 3; ++k) {
        const double avg =
            (full[((2 * y) * 64 + 2 * x) * 3 + k] + full[((2 * y) * 64 + 2 * x + 1) * 3 + k] +
             full[((2 * y + 1) * 64 + 2 * x) * 3 + k] + full[((2 * y + 1) * 64 + 2 * x + 1) * 3 + k]) /
            4.0;
        diff += std::abs(avg - half[(y * 32 + x) * 3 + k]);
      }
  EXPECT_LT(diff / (24 * 32 * 3), 2.0);  // mean |difference| in grey levels
  // A directory is a clear error, not an attempt to read it.
  EXPECT_FALSE(decode_image_file(t.path().string(), h, w, c, out, &err));
  EXPECT_NE(err.find("not a regular file"), std::string::npos) << err;
}

// The Loader of one rank of a multi-process job (LoaderConfig::shard_world / shard_rank, what kat
// train's ranks run) delivers the rows of its shard of every global batch; the ranks' batches
// put side by side are the one-process Loader's batches, bitwise, threaded or not, for training
// (drop_last, mixing) and for evaluation (the last batch short, a rank may get no rows).
TEST(DataLoader, ShardedLoadersRebuildTheOneProcessBatches) {
  const Dataset ds = synthetic(45, 12, 12, 3, 5, 17);
  LoaderConfig train = heavy_config(2);
  train.batch_size = 8;
  for (const bool eval : {false, true}) {
    const LoaderConfig cfg = eval ? LoaderConfig::eval(train, 7) : train;
    for (int world : {2, 3}) {
      for (int workers : {0, 2}) {
        LoaderConfig one = cfg;
        one.num_workers = workers;
        Loader whole(ds, one);
        std::vector<std::unique_ptr<Loader>> ranks;
        for (int r = 0; r < world; ++r) {
          LoaderConfig c = one;
          c.shard_world = world;
          c.shard_rank = r;
          if (eval) EXPECT_EQ(LoaderConfig::eval(c).shard_rank, r);  // eval keeps the shard
          ranks.push_back(std::make_unique<Loader>(ds, c));
          EXPECT_EQ(ranks.back()->batches_per_epoch(), whole.batches_per_epoch());
        }
        for (int64_t epoch : {0, 1}) {
          whole.start_epoch(epoch, 1);
          for (auto& l : ranks) l->start_epoch(epoch, 1);
          Batch w, part;
          while (whole.next(w)) {
            std::vector<float> images, targets;
            std::vector<int64_t> indices;
            for (auto& l : ranks) {
              ASSERT_TRUE(l->next(part));
              EXPECT_EQ(part.batch, w.batch);
              images.insert(images.end(), part.images.begin(), part.images.end());
              targets.insert(targets.end(), part.targets.begin(), part.targets.end());
              indices.insert(indices.end(), part.indices.begin(), part.indices.end());
            }
            const std::string where = "world " + std::to_string(world) + " workers " + std::to_string(workers) +
                                      " epoch " + std::to_string(epoch) + " batch " + std::to_string(w.batch);
            EXPECT_EQ(indices, w.indices) << where;
            ASSERT_EQ(images.size(), w.images.size()) << where;
            EXPECT_EQ(std::memcmp(images.data(), w.images.data(), images.size() * sizeof(float)), 0) << where;
            EXPECT_EQ(targets, w.targets) << where;
          }
          for (auto& l : ranks) EXPECT_FALSE(l->next(part));
        }
      }
    }
  }
  LoaderConfig bad = train;
  bad.shard_world = 2;
  bad.shard_rank = 2;
  kat::test::expect_error([&] { Loader l(ds, bad); }, {"shard 2 of 2"});
}
