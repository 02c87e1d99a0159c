#include "train/trainer.h"

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

#include "core/error.h"
#include "data/data.h"
#include "io/safetensors.h"
#include "model/kat_model.h"
#include "model/pretrained.h"
#include "ops/cpu_ops.h"
#include "train/evaluate.h"
#include "train/gpu_group.h"
#include "train/gpu_runner.h"
#include "train/optim.h"
#include "train/progress.h"
#include "train/run_plots.h"

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

data::LoaderConfig make_loader_config(const TrainConfig& c, const ModelConfig& mc) {
  const int img_size = mc.img_size;
  data::LoaderConfig l;
  l.batch_size = c.batch;
  l.shuffle = true;
  l.drop_last = true;
  l.seed = c.seed;
  l.num_workers = c.workers;
  if (c.workers < 0) {
    // CPU training keeps the cores for compute; a GPU run is fed by the CPU: use them for decoding
    // and augmentation (the loader's output does not depend on the worker count).
    const int hw = int(std::max(1u, std::thread::hardware_concurrency()));
    l.num_workers = c.device == "cpu" ? 1 : std::clamp(hw - 1, 1, 64);
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

void save_checkpoint(const std::string& path, const KatModel& m, const AdamW& opt,
                     const std::vector<float>* ema, const TrainConfig& tc, const State& st,
                     const std::vector<std::string>& class_names) {
  io::SafetensorsWriter w;
  m.add_weights(w);
  if (ema) m.add_weights(w, "ema.", ema->data());
  w.add_f32("optim.m", {int64_t(opt.m.size())}, opt.m.data());
  w.add_f32("optim.v", {int64_t(opt.v.size())}, opt.v.data());
  w.set_metadata("format", "kat-train-checkpoint-1");
  w.set_metadata("model_config", m.config().to_json(-1));
  w.set_metadata("train_config", tc.to_json(-1));
  w.set_metadata("step", std::to_string(st.step));
  w.set_metadata("class_names", json(class_names).dump());
  w.set_metadata("optim_steps", std::to_string(opt.steps()));
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

void install_sigint_handler() { std::signal(SIGINT, on_sigint); }

std::string latest_checkpoint(const std::string& dir) {
  auto v = list_checkpoints(dir);
  return v.empty() ? "" : v.back();
}

TrainResult train(const TrainConfig& cfg_in, const std::string& resume_dir) {
  TrainConfig tc = cfg_in;
  std::unique_ptr<io::SafetensorsFile> ck;
  State st;
  if (!resume_dir.empty()) {
    const std::string path = latest_checkpoint(resume_dir);
    KAT_CHECK(!path.empty(), "--resume ", resume_dir, ": no checkpoint (ckpt-step*.safetensors) in this directory");
    ck = std::make_unique<io::SafetensorsFile>(io::SafetensorsFile::load(path));
    KAT_CHECK(ck->metadata().count("train_config") && ck->metadata().count("model_config") && ck->metadata().count("step"), path,
              ": not a kat training checkpoint (no train_config/step metadata)");
    const TrainConfig saved = TrainConfig::from_json(ck->metadata().at("train_config"), path);
    // Resume continues the saved run; only mechanics that do not change the math may differ.
    const int64_t max_steps = tc.max_steps;
    const bool progress = tc.progress;
    const std::string device = tc.device;
    tc = saved;
    tc.device = device;  // checkpoints move between backends
    tc.out_dir = resume_dir;
    tc.max_steps = max_steps;
    tc.progress = progress;
    st.step = int64_t(metadata_number(*ck, "step"));
    st.best_top1 = metadata_number(*ck, "best_top1");
  }
  tc.validate();
  if (tc.threads > 0) omp_set_num_threads(tc.threads);
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

  ModelConfig mc = ck ? ModelConfig::from_json(ck->metadata().at("model_config"), "checkpoint")
                      : ModelConfig::load(tc.model);
  if (!ck)
    for (const auto& kv : tc.model_overrides) mc.apply_override(kv);
  if (tc.drop_path >= 0) mc.drop_path_rate = tc.drop_path;

  // Data.
  int skipped_train = 0, skipped_test = 0;
  // Lazy folders decode to the model's channel count (an eager load decides from the images).
  const int folder_channels = tc.lazy_data ? mc.in_chans : 0;
  data::Dataset train_ds = data::load_dataset(tc.data, true, tc.skip_bad, mc.img_size, &skipped_train,
                                              tc.lazy_data, folder_channels);
  data::Dataset test_ds = data::load_dataset(tc.data, false, tc.skip_bad, mc.img_size, &skipped_test,
                                             tc.lazy_data, folder_channels, tc.eval_crop_pct);
  if (skipped_train + skipped_test > 0)
    std::fprintf(stderr, "--skip-bad: skipped %d corrupt training and %d corrupt test images\n", skipped_train, skipped_test);
  if (tc.train_subset > 0) train_ds = data::subset(train_ds, size_t(tc.train_subset));
  if (tc.test_subset > 0) test_ds = data::subset(test_ds, size_t(tc.test_subset));
  KAT_CHECK(train_ds.channels == mc.in_chans, tc.data, ": images have ", train_ds.channels, " channel(s) but model '",
            mc.name, "' expects in_chans=", mc.in_chans, " (use --set in_chans=", train_ds.channels, ")");
  KAT_CHECK(train_ds.num_classes <= mc.num_classes, tc.data, ": ", train_ds.num_classes,
            " classes but the model has num_classes=", mc.num_classes, " (use --set num_classes=", train_ds.num_classes, ")");
  const data::LoaderConfig lcfg = make_loader_config(tc, mc);
  data::LoaderConfig ecfg = data::LoaderConfig::eval(lcfg, tc.eval_batch);
  data::Loader loader(train_ds, lcfg);
  const int64_t micro_per_epoch = loader.batches_per_epoch();
  const int64_t steps_per_epoch = micro_per_epoch / tc.accum_steps;
  KAT_CHECK(steps_per_epoch > 0, tc.data, ": ", train_ds.size(), " training images are fewer than one step of ",
            tc.batch * tc.accum_steps, " (batch x accum)");
  const int64_t total_steps = steps_per_epoch * tc.epochs;
  const int64_t warmup_steps = int64_t(std::llround(tc.warmup_epochs * steps_per_epoch));

  // Model, optimizer, EMA.
  KatModel model(mc);
  model.plan(std::max(tc.batch, tc.eval_batch));
  AdamWConfig ocfg;
  ocfg.lr = tc.lr;
  ocfg.weight_decay = tc.weight_decay;
  ocfg.decay_rational = tc.decay_rational;
  AdamW opt(model.table(), ocfg);
  std::vector<float> ema;
  if (ck) {
    model.load_weights(*ck);
    ck->read_f32("optim.m", opt.m.data(), int64_t(opt.m.size()));
    ck->read_f32("optim.v", opt.v.data(), int64_t(opt.v.size()));
    opt.set_steps(int64_t(metadata_number(*ck, "optim_steps")));
  } else {
    model.init_params(tc.seed);
    if (!tc.init.empty()) {  // fine-tuning: pretrained weights over the fresh initialisation
      const auto f = io::SafetensorsFile::load(tc.init);
      const auto notes = load_pretrained(model, f);
      std::fprintf(stderr, "initialised from %s%s\n", tc.init.c_str(), notes.empty() ? " (every tensor as saved)" : ":");
      for (const auto& n : notes) std::fprintf(stderr, "  %s\n", n.c_str());
    }
  }
  if (tc.ema_decay > 0) {
    ema = model.params;
    if (ck) {
      KatModel tmp(mc);
      tmp.load_weights(*ck, "ema.");
      ema = tmp.params;
    }
  }

  // GPU: the same math on KatModelCuda (bf16 compute, fp32 master weights and AdamW state); the
  // CPU model/optimizer hold copies that are refreshed before every checkpoint.
  std::unique_ptr<GpuGroup> gpu;  // one or several GPUs (data parallel)
  if (const auto devices = parse_devices(tc.device); !devices.empty()) {
    gpu = std::make_unique<GpuGroup>(mc, devices, ocfg, tc.batch);
    gpu->upload_params(model.params.data());
    if (ck) gpu->upload_moments(opt.m.data(), opt.v.data(), opt.steps());
    if (!ema.empty()) gpu->ema_init(ema.data(), tc.ema_decay);
  }
  const ForwardFn eval_forward = gpu ? gpu_forward(&gpu->primary()) : ForwardFn{};

  fs::create_directories(tc.out_dir);
  {
    json j;
    j["model"] = json::parse(mc.to_json());
    j["train"] = json::parse(tc.to_json());
    j["steps_per_epoch"] = steps_per_epoch;
    j["total_steps"] = total_steps;
    j["num_params"] = model.num_params();
    std::ofstream(tc.out_dir + "/config.json") << j.dump(2) << "\n";
  }
  MetricsLog log(tc.out_dir + "/metrics.jsonl", ck ? st.step : -1);
  std::fprintf(stderr, "%s %s: %lld parameters, %zu train / %zu test images, %lld steps/epoch x %d epochs, batch %d%s -> %s\n",
               ck ? "resuming" : "training", mc.name.c_str(), (long long)model.num_params(), train_ds.size(),
               test_ds.size(), (long long)steps_per_epoch, tc.epochs, tc.batch * tc.accum_steps,
               ck ? (" from step " + std::to_string(st.step)).c_str() : "", tc.out_dir.c_str());

  TrainResult res;
  res.best_top1 = st.best_top1;
  std::string last_ckpt = ck ? latest_checkpoint(resume_dir) : "";
  auto checkpoint = [&](bool is_best) {
    if (gpu) {
      gpu->download_params(model.params.data());
      gpu->download_moments(opt.m.data(), opt.v.data());
      opt.set_steps(st.step);
      if (!ema.empty()) gpu->download_ema(ema.data());
    }
    const std::string path = tc.out_dir + "/" + ckpt_name(st.step);
    save_checkpoint(path, model, opt, ema.empty() ? nullptr : &ema, tc, st, train_ds.class_names);
    last_ckpt = path;
    auto all = list_checkpoints(tc.out_dir);
    for (size_t i = 0; i + tc.keep_last < all.size(); ++i) fs::remove(all[i]);
    if (is_best) save_checkpoint(tc.out_dir + "/best.safetensors", model, opt, ema.empty() ? nullptr : &ema, tc, st,
                                train_ds.class_names);
  };

  const int K = mc.num_classes;
  std::vector<float> dz(size_t(tc.batch) * K);
  data::Batch batch;
  const uint64_t dp_tag = data::seed_tag("drop-path");
  int64_t epoch = st.step / steps_per_epoch;
  const int64_t first_epoch = epoch;
  const auto t_session = std::chrono::steady_clock::now();
  for (; epoch < tc.epochs; ++epoch) {
    const int64_t first_step = st.step - epoch * steps_per_epoch;
    loader.start_epoch(epoch, first_step * tc.accum_steps);
    char label[64];
    std::snprintf(label, sizeof label, "epoch %lld/%d", (long long)epoch + 1, tc.epochs);
    Progress bar(label, steps_per_epoch, tc.progress);
    double loss_ema = -1, epoch_loss = 0;
    int64_t epoch_steps = 0;
    const auto t_epoch = std::chrono::steady_clock::now();
    bool staged = false;  // GPU: the next micro-batch is already uploading
    for (int64_t s = first_step; s < steps_per_epoch; ++s) {
      const double lr = cosine_lr(st.step, total_steps, warmup_steps, tc.lr, tc.warmup_lr, tc.min_lr);
      double loss = 0;
      if (gpu) {  // same sequence as the CPU branch below, on the device (EMA inside finish_step)
        gpu->begin_step();
        for (int a = 0; a < tc.accum_steps; ++a) {
          auto stage_next = [&] {
            KAT_CHECK(loader.next(batch), "internal error: loader ran out of batches");
            gpu->stage(batch.images.data(), batch.targets.data(), batch.n);
          };
          if (!staged) stage_next();
          Rng dp_rng(data::seed_hash({tc.seed, uint64_t(st.step), uint64_t(a), dp_tag}));
          gpu->compute_staged(tc.accum_steps, &dp_rng);
          // The next micro-batch of this epoch uploads while this one computes.
          staged = (s * tc.accum_steps + a + 1) < steps_per_epoch * tc.accum_steps;
          if (staged) stage_next();
          const double l = gpu->staged_loss();
          KAT_CHECK(std::isfinite(l), "loss became ", l, " at step ", st.step + 1, " (epoch ", epoch + 1, ") on ",
                    tc.device, ". The last good checkpoint is ", last_ckpt.empty() ? "(none yet)" : last_ckpt,
                    "; resume it with --device cpu to locate the first non-finite layer, or lower --lr / use --clip-grad.");
          loss += l / tc.accum_steps;
        }
        gpu->finish_step(lr, tc.clip_grad);
      } else {
        model.zero_grad();
        for (int a = 0; a < tc.accum_steps; ++a) {
          KAT_CHECK(loader.next(batch), "internal error: loader ran out of batches");
          Rng dp_rng(data::seed_hash({tc.seed, uint64_t(st.step), uint64_t(a), dp_tag}));
          const float* z = model.forward(batch.images.data(), batch.n, true, &dp_rng);
          // Smoothing/mixing already applied into batch.targets by the loader: ls = 0 here.
          const double l = ops::softmax_xent<float>(batch.n, K, z, batch.targets.data(), 0.0f, dz.data());
          if (!std::isfinite(l)) {
            const std::string where = model.first_nonfinite();
            throw Error(detail::concat("loss became ", l, " at step ", st.step + 1, " (epoch ", epoch + 1, "); first non-finite value: ",
                                       where.empty() ? "the loss itself (logits finite)" : where,
                                       ". The last good checkpoint is ", last_ckpt.empty() ? "(none yet)" : last_ckpt,
                                       "; try a lower --lr or --clip-grad."));
          }
          if (tc.accum_steps > 1)
            for (auto& v : dz) v /= float(tc.accum_steps);
          model.backward(dz.data());
          loss += l / tc.accum_steps;
        }
        if (tc.clip_grad > 0) clip_grad_norm(model.grads, tc.clip_grad);
        opt.step(model.params.data(), model.grads.data(), lr);
      }
      if (!gpu && !ema.empty()) ema_update(ema, model.params, tc.ema_decay);
      ++st.step;
      res.step_losses.push_back(loss);
      epoch_loss += loss;
      ++epoch_steps;
      loss_ema = loss_ema < 0 ? loss : 0.95 * loss_ema + 0.05 * loss;
      char info[128];
      std::snprintf(info, sizeof info, "loss %.4f lr %.2e", loss_ema, lr);
      bar.update(s + 1 - first_step, info, double(tc.batch * tc.accum_steps));
      if (st.step % tc.log_every == 0 || s + 1 == steps_per_epoch) {
        const double el = std::chrono::duration<double>(std::chrono::steady_clock::now() - t_epoch).count();
        log.write({{"step", st.step}, {"epoch", double(st.step) / steps_per_epoch}, {"loss", loss}, {"lr", lr},
                   {"img_per_s", epoch_steps * tc.batch * tc.accum_steps / std::max(el, 1e-9)}});
      }
      const bool stop = g_stop_requested.load() || (tc.max_steps > 0 && st.step >= tc.max_steps);
      if (stop || (tc.save_every > 0 && st.step % tc.save_every == 0 && s + 1 < steps_per_epoch)) checkpoint(false);
      if (stop) {
        bar.finish();
        std::fprintf(stderr, "%s at step %lld: checkpoint %s\n",
                     g_stop_requested.load() ? "interrupted" : "stopped (--max-steps)", (long long)st.step, last_ckpt.c_str());
        res.interrupted = true;
        res.steps = st.step;
        res.last_checkpoint = last_ckpt;
        return res;
      }
    }
    bar.finish();
    const double train_time = std::chrono::duration<double>(std::chrono::steady_clock::now() - t_epoch).count();
    // Evaluate (raw weights, then EMA weights if any).
    const EvalResult ev = evaluate(model, test_ds, ecfg, tc.progress, "  test", eval_forward);
    json line = {{"step", st.step}, {"epoch", epoch + 1}, {"test_top1", ev.top1}, {"test_top5", ev.top5},
                 {"test_loss", ev.loss}, {"train_loss", epoch_steps ? epoch_loss / epoch_steps : 0.0}};
    char ema_txt[64] = "";
    if (!ema.empty()) {
      std::vector<float> raw = model.params;
      model.params = ema;
      if (gpu) gpu->use_ema_weights(true);
      const EvalResult ee = evaluate(model, test_ds, ecfg, false, "ema", eval_forward);
      if (gpu) gpu->use_ema_weights(false);
      model.params.swap(raw);
      line["ema_test_top1"] = ee.top1;
      line["ema_test_loss"] = ee.loss;
      res.final_ema_top1 = ee.top1;
      std::snprintf(ema_txt, sizeof ema_txt, " | ema top-1 %.2f%%", ee.top1);
    }
    log.write(line);
    const bool best = ev.top1 > st.best_top1;
    if (best) st.best_top1 = ev.top1;
    // Whole-run ETA from this session's epochs so far (training + evaluation), not the first epoch alone.
    const double session_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t_session).count();
    const int64_t epochs_left = tc.epochs - (epoch + 1), epochs_done = epoch + 1 - first_epoch;
    const std::string eta = epochs_left > 0 && epochs_done > 0
                                ? " | run ETA " + format_duration(session_s / double(epochs_done) * double(epochs_left))
                                : "";
    std::fprintf(stderr, "epoch %lld/%d | train loss %.4f | test loss %.4f | test top-1 %.2f%% top-5 %.2f%%%s | %.0f img/s | %s%s\n",
                 (long long)epoch + 1, tc.epochs, epoch_steps ? epoch_loss / epoch_steps : 0.0, ev.loss, ev.top1, ev.top5,
                 ema_txt, epoch_steps * tc.batch * tc.accum_steps / std::max(train_time, 1e-9),
                 format_duration(train_time).c_str(), eta.c_str());
    checkpoint(best);
    // Plots of the run so far (curves, learned rationals): a failure here only warns.
    try {
      write_run_plots(tc.out_dir, &model, last_ckpt);
    } catch (const std::exception& e) {
      std::fprintf(stderr, "warning: plots not written: %s\n", e.what());
    }
    res.final_top1 = ev.top1;
    res.final_loss = ev.loss;
    res.epochs_done = int(epoch + 1);
  }
  res.steps = st.step;
  res.best_top1 = st.best_top1;
  res.last_checkpoint = last_ckpt;
  return res;
}

}  // namespace kat
