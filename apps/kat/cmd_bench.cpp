// kat bench train|infer: throughput (img/s) of a model on synthetic data (random normal images),
// median of --iters timed runs after one warm-up. A training step = forward + loss + backward +
// AdamW update, driven through the Engine interface (train/engine.h) as `kat train` drives it:
// CpuEngine on the host, GpuRunner / GpuGroup on GPUs. Prints a human line and, with --csv, one CSV
// line.
#include <omp.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <memory>
#include <vector>

#include "attention_flag.h"
#include "commands.h"
#include "device_flag.h"
#include "kat/core/error.h"
#include "kat/core/rng.h"
#include "kat/model/kat_model.h"
#include "kat/train/cpu_engine.h"
#include "kat/train/engine.h"
#include "kat/train/gpu_group.h"
#include "kat/train/gpu_runner.h"
#include "kat/train/optim.h"
#include "kat/train/trainer.h"

namespace kat::cli {

namespace {
double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

// The one timing loop: seconds of each of the `iters` calls step(1..iters), after the warm-up call
// step(0).
template <class Step>
std::vector<double> time_steps(int iters, Step&& step) {
  std::vector<double> times;
  for (int i = 0; i <= iters; ++i) {
    const auto t0 = std::chrono::steady_clock::now();
    step(i);
    const double dt = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    if (i > 0) times.push_back(dt);
  }
  return times;
}
}  // namespace

void register_bench(CLI::App& app) {
  auto* sub = app.add_subcommand("bench", "Measure training-step or inference throughput on synthetic data");
  struct Opts {
    std::string mode, model = "kat_tiny_patch16_224", device = "cpu";
    std::vector<std::string> overrides;
    int batch = 32, iters = 5;
    bool csv = false, fp32 = false, phases = false, cuda_graph = false;
    std::string input = "device", attention, precision = "auto";
  };
  auto o = std::make_shared<Opts>();
  auto job = std::make_shared<JobFlags>();
  sub->add_option("mode", o->mode, "train or infer")->required()->check(CLI::IsMember({"train", "infer"}));
  sub->add_option("--model,-m", o->model, "Model name or config path")->capture_default_str();
  sub->add_option("--set", o->overrides, "Model config override key=value");
  sub->add_option("--batch,-b", o->batch, "Batch size")->capture_default_str();
  sub->add_option("--iters", o->iters, "Timed iterations (median reported)")->capture_default_str();
  sub->add_option("--device", o->device, "cpu, cuda, cuda:N, or cuda:0,1,... (train: data parallel)")
      ->capture_default_str();
  sub->add_flag("--fp32", o->fp32, "GPU: fp32 storage instead of bf16 (for checking)");
  sub->add_option(
         "--precision", o->precision,
         "auto (GPU bf16, CPU fp32) or fp8: the blocks' linear layers in FP8 as kat train --precision fp8 "
         "(GPU: FP8 tensor cores, one GPU, compute capability >= 8.9, EXPERIMENTAL; CPU: the emulation)")
      ->check(CLI::IsMember({"auto", "fp8"}))
      ->capture_default_str();
  sub->add_flag("--cuda-graph", o->cuda_graph,
                "GPU infer: replay the forward as a CUDA graph (captured after the first batch; one launch "
                "instead of hundreds: small batches are launch-bound). EXPERIMENTAL");
  sub->add_option("--input", o->input,
                  "GPU training input: device (one synthetic batch uploaded once, as timm's benchmark), host "
                  "(a host batch uploaded every step while the previous step computes, as `kat train`), "
                  "host-serial (uploaded every step, then computed: no overlap)")
      ->check(CLI::IsMember({"device", "host", "host-serial"}))
      ->capture_default_str();
  sub->add_flag("--phases", o->phases,
                "GPU training from the host: also print the host's median milliseconds per step in each call "
                "(enqueue, staging, waiting), to see whether the host or the GPU sets the pace");
  add_attention_option(sub, o->attention);
  sub->add_option("--rendezvous", job->rendezvous,
                  "train under torchrun / srun (one process per GPU, --batch the global batch): as kat train's");
  sub->add_option("--rendezvous-timeout", job->rendezvous_timeout, "As kat train's")->capture_default_str();
  sub->add_option("--dist-timeout", job->timeout, "As kat train's")->capture_default_str();
  sub->add_flag("--csv", o->csv, "Print a CSV line: mode,model,batch,where,img_per_s,ms_per_iter,device_mib");
  registry().push_back({sub,
                        [o, job] {
    KAT_CHECK(o->batch > 0 && o->iters > 0, "kat bench: --batch and --iters must be > 0");
    // Under torchrun / srun: this process's GPU and place in the job, as kat train's.
    TrainConfig job_cfg;
    job_cfg.device = o->device;
    resolve_train_devices(job_cfg, *job);
    const int world = job_cfg.procs.world_size;
    KAT_CHECK(world == 1 || o->mode == "train", "kat bench infer runs in one process (started as one of ", world,
              " by a launcher)");
    KAT_CHECK(o->batch % world == 0, "--batch ", o->batch, " (the global batch) must be divisible by the ", world,
              " processes of the job");
    apply_attention_option(o->attention);
    const bool fp8 = o->precision == "fp8";
    KAT_CHECK(!(fp8 && o->fp32), "kat bench: --precision fp8 runs on the bf16 model (not with --fp32)");
    ModelConfig cfg = ModelConfig::load(o->model);
    for (const auto& kv : o->overrides) cfg.apply_override(kv);
    KatModel m(cfg);
    m.init_params(0);
    m.plan(o->batch);
    const int B = o->batch, K = cfg.num_classes;
    Rng r(1);
    std::vector<float> x(size_t(B) * cfg.in_chans * cfg.img_size * cfg.img_size), t(size_t(B) * K, 0.0f);
    for (auto& v : x) v = float(r.normal());
    for (int b = 0; b < B; ++b) t[size_t(b) * K + b % K] = 1.0f;
    const bool train = o->mode == "train";
    // Training steps fed from the host through the Engine interface (as `kat train`): a host batch
    // staged every step, alternating between two copies; with overlap the next batch is staged
    // while this step computes (GPU: its upload overlaps the compute; CPU: a copy). Returns the
    // per-step times after one warm-up step.
    // rows: the rows staged (B; a process of a job: its shard).
    auto engine_step_times = [&](Engine& g, bool overlap, int rows = 0) {
      if (rows == 0) rows = B;
      const std::vector<float> x2 = x;
      // --phases: host time in each call (a call that returns at once only enqueued work; the
      // waits are where the host is ahead of the GPU).
      const char* names[] = {"begin_step",  "compute_staged (enqueue)", "stage next batch", "staged_loss (wait)",
                             "finish_step", "synchronize (wait)"};
      std::vector<std::vector<double>> ph(6);
      g.stage(x.data(), t.data(), rows);
      const std::vector<double> times = time_steps(o->iters, [&](int i) {
        auto tp = std::chrono::steady_clock::now();
        auto mark = [&](int k) {
          const auto now = std::chrono::steady_clock::now();
          if (i > 0) ph[size_t(k)].push_back(std::chrono::duration<double>(now - tp).count());
          tp = now;
        };
        const float* next = i % 2 ? x.data() : x2.data();
        Rng dp(i);
        g.begin_step();
        mark(0);
        g.compute_staged(1, &dp);
        mark(1);
        if (overlap) g.stage(next, t.data(), rows);
        mark(2);
        g.staged_loss();
        mark(3);
        g.finish_step(1e-4, 0.0);
        if (!overlap) g.stage(next, t.data(), rows);
        mark(4);
        g.synchronize();
        mark(5);
      });
      if (o->phases)
        for (size_t k = 0; k < ph.size(); ++k)
          std::fprintf(stderr, "  host %-26s %7.3f ms\n", names[k], median(ph[k]) * 1e3);
      return times;
    };
    if (world > 1) {
      // One process of a job (as kat train under torchrun / srun): this process's shard of the
      // global batch B (its first B / world synthetic rows) on its GPU, the gradients all-reduced
      // over the processes every step. Rank 0 reports the job's throughput.
      GpuGroup g(cfg, job_cfg.devices.at(0), AdamWConfig{}, B / world, make_process_group(job_cfg));
      if (fp8) g.enable_fp8();  // refused: one GPU in one process for now
      g.upload_params(m.params.data());
      const std::vector<double> times = engine_step_times(g, true, B / world);
      const double med = median(times), mib = double(g.device_bytes_in_use()) / (1 << 20);
      if (!job_cfg.is_rank0()) return 0;
      if (o->csv)
        std::printf("%s,%s,%d,%s bf16 x%d processes,%.1f,%.3f,%.0f\n", o->mode.c_str(), cfg.name.c_str(), B,
                    o->device.c_str(), world, B / med, med * 1e3, mib);
      else
        std::printf(
            "%s train batch %d over %d processes (one GPU each, bf16, host input): %.1f img/s (%.2f ms per "
            "step), device memory %.0f MiB per process\n",
            cfg.name.c_str(), B, world, B / med, med * 1e3, mib);
      return 0;
    }
    if (const auto devs = parse_devices(o->device); devs.size() > 1) {
      // Several GPUs (data parallel, as `kat train --device cuda:0,1,...`): a host batch staged
      // every step while the previous one computes; B is the global batch.
      KAT_CHECK(train, "kat bench: several GPUs are for training (infer runs on one)");
      GpuGroup g(cfg, devs, AdamWConfig{}, B);
      if (fp8) g.enable_fp8();  // refused: one GPU in one process for now
      g.upload_params(m.params.data());
      const std::vector<double> times = engine_step_times(g, true);
      const double med = median(times), mib = double(g.device_bytes_in_use()) / (1 << 20);
      if (o->csv)
        std::printf("%s,%s,%d,%s bf16 x%zu,%.1f,%.3f,%.0f\n", o->mode.c_str(), cfg.name.c_str(), B,
                    o->device.c_str(), devs.size(), B / med, med * 1e3, mib);
      else
        std::printf(
            "%s train batch %d over %zu GPUs (%s, bf16, host input): %.1f img/s (%.2f ms per step), device "
            "memory %.0f MiB in all\n",
            cfg.name.c_str(), B, devs.size(), o->device.c_str(), B / med, med * 1e3, mib);
      return 0;
    }
    const int dev = parse_device(o->device);
    std::unique_ptr<GpuRunner> gpu;
    std::unique_ptr<CpuEngine> cpu;
    if (dev >= 0) {
      gpu = std::make_unique<GpuRunner>(cfg, dev, o->fp32 ? DType::F32 : DType::BF16, AdamWConfig{}, B, train);
      if (fp8) gpu->enable_fp8();  // before the upload: the FP8 buffers are planned first
      gpu->upload_params(m.params.data());
    } else {
      if (fp8) m.enable_fp8();                                     // the CPU emulation
      cpu = std::make_unique<CpuEngine>(m, AdamWConfig{}, train);  // computes on m (its params)
    }
    KAT_CHECK(o->input == "device" || (gpu && train), "kat bench: --input ", o->input,
              " needs train --device cuda");
    KAT_CHECK(!o->cuda_graph || (gpu && !train), "kat bench: --cuda-graph is for infer --device cuda");
    if (o->cuda_graph) gpu->set_cuda_graphs(true);
    std::vector<double> times;
    const bool host_input = gpu && o->input != "device";
    if (train && !gpu) {
      times = engine_step_times(*cpu, true);
    } else if (host_input) {
      times = engine_step_times(*gpu, o->input == "host");
    } else if (gpu) {
      // The synthetic batch is uploaded once (warm-up) and stays on the GPU, as in timm's
      // benchmark; `kat train` uploads every real batch (--input host).
      times = time_steps(o->iters, [&](int i) {
        Rng dp(i);
        const float* xi = i == 0 ? x.data() : nullptr;
        if (train)
          gpu->train_step(xi, i == 0 ? t.data() : nullptr, B, 1e-4, &dp);
        else
          gpu->forward(xi, B, nullptr);
        gpu->synchronize();
      });
    } else {
      times = time_steps(o->iters, [&](int) { cpu->logits(x.data(), B); });
    }
    const double med = median(times);
    const std::string where = gpu ? o->device +
                                        (o->fp32 ? " fp32"
                                         : fp8   ? " fp8"
                                                 : " bf16") +
                                        (host_input ? " input " + o->input : "") +
                                        // "graph" only when the graphs stayed on (a capture can fail)
                                        (o->cuda_graph ? (gpu->cuda_graphs() ? " graph" : " graph-failed") : "") +
                                        // what ran when cuDNN may run (ours where it cannot)
                                        (ops::requested_attention_backend() != ops::AttentionBackend::Ours
                                             ? std::string(" attention ") + gpu->attention_name()
                                             : std::string())
                                  : std::to_string(omp_get_max_threads()) + " threads" + (fp8 ? " fp8" : "");
    // GPU: all device memory the run holds (it is planned up front, so this is also the peak).
    const double mib = gpu ? double(gpu->device_bytes_in_use()) / (1 << 20) : 0.0;
    if (o->csv)
      std::printf("%s,%s,%d,%s,%.1f,%.3f,%.0f\n", o->mode.c_str(), cfg.name.c_str(), B, where.c_str(), B / med,
                  med * 1e3, mib);
    else
      std::printf("%s %s batch %d, %s: %.1f img/s (%.2f ms per %s)%s\n", cfg.name.c_str(), o->mode.c_str(), B,
                  where.c_str(), B / med, med * 1e3, train ? "step" : "batch",
                  gpu ? (", device memory " + std::to_string(int(mib + 0.5)) + " MiB").c_str() : "");
    return 0;
                        }});
}

}  // namespace kat::cli
