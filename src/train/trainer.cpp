#include "kat/train/trainer.h"

#include <omp.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <csignal>
#include <cstdio>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <thread>
#include <tuple>

#include "dist/rendezvous.h"
#include "kat/core/error.h"
#include "kat/data/data.h"
#include "kat/io/safetensors.h"
#include "kat/model/kat_model.h"
#include "kat/model/pretrained.h"
#include "kat/train/cpu_engine.h"
#include "kat/train/engine.h"
#include "kat/train/evaluate.h"
#include "kat/train/gpu_group.h"
#include "kat/train/optim.h"
#include "kat/train/run_plots.h"
#include "train/progress.h"
#include "train/run_phase.h"

#ifdef KAT_HAVE_NVJPEG
#include "data/cuda/gpu_loader.h"
#endif

namespace fs = std::filesystem;
using nlohmann::json;

namespace kat {

std::atomic<bool> g_stop_requested{false};

namespace {

void on_sigint(int) {
  if (g_stop_requested.load()) std::_Exit(130);  // second Ctrl-C: leave now
  g_stop_requested.store(true);
}

std::string ckpt_name(int64_t step) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "ckpt-step%08lld.safetensors", (long long)step);
  return buf;
}

std::vector<std::string> list_checkpoints(const std::string& dir) {
  std::vector<std::string> v;
  std::error_code ec;
  for (const auto& e : fs::directory_iterator(dir, ec)) {
    const std::string n = e.path().filename().string();
    if (n.rfind("ckpt-step", 0) == 0 && e.path().extension() == ".safetensors") v.push_back(e.path().string());
  }
  std::sort(v.begin(), v.end());
  return v;
}

}  // namespace

data::LoaderConfig train_loader_config(const TrainConfig& c, const ModelConfig& mc) {
  const int img_size = mc.img_size;
  data::LoaderConfig l;
  l.batch_size = c.batch;  // the global batch: a process of a job loads its rows of it
  l.shard_world = c.procs.world_size;
  l.shard_rank = c.procs.rank;
  l.shuffle = true;
  l.drop_last = true;
  l.seed = c.seed;
  l.num_workers = c.workers;
  if (c.workers < 0) {
    // CPU training keeps the cores for compute; a GPU run is fed by the CPU: use them for decoding
    // and augmentation (the loader's output does not depend on the worker count).
    // The processes of a job on one node share its cores.
    const int hw = int(std::max(1u, std::thread::hardware_concurrency())) / std::max(1, c.procs.local_world_size);
    l.num_workers = c.devices.empty() ? 1 : std::clamp(hw - 1, 1, 64);
  }
  l.aug.train = true;
  l.aug.out_size = img_size;
  l.aug.crop = c.crop;
  l.aug.padding = c.padding;
  l.aug.hflip = c.hflip;
  l.aug.randaug_n = c.randaug_n;
  l.aug.randaug_m = c.randaug_m;
  l.aug.randaug_mstd = c.randaug_mstd;
  l.aug.random_erase = c.random_erase;
  std::tie(l.aug.mean, l.aug.std) = input_normalisation(c, mc);
  l.mix.mixup_alpha = c.mixup;
  l.mix.cutmix_alpha = c.cutmix;
  l.mix.prob = c.mix_prob;
  l.mix.switch_prob = c.switch_prob;
  l.mix.label_smoothing = c.label_smoothing;  // applied into the targets by the loader
  return l;
}

ProcessGroup make_process_group(const TrainConfig& tc) {
  ProcessGroup pg;
  pg.rank = tc.procs.rank;
  pg.world_size = tc.procs.world_size;
  pg.timeout_s = tc.procs.timeout;
  const dist::LaunchEnv none;  // tc.procs.rendezvous is complete (tcp:HOST:PORT or file:PATH)
  dist::RendezvousSpec spec = dist::parse_rendezvous(tc.procs.rendezvous, none, tc.procs.rendezvous_timeout);
  spec.job_tag = tc.procs.job_tag;
  pg.share_from_rank0 = [spec, rank = pg.rank, world = pg.world_size](const std::vector<uint8_t>& blob) {
    return dist::share_from_rank0(spec, rank, world, blob);
  };
  return pg;
}

namespace {

// Appends JSON lines; on resume drops lines logged after the checkpoint's step (a killed run may
// have logged steps that are about to be replayed).
class MetricsLog {
 public:
  MetricsLog(const std::string& path, int64_t keep_up_to_step) : path_(path) {
    if (keep_up_to_step >= 0 && fs::exists(path)) {
      std::ifstream in(path);
      std::string line, kept;
      while (std::getline(in, line)) {
        try {
          const json j = json::parse(line);
          if (j.value("step", int64_t(0)) <= keep_up_to_step) kept += line + "\n";
        } catch (...) {
        }
      }
      in.close();
      std::ofstream(path, std::ios::trunc) << kept;
    } else if (keep_up_to_step < 0) {
      std::ofstream(path, std::ios::trunc);
    }
    out_.open(path, std::ios::app);
    KAT_CHECK(out_.good(), "cannot write ", path);
  }
  void write(const json& j) {
    out_ << j.dump() << "\n";
    out_.flush();
  }

