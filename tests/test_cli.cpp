// The `kat` command line end to end: infer on tensors, shape and file errors with exit codes,
// a short training run followed by eval, predict and plot on its checkpoint.
#include <gtest/gtest.h>

#include <array>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <memory>
#include <string>

#include "kat/core/rng.h"
#include "kat/io/safetensors.h"
#include "kat/model/kat_model.h"
#include "kat/train/gpu_runner.h"
#include "viz/raster.h"

namespace fs = std::filesystem;
using namespace kat;

namespace {

struct CmdResult {
  int code;
  std::string out;
};

// env: "NAME=value ..." set for this command only.
CmdResult run(const std::string& args, const std::string& env = "") {
  const std::string cmd = (env.empty() ? "" : "env " + env + " ") + std::string(KAT_BINARY) + " " + args + " 2>&1";
  CmdResult r{-1, ""};
  FILE* p = popen(cmd.c_str(), "r");
  if (!p) return r;
  std::array<char, 4096> buf;
  size_t n;
  while ((n = fread(buf.data(), 1, buf.size(), p)) > 0) r.out.append(buf.data(), n);
  const int st = pclose(p);
  r.code = WIFEXITED(st) ? WEXITSTATUS(st) : -1;
  return r;
}

std::string tmpdir(const char* name) {
  const fs::path d = fs::temp_directory_path() / name;
  fs::remove_all(d);
  fs::create_directories(d);
  return d.string();
}

}  // namespace

TEST(Cli, HelpAndInfo) {
  CmdResult r = run("--help");
  EXPECT_EQ(r.code, 0);
  EXPECT_NE(r.out.find("train"), std::string::npos);
  r = run("info");
  EXPECT_EQ(r.code, 0);
  EXPECT_NE(r.out.find("5718328"), std::string::npos) << r.out;  // kat_tiny parameter count
  r = run("train --epochs");
  EXPECT_NE(r.code, 0);
}

