// One process per GPU (issue #14) on a machine with 2+ GPUs (skipped with fewer): two "processes"
// of a job, here two threads each holding its own GpuGroup over a communicator that spans them
// (ncclCommInitRank, rank 0's id through the real TCP rendezvous on the loopback address), train
// the same steps as the one-process GpuGroup over the same two GPUs. The end-to-end runs of `kat
// train` under torchrun (losses, throughput, a killed rank) are bench/dist_2gpu.sh.
#include <cuda_runtime.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <exception>
#include <thread>
#include <vector>

#include "dist/rendezvous.h"
#include "kat/core/rng.h"
#include "kat/model/kat_model.h"
#include "kat/train/gpu_group.h"

using namespace kat;

namespace {

int gpu_count() {
  int n = 0;
  return cuda_available() && cudaGetDeviceCount(&n) == cudaSuccess ? n : 0;
}

// The ProcessGroup of rank `rank` of 2, meeting on the loopback address at `port`.
ProcessGroup loopback_group(int rank, int port) {
  dist::RendezvousSpec spec;
  spec.host = "127.0.0.1";
  spec.port = port;
  spec.timeout_s = 60;
  spec.job_tag = "test_dist_gpu";
  ProcessGroup pg;
  pg.rank = rank;
  pg.world_size = 2;
  pg.timeout_s = 120;
  pg.share_from_rank0 = [spec, rank](const std::vector<uint8_t>& blob) {
    return dist::share_from_rank0(spec, rank, 2, blob);
  };
  return pg;
}

}  // namespace

// Rank r stages rows [r B/2, (r+1) B/2) of every global batch and draws drop-path from the Rng the
// one-process group's replica r would. Every gradient element is then summed as one addition a + b
// on both paths, and a + b == b + a exactly, so weights and losses must be bitwise the
// one-process group's (the same kernels, shapes and shards on the same GPUs).
TEST(GpuJob, TwoProcessesMatchTheOneProcessGroupBitwise) {
  if (gpu_count() < 2) GTEST_SKIP() << "needs 2 GPUs";
  ModelConfig cfg = ModelConfig::load("kat_micro_patch4_28");
  cfg.apply_override("depth=2");
  cfg.apply_override("drop_path_rate=0.1");
  KatModel m(cfg);
  m.init_params(7);
  const int B = 16, K = cfg.num_classes, steps = 4, half = B / 2;
  const size_t img = size_t(cfg.in_chans) * cfg.img_size * cfg.img_size;
  std::vector<std::vector<float>> xs(steps, std::vector<float>(img * B)),
      ts(steps, std::vector<float>(size_t(B) * K, 0.f));
  Rng r(3);
  for (int i = 0; i < steps; ++i) {
    for (auto& v : xs[size_t(i)]) v = float(r.normal());
    for (int b = 0; b < B; ++b) ts[size_t(i)][size_t(b) * K + (5 * b + i) % K] = 1.f;
  }

  // The one-process group over GPUs 0 and 1.
  std::vector<double> l_one;
  std::vector<float> w_one(m.params.size());
  {
    GpuGroup g(cfg, {0, 1}, AdamWConfig{}, B);
    g.upload_params(m.params.data());
    for (int i = 0; i < steps; ++i) {
      g.begin_step();
      g.stage(xs[size_t(i)].data(), ts[size_t(i)].data(), B);
      Rng dp(100 + i);
      g.compute_staged(1, &dp);
      l_one.push_back(g.staged_loss());
      g.finish_step(1e-3, 1.0);
    }
    g.download_params(w_one.data());
  }

  // Two processes of a job, one GPU each.
  const int port = 20000 + int(::getpid() % 20000);
  std::vector<std::vector<double>> l_job(2);
  std::vector<std::vector<float>> w_job(2, std::vector<float>(m.params.size()));
  std::vector<std::vector<double>> sums(2);
  std::vector<std::exception_ptr> err(2);
  std::vector<std::thread> ranks;
  for (int rank = 0; rank < 2; ++rank)
    ranks.emplace_back([&, rank] {
      try {
        GpuGroup g(cfg, rank, AdamWConfig{}, half, loopback_group(rank, port));
        EXPECT_EQ(g.process_count(), 2);
        g.upload_params(m.params.data());
        for (int i = 0; i < steps; ++i) {
          g.begin_step();
          g.stage(xs[size_t(i)].data() + img * half * rank, ts[size_t(i)].data() + size_t(K) * half * rank, half);
          Rng dp(100 + i);
          g.compute_staged(1, &dp);
          l_job[size_t(rank)].push_back(g.staged_loss());
          g.finish_step(1e-3, 1.0);
        }
        g.download_params(w_job[size_t(rank)].data());
        // What evaluation reduces: counts and sums over the processes, the same on both.
        sums[size_t(rank)] = {double(rank + 1), 0.25 * rank, 1e6};
        g.all_reduce_sum(sums[size_t(rank)].data(), 3);
      } catch (...) {
        err[size_t(rank)] = std::current_exception();
      }
    });
  for (auto& t : ranks) t.join();
  for (auto& e : err)
    if (e) std::rethrow_exception(e);

  for (int rank = 0; rank < 2; ++rank) {
    EXPECT_EQ(l_job[size_t(rank)], l_one) << "rank " << rank << ": the mean loss over the processes";
    EXPECT_TRUE(w_job[size_t(rank)] == w_one) << "rank " << rank << ": weights differ from the one-process group";
    EXPECT_EQ(sums[size_t(rank)], (std::vector<double>{3.0, 0.25, 2e6})) << "rank " << rank;
  }
}

// A job needs its rank in range and a way to share the id; errors say so before any NCCL call.
TEST(GpuJob, ProcessGroupIsChecked) {
  if (gpu_count() < 1) GTEST_SKIP() << "needs a GPU";
  ModelConfig cfg = ModelConfig::load("kat_micro_patch4_28");
  ProcessGroup pg = loopback_group(0, 1);
  pg.rank = 2;
  EXPECT_THROW(GpuGroup(cfg, 0, AdamWConfig{}, 4, pg), Error);
  pg = loopback_group(0, 1);
  pg.share_from_rank0 = nullptr;
  EXPECT_THROW(GpuGroup(cfg, 0, AdamWConfig{}, 4, pg), Error);
}