 private:
  std::string path_;
  std::ofstream out_;
};

struct State {
  int64_t step = 0;  // optimizer steps done
  double best_top1 = -1;
};

// The host copy of a run's training state, in the flat table layout: what a checkpoint holds
// besides the weights (KatModel::params).
struct HostState {
  std::vector<float> m, v;  // AdamW moments (num_params)
  int64_t optim_steps = 0;
  std::vector<float> ema;  // (num_params) or empty: no EMA
  // --precision fp8: the amax history (Engine::download_fp8_history's layout: fp8_amax (slots,
  // length), fp8_seen (slots)); empty otherwise.
  std::vector<float> fp8_amax;
  std::vector<int64_t> fp8_seen;
};

int replica_count(const TrainConfig& tc) { return std::max<int>(1, int(tc.devices.size())) * tc.procs.world_size; }

void save_checkpoint(const std::string& path, const KatModel& m, const HostState& hs, const TrainConfig& tc,
                     const State& st, const std::vector<std::string>& class_names) {
  io::SafetensorsWriter w;
  m.add_weights(w);
  if (!hs.ema.empty()) m.add_weights(w, "ema.", hs.ema.data());
  w.add_f32("optim.m", {int64_t(hs.m.size())}, hs.m.data());
  w.add_f32("optim.v", {int64_t(hs.v.size())}, hs.v.data());
  if (!hs.fp8_seen.empty()) {  // --precision fp8: the delayed scales' history, so a resume is bitwise
    const int64_t slots = int64_t(hs.fp8_seen.size());
    w.add_f32("fp8.amax_history", {slots, int64_t(hs.fp8_amax.size()) / slots}, hs.fp8_amax.data());
    w.add("fp8.amax_seen", io::DType::I64, {slots}, hs.fp8_seen.data());
  }
  w.set_metadata("format", "kat-train-checkpoint-1");
  w.set_metadata("model_config", m.config().to_json(-1));
  w.set_metadata("train_config", tc.to_json(-1));
  w.set_metadata("step", std::to_string(st.step));
  w.set_metadata("class_names", json(class_names).dump());
  w.set_metadata("optim_steps", std::to_string(hs.optim_steps));
  // Model replicas the gradients were summed over (GPUs of the process x processes of the job): a
  // resume with another count is told what changes.
  w.set_metadata("replicas", std::to_string(replica_count(tc)));
  char best[64];
  std::snprintf(best, sizeof best, "%.17g", st.best_top1);
  w.set_metadata("best_top1", best);
  w.write_atomic(path);
}

// A number stored in a checkpoint's metadata; a missing or malformed value names file and key.
double metadata_number(const io::SafetensorsFile& f, const std::string& key) {
  const auto it = f.metadata().find(key);
  KAT_CHECK(it != f.metadata().end(), f.source(), ": checkpoint metadata has no '", key, "'");
  try {
    size_t pos = 0;
    const double v = std::stod(it->second, &pos);
    if (pos == it->second.size()) return v;
  } catch (...) {
  }
  throw Error(detail::concat(f.source(), ": checkpoint metadata '", key, "' is not a number: '", it->second, "'"));
}

}  // namespace

void install_sigint_handler() {
  std::signal(SIGINT, on_sigint);
  install_run_phase_report();  // SIGUSR1: where the run is (train/run_phase.h)
}

std::string latest_checkpoint(const std::string& dir) {
  auto v = list_checkpoints(dir);
  return v.empty() ? "" : v.back();
}

