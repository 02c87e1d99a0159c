// `kat train --decode auto|cpu|gpu`: which data path a run gets (TrainConfig::resolve_decode) and
// the refusals when the GPU pipeline is asked for where it cannot run, with the reason, before
// anything is read or written. The GPU pipeline itself is tested on a GPU (tests/gpu/).
#include <gtest/gtest.h>

#include <array>
#include <cstdio>
#include <filesystem>
#include <string>

#include "kat/train/train_config.h"
#include "test_util.h"

namespace fs = std::filesystem;
using namespace kat;

namespace {

TrainConfig folder_run(const std::string& device, const std::vector<int>& devices) {
  TrainConfig c;
  c.data = "folder:/data/imagenet";
  c.device = device;
  c.devices = devices;
  c.lazy_data = true;
  return c;
}

#ifdef KAT_HAVE_NVJPEG
constexpr bool kNvjpeg = true;
#else
constexpr bool kNvjpeg = false;
#endif

std::string run_kat(const std::string& args, int* code) {
  const std::string cmd = std::string(KAT_BINARY) + " " + args + " 2>&1";
  std::string out;
  FILE* p = popen(cmd.c_str(), "r");
  if (!p) return out;
  std::array<char, 4096> buf;
  size_t n;
  while ((n = fread(buf.data(), 1, buf.size(), p)) > 0) out.append(buf.data(), n);
  const int st = pclose(p);
  *code = WIFEXITED(st) ? WEXITSTATUS(st) : -1;
  return out;
}

}  // namespace

TEST(DecodeChoice, AutoPicksGpuOnlyWhereItCanRun) {
  std::string why;
  // One GPU, a lazy folder: the GPU pipeline when the build has nvJPEG.
  TrainConfig c = folder_run("cuda:0", {0});
  EXPECT_EQ(c.resolve_decode(&why), kNvjpeg ? "gpu" : "cpu");
  if (!kNvjpeg) EXPECT_NE(why.find("nvJPEG"), std::string::npos) << why;
  // Each thing that rules it out, named.
  c = folder_run("cpu", {});
  EXPECT_EQ(c.resolve_decode(&why), "cpu");
  if (kNvjpeg) EXPECT_NE(why.find("--device cpu"), std::string::npos) << why;
  c = folder_run("cuda:0,1", {0, 1});
  EXPECT_EQ(c.resolve_decode(&why), "cpu");
  if (kNvjpeg) EXPECT_NE(why.find("2 GPUs"), std::string::npos) << why;
  c = folder_run("cuda:0", {0});
  c.data = "cifar10:/data/cifar";
  EXPECT_EQ(c.resolve_decode(&why), "cpu");
  if (kNvjpeg) EXPECT_NE(why.find("not a folder"), std::string::npos) << why;
  c = folder_run("cuda:0", {0});
  c.lazy_data = false;  // auto keeps an in-memory folder on the CPU path
  EXPECT_EQ(c.resolve_decode(&why), "cpu");
  if (kNvjpeg) EXPECT_NE(why.find("--lazy-data"), std::string::npos) << why;
  c.decode = "cpu";
  EXPECT_EQ(c.resolve_decode(), "cpu");
}

TEST(DecodeChoice, GpuWhereImpossibleSaysWhy) {
  TrainConfig c = folder_run("cpu", {});
  c.decode = "gpu";
  test::expect_error([&] { c.resolve_decode(); },
                     {"--decode gpu is not possible here", kNvjpeg ? "--device cpu" : "nvJPEG", "--decode cpu"});
  c = folder_run("cuda:0,1", {0, 1});
  c.decode = "gpu";
  test::expect_error([&] { c.resolve_decode(); },
                     {"--decode gpu is not possible here", kNvjpeg ? "2 GPUs" : "nvJPEG"});
  c = folder_run("cuda:0", {0});
  c.decode = "gpu";
  c.lazy_data = false;  // an explicit gpu reads the folder per batch by itself
  if (kNvjpeg)
    EXPECT_EQ(c.resolve_decode(), "gpu");
  else
    test::expect_error([&] { c.resolve_decode(); }, {"nvJPEG"});
  c.decode = "fast";
  test::expect_error([&] { c.validate(); }, {"--decode must be auto, cpu or gpu", "'fast'"});
}

TEST(DecodeChoice, CliRefusesBeforeWritingAnything) {
  const fs::path out = fs::path(test::temp_path("kat_decode_cli"));
  fs::remove_all(out);
  int code = 0;
  std::string text = run_kat("train --decode fast --out " + out.string(), &code);
  EXPECT_NE(code, 0);
  EXPECT_NE(text.find("--decode"), std::string::npos) << text;
  text = run_kat(
      "train --decode gpu --data folder:/nonexistent --device cpu --epochs 1 --no-progress --out " + out.string(),
      &code);
  EXPECT_NE(code, 0);
  EXPECT_NE(text.find("--decode gpu is not possible here"), std::string::npos) << text;
  EXPECT_FALSE(fs::exists(out / "config.json"));
  text = run_kat("train --help", &code);
  EXPECT_EQ(code, 0);
  EXPECT_NE(text.find("--decode"), std::string::npos) << text;
  fs::remove_all(out);
}
