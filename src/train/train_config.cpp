#include "kat/train/train_config.h"

#include <algorithm>
#include <nlohmann/json.hpp>

#include "kat/core/error.h"
#include "kat/model/config.h"

namespace kat {

using nlohmann::json;

// An X-macro list: clang-format lays it out differently on every pass, so it is left as written.
// clang-format off
#define KAT_TRAIN_FIELDS(X) \
  X(model) X(model_overrides) X(data) X(out_dir) X(device) X(init) X(epochs) X(batch) \
  X(accum_steps) X(lr) X(min_lr) X(warmup_lr) X(warmup_epochs) X(weight_decay) X(decay_rational) \
  X(clip_grad) X(ema_decay) X(drop_path) X(label_smoothing) X(mixup) X(cutmix) X(mix_prob) \
  X(switch_prob) X(crop) X(padding) X(hflip) X(randaug_n) X(randaug_m) X(randaug_mstd) \
  X(random_erase) X(mean) X(std) X(seed) X(workers) X(threads) X(keep_last) X(save_every) \
  X(max_steps) X(log_every) X(train_subset) X(test_subset) X(skip_bad) X(lazy_data) X(progress) \
  X(eval_batch) X(eval_crop_pct) X(decode) X(decode_cpu_share) X(decode_streams) \
  X(loader_nice) X(decode_priority) X(data_timeout) X(precision)
// clang-format on

std::string TrainConfig::to_json(int indent) const {
  json j;
#define X(f) j[#f] = f;
  KAT_TRAIN_FIELDS(X)
#undef X
  return j.dump(indent);
}

TrainConfig TrainConfig::from_json(const std::string& text, const std::string& source) {
  TrainConfig c;
  try {
    const json j = json::parse(text);
#define X(f) \
  if (j.contains(#f)) j.at(#f).get_to(c.f);
    KAT_TRAIN_FIELDS(X)
#undef X
  } catch (const json::exception& e) {
    throw Error(detail::concat(source, ": bad training config: ", e.what()));
  }
  return c;
}

void TrainConfig::validate() const {
  KAT_CHECK(epochs > 0, "--epochs must be > 0, got ", epochs);
  KAT_CHECK(batch > 0, "--batch must be > 0, got ", batch);
  KAT_CHECK(accum_steps > 0, "--accum must be > 0, got ", accum_steps);
  KAT_CHECK(lr > 0, "--lr must be > 0");
  KAT_CHECK(warmup_epochs >= 0 && warmup_epochs < epochs, "--warmup-epochs must be in [0, epochs)");
  KAT_CHECK(label_smoothing >= 0 && label_smoothing < 1, "--smoothing must be in [0, 1)");
  KAT_CHECK(ema_decay >= 0 && ema_decay < 1, "--ema must be in [0, 1) (0 = off)");
  KAT_CHECK(crop == "none" || crop == "pad" || crop == "rrc", "--crop must be none, pad or rrc, got '", crop, "'");
  KAT_CHECK(devices.empty() == (device == "cpu"), "device '", device, "' but ", devices.size(),
            " GPU(s) in TrainConfig::devices: set both (the CLI parses --device into devices)");
  for (size_t i = 0; i < devices.size(); ++i)
    KAT_CHECK(devices[i] >= 0 && std::count(devices.begin(), devices.end(), devices[i]) == 1, "device '", device,
              "': GPU ", devices[i], devices[i] < 0 ? " is not a GPU index" : " is listed twice");
  if (procs.world_size > 1) {
    KAT_CHECK(procs.rank >= 0 && procs.rank < procs.world_size, "rank ", procs.rank, " outside a job of ",
              procs.world_size, " processes");
    KAT_CHECK(devices.size() == 1, "a job of ", procs.world_size,
              " processes takes one GPU per process: --device ", device,
              devices.empty() ? " is the CPU (use --device cuda: each process takes GPU LOCAL_RANK)"
                              : " lists several (use --device cuda: each process takes GPU LOCAL_RANK)");
    KAT_CHECK(batch % procs.world_size == 0, "--batch ", batch, " (the global batch) must be divisible by the ",
              procs.world_size, " processes of the job (each gets an equal shard)");
    KAT_CHECK(procs.rendezvous_timeout > 0, "--rendezvous-timeout must be > 0 seconds");
    KAT_CHECK(procs.timeout > 0, "--dist-timeout must be > 0 seconds");
  }
  KAT_CHECK(workers >= -1, "--workers must be >= 0 (or -1: automatic), got ", workers);
  KAT_CHECK(keep_last >= 1, "--keep-last must be >= 1");
  KAT_CHECK(eval_crop_pct > 0 && eval_crop_pct <= 1, "--eval-crop-pct must be in (0, 1], got ", eval_crop_pct);
  KAT_CHECK(decode == "auto" || decode == "cpu" || decode == "gpu", "--decode must be auto, cpu or gpu, got '",
            decode, "'");
  KAT_CHECK(decode_cpu_share >= 0 && decode_cpu_share <= 1, "--decode-cpu-share must be in [0, 1], got ",
            decode_cpu_share);
  KAT_CHECK(decode_streams >= 1 && decode_streams <= 8, "--decode-streams must be in [1, 8], got ",
            decode_streams);
  KAT_CHECK(loader_nice >= 0 && loader_nice <= 19, "--loader-nice must be in [0, 19], got ", loader_nice);
  KAT_CHECK(decode_priority == "normal" || decode_priority == "high",
            "--decode-priority must be normal or high, got '", decode_priority, "'");
  KAT_CHECK(precision == "auto" || precision == "fp32" || precision == "bf16" || precision == "fp8",
            "--precision must be auto, fp32, bf16 or fp8, got '", precision, "'");
  KAT_CHECK(precision != "bf16" || !devices.empty(),
            "--precision bf16 is GPU only (--device cuda); the CPU trains in fp32 (--precision auto or fp32)");
  KAT_CHECK(precision != "fp32" || devices.empty(), "--precision fp32 is not available on the GPU yet (device '",
            device, "' trains in bf16: --precision auto or bf16)");
  // FP8 on several GPUs or processes: each replica would keep its own amax history (GpuGroup::enable_fp8).
  KAT_CHECK(precision != "fp8" || (devices.size() <= 1 && procs.world_size <= 1),
            "--precision fp8 runs on one GPU in one process for now (device '", device, "', ", procs.world_size,
            " process(es)): each GPU would keep its own amax history; train on one GPU, or in bf16 on several");
  KAT_CHECK(data_timeout >= 0, "--data-timeout must be >= 0 (0: wait forever), got ", data_timeout);
}

std::string TrainConfig::resolve_decode(std::string* why) const {
  if (decode == "cpu") {
    if (why) *why = "--decode cpu";
    return "cpu";
  }
  // Why the GPU pipeline cannot feed this run ("" when it can).
  std::string no;
  const bool folder = data.rfind("folder:", 0) == 0;
#ifndef KAT_HAVE_NVJPEG
  no = "this build has no nvJPEG (a CUDA build finds it in the CUDA toolkit or in pip's nvidia-nvjpeg wheel; "
       "see KAT_NVJPEG in CMakeLists.txt)";
#endif
  if (no.empty() && devices.empty()) no = "--device cpu (GPU decoding needs --device cuda)";
  if (no.empty() && devices.size() > 1)
    no = "--device " + device + " has " + std::to_string(devices.size()) +
         " GPUs (the GPU data pipeline feeds one GPU)";
  if (no.empty() && procs.world_size > 1)
    no = "a job of " + std::to_string(procs.world_size) +
         " processes (the GPU data pipeline does not load a shard of the global batch)";
  if (no.empty() && !folder) no = "--data " + data + " is not a folder: dataset (GPU decoding reads image files)";
  if (no.empty() && decode == "auto" && !lazy_data)
    no = "the folder is loaded into memory (--lazy-data or --decode gpu reads the files per batch)";
  if (decode == "gpu") KAT_CHECK(no.empty(), "--decode gpu is not possible here: ", no, "; use --decode cpu");
  if (why) *why = no;
  return no.empty() ? "gpu" : "cpu";
}

std::pair<std::vector<float>, std::vector<float>> input_normalisation(const TrainConfig& t, const ModelConfig& m) {
  if (!t.mean.empty() || !t.std.empty()) return {t.mean, t.std};
  return {m.mean, m.std};
}

}  // namespace kat