namespace {

// ---- resume: the run's configuration and where it continues from -----------------------------

struct Resume {
  std::unique_ptr<io::SafetensorsFile> ck;  // null: a fresh run
  State st;
};

// A fresh run (resume_dir empty) keeps tc; a resumed one continues the newest checkpoint in
// resume_dir with its saved config, of which only mechanics that do not change the math may differ.
Resume resume_run(TrainConfig& tc, const std::string& resume_dir) {
  Resume r;
  if (resume_dir.empty()) return r;
  const std::string path = latest_checkpoint(resume_dir);
  KAT_CHECK(!path.empty(), "--resume ", resume_dir, ": no checkpoint (ckpt-step*.safetensors) in this directory",
            tc.procs.world_size > 1
                ? detail::concat(" (rank ", tc.procs.rank, " of ", tc.procs.world_size,
                                 ": every process reads rank 0's run directory, which must be on a filesystem "
                                 "all nodes share)")
                : std::string());
  r.ck = std::make_unique<io::SafetensorsFile>(io::SafetensorsFile::load(path));
  const auto& md = r.ck->metadata();
  KAT_CHECK(md.count("train_config") && md.count("model_config") && md.count("step"), path,
            ": not a kat training checkpoint (no train_config/step metadata)");
  const TrainConfig saved = TrainConfig::from_json(md.at("train_config"), path);
  TrainConfig next = saved;
  next.device = tc.device;  // checkpoints move between backends
  // and between data paths (the same decisions, pixels within decode rounding) when asked to;
  // otherwise the run keeps the path it was started with.
  if (tc.decode != "auto") next.decode = tc.decode;
  next.devices = tc.devices;
  next.procs = tc.procs;  // the job it is resumed in (same global batch, any world size)
  next.out_dir = resume_dir;
  next.max_steps = tc.max_steps;
  next.progress = tc.progress;
  // The GPU loader's mechanics (same batches, same pixels whatever they are): this command line's,
  // so a run resumed on another machine can be tuned for it.
  next.decode_streams = tc.decode_streams;
  next.loader_nice = tc.loader_nice;
  next.decode_priority = tc.decode_priority;
  next.data_timeout = tc.data_timeout;
  tc = next;
  r.st.step = int64_t(metadata_number(*r.ck, "step"));
  r.st.best_top1 = metadata_number(*r.ck, "best_top1");
  // Another number of replicas (GPUs x processes) than the run had: the same global batches, sample
  // order and learning rate, but the drop-path masks are drawn per replica shard and the gradients
  // summed in another order, so it continues on another trajectory than the straight run would.
  if (const auto it = md.find("replicas");
      it != md.end() && it->second != std::to_string(replica_count(tc)) && tc.is_rank0())
    std::fprintf(
        stderr,
        "note: %s was trained on %s model replica(s) (GPUs x processes), this run has %d: the same global "
        "batch (%d) and sample order, but drop-path masks are drawn per replica and the gradients summed "
        "in another order, so the run is not bitwise the one it would have been\n",
        path.c_str(), it->second.c_str(), replica_count(tc), tc.batch * tc.accum_steps);
  return r;
}

// ---- data: datasets, loaders and the step counts they imply -----------------------------------

struct RunData {
  data::Dataset train, test;
  data::LoaderConfig train_cfg, eval_cfg;
  std::string decode;  // "cpu" or "gpu" (TrainConfig::resolve_decode)
  int64_t steps_per_epoch = 0, total_steps = 0, warmup_steps = 0;
};

RunData load_run_data(const TrainConfig& tc, const ModelConfig& mc) {
  RunData d;
  std::string why_cpu;
  d.decode = tc.resolve_decode(&why_cpu);
  if (!tc.devices.empty() && tc.data.rfind("folder:", 0) == 0 && tc.is_rank0())
    std::fprintf(stderr, "decode: %s%s\n", d.decode.c_str(),
                 d.decode == "gpu" ? " (nvJPEG + GPU augmentation)" : (" (" + why_cpu + ")").c_str());
  int skipped_train = 0, skipped_test = 0;
  // The GPU pipeline reads the train split's files per batch (lazily) and skips bad files itself.
  const bool gpu = d.decode == "gpu", train_lazy = tc.lazy_data || gpu;
  // Lazy folders decode to the model's channel count (an eager load decides from the images); the
  // test split follows the train split.
  const int folder_channels = train_lazy ? mc.in_chans : 0;
  d.train = data::load_dataset(tc.data, true, gpu ? false : tc.skip_bad, mc.img_size, &skipped_train, train_lazy,
                               folder_channels);
  d.test = data::load_dataset(tc.data, false, tc.skip_bad, mc.img_size, &skipped_test, tc.lazy_data,
                              folder_channels, tc.eval_crop_pct);
  if (skipped_train + skipped_test > 0)
    std::fprintf(stderr, "--skip-bad: skipped %d corrupt training and %d corrupt test images\n", skipped_train,
                 skipped_test);
  if (tc.train_subset > 0) d.train = data::subset(d.train, size_t(tc.train_subset));
  if (tc.test_subset > 0) d.test = data::subset(d.test, size_t(tc.test_subset));
  KAT_CHECK(d.train.channels == mc.in_chans, tc.data, ": images have ", d.train.channels,
            " channel(s) but model '", mc.name, "' expects in_chans=", mc.in_chans,
            " (use --set in_chans=", d.train.channels, ")");
  KAT_CHECK(d.train.num_classes <= mc.num_classes, tc.data, ": ", d.train.num_classes,
            " classes but the model has num_classes=", mc.num_classes,
            " (use --set num_classes=", d.train.num_classes, ")");
  // A model with more outputs than the dataset has classes (a 1000-class config on a 10-class
  // folder) trains with targets as wide as its logits, as timm does with its num_classes: the extra
  // classes are never labelled. The loaders size the targets by the dataset's class count, so widen
  // it here (before, the engine read B x num_classes targets from a B x classes buffer).
  if (d.train.num_classes < mc.num_classes) {
    std::fprintf(stderr,
                 "note: %s has %d classes and model '%s' %d outputs: training all %d (--set num_classes=%d "
                 "for a %d-way head)\n",
                 tc.data.c_str(), d.train.num_classes, mc.name.c_str(), mc.num_classes, mc.num_classes,
                 d.train.num_classes, d.train.num_classes);
    d.train.num_classes = mc.num_classes;
  }
  d.train_cfg = train_loader_config(tc, mc);
  d.eval_cfg = data::LoaderConfig::eval(d.train_cfg, tc.eval_batch);
  return d;
}

// ---- model and engine ---------------------------------------------------------------------------

// The host model (weights for checkpoints, plots, the CPU engine's compute) and the host training
// state, initialised fresh or loaded from the checkpoint.
void init_host_state(const TrainConfig& tc, const ModelConfig& mc, const io::SafetensorsFile* ck, KatModel& model,
                     HostState& hs) {
  hs.m.assign(size_t(model.num_params()), 0.0f);
  hs.v.assign(size_t(model.num_params()), 0.0f);
  if (ck) {
    model.load_weights(*ck);
    ck->read_f32("optim.m", hs.m.data(), int64_t(hs.m.size()));
    ck->read_f32("optim.v", hs.v.data(), int64_t(hs.v.size()));
    hs.optim_steps = int64_t(metadata_number(*ck, "optim_steps"));
    if (tc.precision == "fp8") {
      KAT_CHECK(ck->has("fp8.amax_history") && ck->has("fp8.amax_seen"), ck->source(),
                ": a --precision fp8 checkpoint without its amax history (fp8.amax_history, fp8.amax_seen)");
      hs.fp8_amax = ck->to_f32("fp8.amax_history");
      hs.fp8_seen = ck->to_i64("fp8.amax_seen");
    }
  } else {
    model.init_params(tc.seed);
    if (!tc.init.empty()) {  // fine-tuning: pretrained weights over the fresh initialisation
      const auto f = io::SafetensorsFile::load(tc.init);
      const auto notes = load_pretrained(model, f);
      std::fprintf(stderr, "initialised from %s%s\n", tc.init.c_str(),
                   notes.empty() ? " (every tensor as saved)" : ":");
      for (const auto& n : notes) std::fprintf(stderr, "  %s\n", n.c_str());
    }
  }
  if (tc.ema_decay > 0) {
    hs.ema = model.params;
    if (ck) {
      KatModel tmp(mc);
      tmp.load_weights(*ck, "ema.");
      hs.ema = tmp.params;
    }
  }
}

// The engine of tc.devices (none: the CPU, computing on `model` itself; one or several GPUs: the
// same math on KatModelCuda replicas, bf16 compute, fp32 master weights and AdamW state), holding
// the host state.
std::unique_ptr<Engine> make_engine(const TrainConfig& tc, const ModelConfig& mc, KatModel& model,
                                    const HostState& hs, bool resumed) {
  AdamWConfig ocfg;
  ocfg.lr = tc.lr;
  ocfg.weight_decay = tc.weight_decay;
  ocfg.decay_rational = tc.decay_rational;
  std::unique_ptr<Engine> e;
  if (tc.devices.empty()) {
    if (tc.precision == "fp8") model.enable_fp8();  // the emulation
    e = std::make_unique<CpuEngine>(model, ocfg);
  } else {
    std::unique_ptr<GpuGroup> g;
    if (tc.procs.world_size > 1) {
      // One process of a job: its GPU, its shard of the global batch, rank 0's NCCL id through the
      // rendezvous (tc.procs.rendezvous, resolved by the CLI).
      g = std::make_unique<GpuGroup>(mc, tc.devices.at(0), ocfg, tc.batch / tc.procs.world_size,
                                     make_process_group(tc));
    } else {
      g = std::make_unique<GpuGroup>(mc, tc.devices, ocfg, tc.batch);
    }
    if (tc.precision == "fp8") {
      g->enable_fp8();  // one GPU, one process (GpuGroup::enable_fp8)
      std::fprintf(stderr,
                   "kat: --precision fp8 on %s: FP8 linear layers (EXPERIMENTAL: compare with a bf16 run)\n",
                   g->device_name().c_str());
    }
    e = std::move(g);
  }
  e->upload_params(model.params.data());
  if (resumed) e->upload_moments(hs.m.data(), hs.v.data(), hs.optim_steps);
  if (resumed && tc.precision == "fp8") e->upload_fp8_history(hs.fp8_amax, hs.fp8_seen);
  if (!hs.ema.empty()) e->ema_init(hs.ema.data(), tc.ema_decay);
  return e;
}

// ---- where training batches come from -----------------------------------------------------------

// The CPU loader (host batches the engine uploads) or the GPU pipeline (batches already on the
// device); the same batches by (seed, epoch, batch) either way, up to resampling rounding.
class BatchFeed {
 public:
  virtual ~BatchFeed() = default;
  virtual int64_t batches_per_epoch() const = 0;
  virtual void start_epoch(int64_t epoch, int64_t first_batch) = 0;
  virtual void stage_next(Engine& engine) = 0;  // the next batch of the epoch into engine.stage*
  virtual std::string summary() const { return ""; }
  // Seconds stage_next() has waited so far for the loader to have the batch ready (not its copy).
  virtual double wait_seconds() const = 0;
};

class CpuFeed : public BatchFeed {
 public:
  CpuFeed(const data::Dataset& ds, const data::LoaderConfig& cfg) : loader_(ds, cfg) {}
  int64_t batches_per_epoch() const override { return loader_.batches_per_epoch(); }
  void start_epoch(int64_t epoch, int64_t first_batch) override { loader_.start_epoch(epoch, first_batch); }
  void stage_next(Engine& engine) override {
    const auto t0 = std::chrono::steady_clock::now();
    KAT_CHECK(loader_.next(batch_), "internal error: loader ran out of batches");
    wait_s_ += std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    engine.stage(batch_.images.data(), batch_.targets.data(), batch_.n);
  }
  double wait_seconds() const override { return wait_s_; }