// --attention (kat bench, kat train): ours or cudnn; the CPU has one attention op and ignores it.
// kat train --precision: the help says what fp8 does where; fp8 on several GPUs and a bad value are
// clear errors before any data is read.
TEST(Cli, TrainPrecisionFlag) {
  CmdResult r = run("train --help");
  EXPECT_EQ(r.code, 0);
  EXPECT_NE(r.out.find("--precision"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("emulation"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("EXPERIMENTAL"), std::string::npos) << r.out;
  r = run("train --precision fp8 --device cuda:0,1 --epochs 1");
  EXPECT_NE(r.code, 0);
  EXPECT_NE(r.out.find("--precision fp8 runs on one GPU"), std::string::npos) << r.out;
  r = run("train --precision fp4");
  EXPECT_NE(r.code, 0);
  EXPECT_NE(r.out.find("--precision"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("fp4"), std::string::npos) << r.out;
}

TEST(Cli, AttentionFlag) {
  CmdResult r = run("bench infer -m kat_micro_patch4_28 -b 2 --iters 1 --attention cudnn");
  EXPECT_EQ(r.code, 0) << r.out;
  r = run("bench infer -m kat_micro_patch4_28 -b 2 --iters 1 --attention flash");
  EXPECT_NE(r.code, 0);
  EXPECT_NE(r.out.find("--attention"), std::string::npos) << r.out;
}

// Under torchrun / srun with several processes, kat train and kat bench refuse (each process would
// train the whole model on one GPU and write the same run directory) and say what to do instead.
// Under torchrun / srun (one process per GPU, issue #14) kat train joins the job; what cannot work
// is an error naming the fix before any data is read or anything written (no GPU here, so every
// case stops before NCCL).
TEST(Cli, JobOfSeveralProcessesValidatesItsFlags) {
  const std::string out = tmpdir("kat_cli_multiproc");
  const std::string args = "train --epochs 1 --max-steps 1 --no-progress --out " + out;
  const std::string env = "RANK=1 WORLD_SIZE=2 MASTER_ADDR=localhost MASTER_PORT=29500";
  CmdResult r = run(args, env);  // --device cpu (the default)
  EXPECT_NE(r.code, 0);
  EXPECT_NE(r.out.find("rank 1 of 2"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("add --device cuda"), std::string::npos) << r.out;
  r = run(args + " --device cuda:0,1", env);  // the one-process list inside a job
  EXPECT_NE(r.code, 0);
  EXPECT_NE(r.out.find("each process of a job takes one GPU"), std::string::npos) << r.out;
  r = run(args + " --device cuda --rendezvous udp:x", env);
  EXPECT_NE(r.code, 0);
  EXPECT_NE(r.out.find("--rendezvous 'udp:x'"), std::string::npos) << r.out;
  r = run(args + " --device cuda --rendezvous tcp:host:0", env);
  EXPECT_NE(r.code, 0);
  EXPECT_NE(r.out.find("port '0'"), std::string::npos) << r.out;
  r = run(args + " --device cuda --dist-timeout 0", env);
  EXPECT_NE(r.code, 0);
  EXPECT_NE(r.out.find("--dist-timeout must be > 0"), std::string::npos) << r.out;
  r = run(args + " --device cuda --batch 63", env);  // the global batch splits evenly
  EXPECT_NE(r.code, 0);
  EXPECT_NE(r.out.find("--batch 63 (the global batch) must be divisible by the 2 processes"), std::string::npos)
      << r.out;
  r = run("train --epochs 1 --device cuda", env);  // no --out: the ranks' default names could differ
  EXPECT_NE(r.code, 0);
  EXPECT_NE(r.out.find("needs --out DIR"), std::string::npos) << r.out;
  r = run("train --epochs 1 --device cuda --out " + out + " --resume " + out, env);  // resume: a shared dir
  EXPECT_NE(r.code, 0);
  EXPECT_NE(r.out.find("filesystem all nodes share"), std::string::npos) << r.out;
  r = run(args + " --device cuda --decode gpu", env);  // the GPU pipeline does not shard
  EXPECT_NE(r.code, 0);
  EXPECT_NE(r.out.find("use --decode cpu"), std::string::npos) << r.out;
  EXPECT_FALSE(fs::exists(out + "/metrics.jsonl"));
  r = run("train --epochs 1", "RANK=x WORLD_SIZE=2");  // a malformed variable is named
  EXPECT_NE(r.code, 0);
  EXPECT_NE(r.out.find("RANK='x'"), std::string::npos) << r.out;
  r = run("bench train -m kat_micro_patch4_28 -b 2 --iters 1",
          "SLURM_PROCID=0 SLURM_NTASKS=4 SLURM_JOB_NODELIST=gpu[1-2]");
  EXPECT_NE(r.code, 0);
  EXPECT_NE(r.out.find("rank 0 of 4"), std::string::npos) << r.out;
  // One process under a launcher is an ordinary run.
  r = run("bench train -m kat_micro_patch4_28 -b 2 --iters 1", "RANK=0 WORLD_SIZE=1");
  EXPECT_EQ(r.code, 0) << r.out;
}

TEST(Cli, InferWritesLogitsAndFeaturesAndRejectsBadInput) {
  const std::string d = tmpdir("kat_cli_infer");
  ModelConfig cfg = ModelConfig::load("kat_micro_patch4_28");
  KatModel m(cfg);
  m.init_params(3);
  io::SafetensorsWriter w;
  m.add_weights(w);
  w.write_atomic(d + "/w.safetensors");
  Rng r(5);
  std::vector<float> x(3 * 28 * 28);
  for (auto& v : x) v = float(r.normal());
  io::SafetensorsWriter in;
  in.add_f32("input", {3, 1, 28, 28}, x.data());
  in.write_atomic(d + "/in.safetensors");
  CmdResult res = run("infer -m kat_micro_patch4_28 -w " + d + "/w.safetensors -i " + d + "/in.safetensors -o " +
                      d + "/out.safetensors");
  ASSERT_EQ(res.code, 0) << res.out;
  const auto out = io::SafetensorsFile::load(d + "/out.safetensors");
  EXPECT_EQ(out.info("logits").shape, (std::vector<int64_t>{3, 10}));
  EXPECT_EQ(out.info("features").shape, (std::vector<int64_t>{3, 50, 64}));
  m.plan(3);
  const float* z = m.forward(x.data(), 3);
  EXPECT_EQ(out.to_f32("logits"), std::vector<float>(z, z + 30));  // same engine, same numbers
  EXPECT_EQ(out.metadata().at("precision"), "auto");
  // --precision fp8 on the CPU: the FP8 emulation of the blocks' linears, current-scaled in
  // inference: bitwise what the library's model gives with enable_fp8(), and not the fp32 logits.
  res = run("infer --precision fp8 -m kat_micro_patch4_28 -w " + d + "/w.safetensors -i " + d +
            "/in.safetensors -o " + d + "/out8.safetensors");
  ASSERT_EQ(res.code, 0) << res.out;
  const auto out8 = io::SafetensorsFile::load(d + "/out8.safetensors");
  EXPECT_EQ(out8.metadata().at("precision"), "fp8");
  KatModel m8(cfg);
  m8.load_weights(io::SafetensorsFile::load(d + "/w.safetensors"));
  m8.enable_fp8();
  m8.plan(3);
  const float* z8 = m8.forward(x.data(), 3);
  EXPECT_EQ(out8.to_f32("logits"), std::vector<float>(z8, z8 + 30));
  EXPECT_NE(out8.to_f32("logits"), out.to_f32("logits"));
  // bf16 is GPU only; an unknown precision is a usage error naming the flag.
  res = run("infer --precision bf16 -m kat_micro_patch4_28 -w " + d + "/w.safetensors -i " + d +
            "/in.safetensors -o " + d + "/o5.safetensors");
  EXPECT_EQ(res.code, 1);
  EXPECT_NE(res.out.find("--precision bf16 is GPU only"), std::string::npos) << res.out;
  EXPECT_FALSE(fs::exists(d + "/o5.safetensors"));
  res = run("infer --precision fp4 -m kat_micro_patch4_28 -w " + d + "/w.safetensors -i x -o y");
  EXPECT_NE(res.code, 0);
  EXPECT_NE(res.out.find("--precision"), std::string::npos) << res.out;
  // wrong shape
  io::SafetensorsWriter bad;
  bad.add_f32("input", {1, 3, 28, 28}, std::vector<float>(3 * 784, 0.5f).data());
  bad.write_atomic(d + "/bad.safetensors");
  res = run("infer -m kat_micro_patch4_28 -w " + d + "/w.safetensors -i " + d + "/bad.safetensors -o " + d +
            "/o2.safetensors");
  EXPECT_EQ(res.code, 1);
  EXPECT_NE(res.out.find("expects (N, 1, 28, 28)"), std::string::npos) << res.out;
  EXPECT_FALSE(fs::exists(d + "/o2.safetensors"));
  // weights for another model
  res = run("infer -m kat_mini_patch4_28 -w " + d + "/w.safetensors -i " + d + "/in.safetensors -o " + d +
            "/o3.safetensors");
  EXPECT_EQ(res.code, 1);
  EXPECT_NE(res.out.find("shape"), std::string::npos) << res.out;
  // truncated weights file
  {
    std::ifstream f(d + "/w.safetensors", std::ios::binary);
    std::string bytes((std::istreambuf_iterator<char>(f)), {});
    std::ofstream(d + "/trunc.safetensors", std::ios::binary) << bytes.substr(0, bytes.size() / 2);
  }
  res = run("infer -m kat_micro_patch4_28 -w " + d + "/trunc.safetensors -i " + d + "/in.safetensors -o " + d +
            "/o4.safetensors");
  EXPECT_EQ(res.code, 1);
  EXPECT_NE(res.out.find("trunc.safetensors"), std::string::npos) << res.out;
  res = run("infer -m kat_micro_patch4_28 -w /nonexistent.safetensors -i x -o y");
  EXPECT_EQ(res.code, 1);
  EXPECT_NE(res.out.find("/nonexistent.safetensors"), std::string::npos) << res.out;
  fs::remove_all(d);
}

TEST(Cli, TrainEvalPredictPlot) {
  const std::string d = tmpdir("kat_cli_train");
  CmdResult r =
      run("train --set depth=1 --set embed_dim=32 --set num_heads=2 --set mlp_hidden=64 --epochs 1 "
          "--train-subset 512 --test-subset 128 --batch 64 --no-progress --out " +
          d);
  ASSERT_EQ(r.code, 0) << r.out;
  EXPECT_NE(r.out.find("final test top-1"), std::string::npos) << r.out;
  // The trainer leaves the plots of the run in its directory (refreshed every epoch).
  EXPECT_TRUE(fs::exists(d + "/curves.svg"));
  EXPECT_TRUE(fs::exists(d + "/rationals.svg"));
  if (kat::viz::png_supported()) {
    EXPECT_TRUE(fs::exists(d + "/curves.png"));
    EXPECT_TRUE(fs::exists(d + "/rationals.png"));
  }
  for (const char* f : {"/curves.svg", "/rationals.svg", "/curves.png", "/rationals.png"}) fs::remove(d + f);
  r = run("eval --no-progress -w " + d + "/best.safetensors");
  ASSERT_EQ(r.code, 0) << r.out;
  EXPECT_NE(r.out.find("confusion matrix"), std::string::npos);
  EXPECT_NE(r.out.find("Ankle boot"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("precision auto"), std::string::npos) << r.out;
  // The same checkpoint evaluated with FP8 linears (the CPU emulation) and predicted with them.
  r = run("eval --no-progress --precision fp8 -w " + d + "/best.safetensors --json " + d + "/eval8.json");
  ASSERT_EQ(r.code, 0) << r.out;
  EXPECT_NE(r.out.find("precision fp8"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("top-1"), std::string::npos) << r.out;
  r = run("predict --precision fp8 -w " + d + "/best.safetensors " + std::string(KAT_TEST_DATA) +
          "/data/fmnist_test0_label9.png");
  ASSERT_EQ(r.code, 0) << r.out;
  r = run("eval --no-progress --precision bf16 -w " + d + "/best.safetensors");
  EXPECT_EQ(r.code, 1);
  EXPECT_NE(r.out.find("--precision bf16 is GPU only"), std::string::npos) << r.out;
  r = run("predict -w " + d + "/best.safetensors " + std::string(KAT_TEST_DATA) + "/data/fmnist_test0_label9.png");
  ASSERT_EQ(r.code, 0) << r.out;
  EXPECT_NE(r.out.find("%"), std::string::npos);
  r = run("predict -w " + d + "/best.safetensors /nonexistent.png");
  EXPECT_EQ(r.code, 1);
  r = run("plot " + d);
  ASSERT_EQ(r.code, 0) << r.out;
  EXPECT_TRUE(fs::exists(d + "/curves.svg"));
  EXPECT_TRUE(fs::exists(d + "/rationals.svg"));
  EXPECT_EQ(fs::exists(d + "/curves.png"), kat::viz::png_supported()) << r.out;
  EXPECT_EQ(fs::exists(d + "/rationals.png"), kat::viz::png_supported()) << r.out;
  // --device: a malformed value is a usage error; without a usable GPU, a clear error (CI).
  r = run("eval --no-progress -w " + d + "/best.safetensors --device gpu0");
  EXPECT_EQ(r.code, 1);
  EXPECT_NE(r.out.find("--device 'gpu0'"), std::string::npos) << r.out;
  if (!kat::cuda_available()) {
    for (const std::string cmd : {"eval --no-progress -w " + d + "/best.safetensors --device cuda",
                                  "predict --device cuda:1 -w " + d + "/best.safetensors " +
                                      std::string(KAT_TEST_DATA) + "/data/fmnist_test0_label9.png"}) {
      r = run(cmd);
      EXPECT_EQ(r.code, 1) << cmd;
      EXPECT_NE(r.out.find("--device cuda"), std::string::npos) << r.out;
    }
  }
  r = run("eval -w " + d + "/best.safetensors --ema");  // trained without --ema
  EXPECT_EQ(r.code, 1);
  EXPECT_NE(r.out.find("EMA"), std::string::npos) << r.out;
  fs::remove_all(d);
}