 private:
  data::Loader loader_;
  data::Batch batch_;
  double wait_s_ = 0;
};

#ifdef KAT_HAVE_NVJPEG
class GpuFeed : public BatchFeed {
 public:
  GpuFeed(const data::Dataset& ds, const data::LoaderConfig& cfg, const TrainConfig& tc)
      : loader_(ds, cfg, options(tc)) {}
  int64_t batches_per_epoch() const override { return loader_.batches_per_epoch(); }
  void start_epoch(int64_t epoch, int64_t first_batch) override { loader_.start_epoch(epoch, first_batch); }
  void stage_next(Engine& engine) override {
    KAT_CHECK(loader_.next(batch_), "internal error: GPU loader ran out of batches");
    const auto t0 = std::chrono::steady_clock::now();
    engine.stage_device(batch_.images, batch_.targets, batch_.n);
    stage_s_ += std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    ++staged_;
  }
  std::string summary() const override {
    const data::cuda::DecodeStats s = loader_.decode_stats();
    // Where the pipeline's time went, per batch (thread-time where several threads share a phase).
    const data::cuda::PipelineTimes t = loader_.times();
    const double ms = 1e3 / double(std::max<int64_t>(1, t.batches));
    char times[512];
    std::snprintf(times, sizeof times,
                  "data: %.1f ms per batch waiting for it (%lld batches; per batch: nvJPEG calls %.1f ms on %d "
                  "decode threads, augmentation %.1f ms, readers %.1f thread-ms; on the GPU, queueing "
                  "included: decode %.1f ms, augmentation %.1f ms); %.1f ms per batch staging it into the "
                  "engine (bf16 conversion, waited for)",
                  ms * t.next_wait, (long long)t.batches, ms * t.device_decode, loader_.decode_threads(),
                  ms * t.device_augment, ms * (t.read + t.cpu_decode), 1e3 * t.gpu_decode, 1e3 * t.gpu_augment,
                  1e3 * stage_s_ / double(std::max<int64_t>(1, staged_)));
    return detail::concat("decode: nvJPEG ", loader_.decode_backend(), ": ", s.hardware,
                          " images on the JPEG engine, ", s.cuda, " on CUDA cores, ", s.cpu, " on the CPU, ",
                          loader_.bad_files(), " unreadable samples skipped (--skip-bad)",
                          s.device_allocs < 0
                              ? std::string()
                              : detail::concat("; nvJPEG asked for memory ", s.device_allocs, " (device) / ",
                                               s.pinned_allocs, " (pinned) times in ", t.batches, " batches"),
                          "\n", times);
  }
  double wait_seconds() const override { return loader_.times().next_wait; }

 private:
  static data::cuda::GpuLoaderOptions options(const TrainConfig& tc) {
    data::cuda::GpuLoaderOptions o;
    o.device = tc.devices.at(0);
    o.read_threads = tc.workers > 0 ? tc.workers : 0;
    o.skip_bad = tc.skip_bad;
    o.cpu_decode_share = tc.decode_cpu_share;
    o.decode_streams = tc.decode_streams;
    o.thread_nice = tc.loader_nice;
    o.high_priority = tc.decode_priority == "high";
    o.stall_timeout_s = tc.data_timeout;
    return o;
  }
  data::cuda::GpuLoader loader_;
  data::cuda::GpuBatch batch_;
  double stage_s_ = 0;  // host time in Engine::stage_device (it waits for its copy)
  int64_t staged_ = 0;
};
#endif

std::unique_ptr<BatchFeed> make_feed(const RunData& d, const TrainConfig& tc) {
#ifdef KAT_HAVE_NVJPEG
  if (d.decode == "gpu") return std::make_unique<GpuFeed>(d.train, d.train_cfg, tc);
#endif
  KAT_CHECK(d.decode == "cpu", "internal error: decode '", d.decode, "' in a build without nvJPEG");
  (void)tc;
  return std::make_unique<CpuFeed>(d.train, d.train_cfg);
}

// ---- the run: one loop over epochs, each a loop over optimizer steps ---------------------------

class Run {
 public:
  Run(const TrainConfig& tc, RunData& d, BatchFeed& loader, KatModel& model, HostState& hs, Engine& engine,
      State& st, MetricsLog* log, std::string last_ckpt)
      : tc_(tc),
        d_(d),
        loader_(loader),
        model_(model),
        hs_(hs),
        engine_(engine),
        st_(st),
        log_(log),
        last_ckpt_(std::move(last_ckpt)) {}

  // Trains epochs [st.step / steps_per_epoch, tc.epochs); stops early (res.interrupted) on Ctrl-C or
  // --max-steps, with a checkpoint.
  TrainResult run() {
    res_.best_top1 = st_.best_top1;
    int64_t epoch = st_.step / d_.steps_per_epoch;
    const int64_t first_epoch = epoch;
    t_session_ = std::chrono::steady_clock::now();
    for (; epoch < tc_.epochs; ++epoch) {
      if (!train_epoch(epoch)) {
        res_.interrupted = true;
        res_.steps = st_.step;
        res_.last_checkpoint = last_ckpt_;
        return res_;
      }
      end_epoch(epoch, first_epoch);
    }
    res_.steps = st_.step;
    res_.best_top1 = st_.best_top1;
    res_.last_checkpoint = last_ckpt_;
    return res_;
  }

 private:
  // The optimizer steps of one epoch from where the run stands; false when stopped.
  bool train_epoch(int64_t epoch) {
    const int64_t spe = d_.steps_per_epoch, accum = tc_.accum_steps;
    const int64_t first_step = st_.step - epoch * spe;
    {
      RunPhase phase("starting the epoch's data loader", st_.step);
      loader_.start_epoch(epoch, first_step * accum);
    }
    char label[64];
    std::snprintf(label, sizeof label, "epoch %lld/%d", (long long)epoch + 1, tc_.epochs);
    Progress bar(label, spe, tc_.progress && tc_.is_rank0());
    epoch_loss_ = 0;
    epoch_steps_ = 0;
    double loss_ema = -1;
    t_epoch_ = std::chrono::steady_clock::now();
    const uint64_t dp_tag = data::seed_tag("drop-path");
    auto stage_next = [&] {
      RunPhase phase("waiting for the next batch from the data loader", st_.step);
      loader_.stage_next(engine_);
    };
    bool staged = false;  // the next micro-batch is already staged (uploading on a GPU)
    for (int64_t s = first_step; s < spe; ++s) {
      const double lr = cosine_lr(st_.step, d_.total_steps, d_.warmup_steps, tc_.lr, tc_.warmup_lr, tc_.min_lr);
      double loss = 0;
      set_run_phase("in the training step", st_.step);
      engine_.begin_step();
      for (int a = 0; a < accum; ++a) {
        if (!staged) stage_next();
        // Drop-path of (seed, optimizer step, micro-batch): the same masks on every backend.
        Rng dp_rng(data::seed_hash({tc_.seed, uint64_t(st_.step), uint64_t(a), dp_tag}));
        engine_.compute_staged(int(accum), &dp_rng);
        // The next micro-batch of this epoch is staged while this one computes.
        staged = (s * accum + a + 1) < spe * accum;
        if (staged) stage_next();
        set_run_phase("waiting for the step's loss (the device's work)", st_.step);
        const double l = engine_.staged_loss();
        set_run_phase("in the training step", st_.step);
        if (!std::isfinite(l)) throw nonfinite_loss(l, epoch);
        loss += l / accum;
      }
      set_run_phase("in the optimizer step", st_.step);
      engine_.finish_step(lr, tc_.clip_grad);
      ++st_.step;
      set_run_phase("after the optimizer step (logging, checkpoint decision)", st_.step);
      res_.step_losses.push_back(loss);
      epoch_loss_ += loss;
      ++epoch_steps_;
      loss_ema = loss_ema < 0 ? loss : 0.95 * loss_ema + 0.05 * loss;
      char info[128];
      std::snprintf(info, sizeof info, "loss %.4f lr %.2e", loss_ema, lr);
      bar.update(s + 1 - first_step, info, double(tc_.batch * tc_.accum_steps));
      if (log_ && (st_.step % tc_.log_every == 0 || s + 1 == spe)) {
        const double el = std::chrono::duration<double>(std::chrono::steady_clock::now() - t_epoch_).count();
        log_->write({{"step", st_.step},
                     {"epoch", double(st_.step) / spe},
                     {"loss", loss},
                     {"lr", lr},
                     {"img_per_s", epoch_steps_ * tc_.batch * tc_.accum_steps / std::max(el, 1e-9)}});
      }
      const bool stop = stop_requested() || (tc_.max_steps > 0 && st_.step >= tc_.max_steps);
      if (stop)
        res_.train_seconds += std::chrono::duration<double>(std::chrono::steady_clock::now() - t_epoch_).count();
      if (stop || (tc_.save_every > 0 && st_.step % tc_.save_every == 0 && s + 1 < spe)) checkpoint(false);
      if (stop) {
        bar.finish();
        if (tc_.is_rank0())
          std::fprintf(stderr, "%s at step %lld: checkpoint %s\n",
                       stop_requested_ ? "interrupted" : "stopped (--max-steps)", (long long)st_.step,
                       last_ckpt_.c_str());
        return false;
      }
    }
    bar.finish();
    return true;
  }

  // Ctrl-C: in a job, any process's request stops every process at the same step (a sum over the
  // processes), else they would part ways and wait on each other.
  bool stop_requested() {
    double flag = g_stop_requested.load() ? 1.0 : 0.0;
    if (engine_.process_count() > 1) engine_.all_reduce_sum(&flag, 1);
    stop_requested_ = flag > 0;
    return stop_requested_;
  }

  // A non-finite loss: where it started when the engine can tell (the CPU), else how to find out.
  Error nonfinite_loss(double l, int64_t epoch) {
    const std::string ckpt = last_ckpt_.empty() ? "(none yet)" : last_ckpt_;
    if (!tc_.devices.empty())
      return Error(detail::concat(
          "loss became ", l, " at step ", st_.step + 1, " (epoch ", epoch + 1, ") on ", tc_.device,
          ". The last good checkpoint is ", ckpt,
          "; resume it with --device cpu to locate the first non-finite layer, or lower --lr / use --clip-grad."));
    const std::string where = engine_.first_nonfinite();
    return Error(
        detail::concat("loss became ", l, " at step ", st_.step + 1, " (epoch ", epoch + 1,
                       "); first non-finite value: ", where.empty() ? "the loss itself (logits finite)" : where,
                       ". The last good checkpoint is ", ckpt, "; try a lower --lr or --clip-grad."));
  }

  // Evaluation (raw weights, then EMA weights if any), the epoch's log line, checkpoint and plots.
  void end_epoch(int64_t epoch, int64_t first_epoch) {
    const double train_time = std::chrono::duration<double>(std::chrono::steady_clock::now() - t_epoch_).count();
    res_.train_seconds += train_time;
    const EvalResult ev = run_eval(tc_.progress && tc_.is_rank0(), "  test");
    json line = {{"step", st_.step},     {"epoch", epoch + 1},
                 {"test_top1", ev.top1}, {"test_top5", ev.top5},
                 {"test_loss", ev.loss}, {"train_loss", epoch_steps_ ? epoch_loss_ / epoch_steps_ : 0.0}};
    char ema_txt[64] = "";
    if (!hs_.ema.empty()) {
      engine_.use_ema_weights(true);
      const EvalResult ee = run_eval(false, "ema");
      engine_.use_ema_weights(false);
      line["ema_test_top1"] = ee.top1;
      line["ema_test_loss"] = ee.loss;
      res_.final_ema_top1 = ee.top1;
      std::snprintf(ema_txt, sizeof ema_txt, " | ema top-1 %.2f%%", ee.top1);
    }
    if (log_) log_->write(line);
    const bool best = ev.top1 > st_.best_top1;
    if (best) st_.best_top1 = ev.top1;
    // Whole-run ETA from this session's epochs so far (training + evaluation), not the first epoch alone.
    const double session_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t_session_).count();
    const int64_t epochs_left = tc_.epochs - (epoch + 1), epochs_done = epoch + 1 - first_epoch;
    const std::string eta =
        epochs_left > 0 && epochs_done > 0
            ? " | run ETA " + format_duration(session_s / double(epochs_done) * double(epochs_left))
            : "";
    if (tc_.is_rank0())
      std::fprintf(stderr,
                   "epoch %lld/%d | train loss %.4f | test loss %.4f | test top-1 %.2f%% top-5 %.2f%%%s | %.0f "
                   "img/s | %s%s\n",
                   (long long)epoch + 1, tc_.epochs, epoch_steps_ ? epoch_loss_ / epoch_steps_ : 0.0, ev.loss,
                   ev.top1, ev.top5, ema_txt,
                   epoch_steps_ * tc_.batch * tc_.accum_steps / std::max(train_time, 1e-9),
                   format_duration(train_time).c_str(), eta.c_str());
    checkpoint(best);
    // Plots of the run so far (curves, learned rationals; rank 0 of a job): a failure here only warns.
    try {
      if (tc_.is_rank0()) write_run_plots(tc_.out_dir, &model_, last_ckpt_);
    } catch (const std::exception& e) {
      std::fprintf(stderr, "warning: plots not written: %s\n", e.what());
    }
    res_.final_top1 = ev.top1;
    res_.final_loss = ev.loss;
    res_.epochs_done = int(epoch + 1);
  }

  // The test split through the GPU pipeline when the run decodes on the GPU and reads the split
  // lazily (--lazy-data), else through the CPU loader.
  EvalResult run_eval(bool progress, const char* label) {
    RunPhase phase("evaluating the test set", st_.step);
    if (d_.decode == "gpu" && d_.test.lazy())
      return evaluate_gpu_decode(engine_, d_.test, d_.eval_cfg, tc_.devices.at(0), false, nullptr, progress,
                                 label);
    return evaluate(engine_, d_.test, d_.eval_cfg, progress, label);
  }

  // The engine's state to the host, then an atomic checkpoint (and best.safetensors). In a job, rank
  // 0 writes it (every process holds the same state); the others only note its name.
  void checkpoint(bool is_best) {
    if (!tc_.is_rank0()) {
      last_ckpt_ = tc_.out_dir + "/" + ckpt_name(st_.step);
      return;
    }
    RunPhase phase("writing a checkpoint (the state from the device, then the file)", st_.step);
    engine_.download_params(model_.params.data());
    engine_.download_moments(hs_.m.data(), hs_.v.data());
    hs_.optim_steps = engine_.optimizer_steps();
    if (!hs_.ema.empty()) engine_.download_ema(hs_.ema.data());
    engine_.download_fp8_history(hs_.fp8_amax, hs_.fp8_seen);
    const std::string path = tc_.out_dir + "/" + ckpt_name(st_.step);
    save_checkpoint(path, model_, hs_, tc_, st_, d_.train.class_names);
    last_ckpt_ = path;
    auto all = list_checkpoints(tc_.out_dir);
    for (size_t i = 0; i + tc_.keep_last < all.size(); ++i) fs::remove(all[i]);
    if (is_best) save_checkpoint(tc_.out_dir + "/best.safetensors", model_, hs_, tc_, st_, d_.train.class_names);
  }

  const TrainConfig& tc_;
  RunData& d_;
  BatchFeed& loader_;  // training batches
  KatModel& model_;
  HostState& hs_;
  Engine& engine_;
  State& st_;
  MetricsLog* log_;  // rank 0 of a job (or the one process) only: null elsewhere
  std::string last_ckpt_;
  TrainResult res_;
  double epoch_loss_ = 0;
  int64_t epoch_steps_ = 0;
  bool stop_requested_ = false;  // the last stop_requested(): a Ctrl-C somewhere in the job
  std::chrono::steady_clock::time_point t_session_, t_epoch_;
};

}  // namespace

std::string data_wait_summary(const TrainResult& r, const TrainConfig& tc, const std::string& decode, bool lazy) {
  const double share = r.train_seconds > 0 ? r.data_wait_seconds / r.train_seconds : 0.0;
  auto when = [](double s) {
    char b[32];
    std::snprintf(b, sizeof b, "%.1f s", s);
    return s < 100 ? std::string(b) : format_duration(s);
  };
  std::string line = detail::concat("data: the training waited ", when(r.data_wait_seconds), " for batches in ",
                                    when(r.train_seconds), " of training (", int(100 * share + 0.5), " %)");
  if (share < 0.10) return line;
  if (decode == "gpu")
    return line +
           ": the GPU data pipeline sets the pace (where its time goes: the next line; "
           "--decode-streams, --decode-cpu-share, docs/DATA_PIPELINE.md)";
  return line + detail::concat(": the CPU loader (",
                               tc.workers > 0 ? std::to_string(tc.workers) : std::string("auto"),
                               " workers) sets the pace; more --workers",
                               lazy ? ", or --decode gpu (a CUDA build with nvJPEG) for JPEG folders" : "");
}

TrainResult train(const TrainConfig& cfg_in, const std::string& resume_dir) {
  TrainConfig tc = cfg_in;
  Resume rs = resume_run(tc, resume_dir);
  const io::SafetensorsFile* ck = rs.ck.get();
  tc.validate();
  if (tc.threads > 0) omp_set_num_threads(tc.threads);
  KAT_CHECK(!tc.out_dir.empty() || tc.procs.world_size == 1, "a job of ", tc.procs.world_size,
            " processes needs --out DIR (a directory all processes name alike; rank 0 writes it)");
  if (tc.out_dir.empty()) {
    char stamp[32];
    const std::time_t now = std::time(nullptr);
    std::strftime(stamp, sizeof stamp, "%Y%m%d-%H%M%S", std::localtime(&now));
    tc.out_dir = "runs/" + fs::path(tc.model).stem().string() + "-" + stamp;
  }
  // A fresh run never writes into a directory that holds another run's checkpoints.
  KAT_CHECK(ck || latest_checkpoint(tc.out_dir).empty(), "--out ", tc.out_dir,
            " already holds checkpoints of another run: continue it with `kat train --resume ", tc.out_dir,
            "` or choose a new --out");

  ModelConfig mc =
      ck ? ModelConfig::from_json(ck->metadata().at("model_config"), "checkpoint") : ModelConfig::load(tc.model);
  if (!ck)
    for (const auto& kv : tc.model_overrides) mc.apply_override(kv);
  if (tc.drop_path >= 0) mc.drop_path_rate = tc.drop_path;

  set_run_phase("reading the dataset", -1);
  RunData d = load_run_data(tc, mc);
  set_run_phase("creating the data loader (--decode gpu: nvJPEG decoders, pinned buffers)", -1);
  const std::unique_ptr<BatchFeed> loader = make_feed(d, tc);
  d.steps_per_epoch = loader->batches_per_epoch() / tc.accum_steps;
  KAT_CHECK(d.steps_per_epoch > 0, tc.data, ": ", d.train.size(), " training images are fewer than one step of ",
            tc.batch * tc.accum_steps, " (batch x accum)");
  d.total_steps = d.steps_per_epoch * tc.epochs;
  d.warmup_steps = int64_t(std::llround(tc.warmup_epochs * d.steps_per_epoch));

  set_run_phase("creating the model and the engine (device memory, libraries)", -1);
  KatModel model(mc);
  model.plan(std::max(tc.batch, tc.eval_batch));
  HostState hs;
  init_host_state(tc, mc, ck, model, hs);
  const std::unique_ptr<Engine> engine = make_engine(tc, mc, model, hs, ck != nullptr);

  std::unique_ptr<MetricsLog> log;
  if (tc.is_rank0()) {
    fs::create_directories(tc.out_dir);
    json j;
    j["model"] = json::parse(mc.to_json());
    j["train"] = json::parse(tc.to_json());
    j["steps_per_epoch"] = d.steps_per_epoch;
    j["total_steps"] = d.total_steps;
    j["num_params"] = model.num_params();
    std::ofstream(tc.out_dir + "/config.json") << j.dump(2) << "\n";
    log = std::make_unique<MetricsLog>(tc.out_dir + "/metrics.jsonl", ck ? rs.st.step : -1);
  }
  if (tc.is_rank0())
    std::fprintf(
        stderr,
        "%s %s: %lld parameters, %zu train / %zu test images, %lld steps/epoch x %d epochs, batch %d%s -> %s\n",
        ck ? "resuming" : "training", mc.name.c_str(), (long long)model.num_params(), d.train.size(),
        d.test.size(), (long long)d.steps_per_epoch, tc.epochs, tc.batch * tc.accum_steps,
        ck ? (" from step " + std::to_string(rs.st.step)).c_str() : "", tc.out_dir.c_str());
  if (tc.is_rank0() && tc.procs.world_size > 1)
    std::fprintf(stderr, "job of %d processes: --batch %d is the global batch, %d per process\n",
                 tc.procs.world_size, tc.batch, tc.batch / tc.procs.world_size);

  Run run(tc, d, *loader, model, hs, *engine, rs.st, log.get(), ck ? latest_checkpoint(resume_dir) : "");
  TrainResult result = run.run();
  result.data_wait_seconds = loader->wait_seconds();
  if (tc.is_rank0()) {
    std::fprintf(stderr, "%s\n", data_wait_summary(result, tc, d.decode, d.train.lazy()).c_str());
    const std::string feed = loader->summary();
    if (!feed.empty()) std::fprintf(stderr, "%s\n", feed.c_str());
  }
  return result;
}

}  // namespace kat
