// kat train: train a KAT or DeiT classifier. With no arguments: the default 28x28 KAT on
// Fashion-MNIST (Debian's dataset-fashion-mnist), a few minutes on 2 CPU cores.
#include <cstdio>
#include <filesystem>
#include <memory>

#include "attention_flag.h"
#include "commands.h"
#include "device_flag.h"
#include "kat/core/error.h"
#include "kat/train/trainer.h"

namespace kat::cli {

void register_train(CLI::App& app) {
  auto* sub = app.add_subcommand(
      "train",
      "Train a model. Defaults: kat_micro_patch4_28 on Fashion-MNIST, 6 epochs, AdamW + cosine,\n"
      "evaluating on the test split after every epoch. Writes DIR/metrics.jsonl, DIR/config.json and\n"
      "atomic checkpoints DIR/ckpt-step*.safetensors (+ best.safetensors). Ctrl-C saves and exits;\n"
      "`kat train --resume DIR` continues bit-exactly.");
  auto c = std::make_shared<TrainConfig>();
  auto resume = std::make_shared<std::string>();
  auto no_progress = std::make_shared<bool>(false);
  auto attention = std::make_shared<std::string>();
  auto job = std::make_shared<JobFlags>();
  sub->add_option("--model,-m", c->model, "Model name (see `kat info`) or config JSON path")
      ->capture_default_str();
  sub->add_option("--set", c->model_overrides, "Model config override key=value (repeatable)");
  sub->add_option("--data,-d", c->data,
                  "Dataset: fashion-mnist | mnist:DIR | idx:DIR | cifar10:DIR | cifar100:DIR | folder:DIR")
      ->capture_default_str();
  sub->add_option("--out,-o", c->out_dir, "Run directory (default: runs/<model>-<date>-<time>)");
  sub->add_option("--resume", *resume,
                  "Resume the newest checkpoint in this run directory (its saved config is used; only --device, "
                  "--decode cpu|gpu, --attention, --max-steps and --no-progress apply)");
  sub->add_option("--device", c->device,
                  "cpu, cuda, cuda:N or cuda:0,1,... (GPU: bf16 compute, fp32 master weights, AdamW/EMA/clipping "
                  "on the device; several GPUs: data parallel through NCCL, --batch split evenly)")
      ->capture_default_str();
  sub->add_option("--precision", c->precision,
                  "Arithmetic of the training: auto (fp32 on the CPU, bf16 compute on a GPU), fp32 (CPU), bf16 "
                  "(GPU), or fp8: the blocks' linear layers (qkv, proj, fc1, fc2) in FP8, E4M3 activations and "
                  "weights, E5M2 gradients, per-tensor power-of-two scales, delayed scaling of activations and "
                  "gradients from the amax of the last 16 micro-batches (src/ops/fp8.h). On the CPU fp8 is an "
                  "emulation: the exact FP8 values multiplied in fp32, slower than fp32, for checking the "
                  "recipe's accuracy without a GPU. On the GPU (one GPU of compute capability 8.9 or newer: Ada, "
                  "Hopper) the same recipe runs on the FP8 tensor cores (cuBLASLt FP8 GEMMs, everything else in "
                  "bf16): EXPERIMENTAL, not yet run on a GPU")
      ->check(CLI::IsMember({"auto", "fp32", "bf16", "fp8"}))
      ->capture_default_str();
  sub->add_option(
      "--init", c->init,
      "Fine-tune: start from the weights of this checkpoint (ours or timm's safetensors). A different "
      "class count re-initialises the head, a different image/patch grid resamples pos_embed (bicubic, "
      "as timm), RGB weights are summed for a 1-channel model; anything else must match");
  sub->add_option("--epochs", c->epochs, "Epochs")->capture_default_str();
  sub->add_option("--batch,-b", c->batch, "Images per micro-batch")->capture_default_str();
  sub->add_option("--accum", c->accum_steps, "Micro-batches per optimizer step (gradient accumulation)")
      ->capture_default_str();
  sub->add_option("--lr", c->lr, "Peak learning rate (AdamW)")->capture_default_str();
  sub->add_option("--min-lr", c->min_lr, "Final learning rate of the cosine")->capture_default_str();
  sub->add_option("--warmup-lr", c->warmup_lr, "Learning rate at the start of warm-up")->capture_default_str();
  sub->add_option("--warmup-epochs", c->warmup_epochs, "Linear warm-up length in epochs (fractions allowed)")
      ->capture_default_str();
  sub->add_option("--wd", c->weight_decay, "Decoupled weight decay (not on biases, norms, pos_embed, cls_token)")
      ->capture_default_str();
  sub->add_flag("!--no-decay-rational", c->decay_rational, "Exclude the rational coefficients from weight decay");
  sub->add_option("--clip-grad", c->clip_grad, "Clip the global gradient norm to this (0 = off)")
      ->capture_default_str();
  sub->add_option("--ema", c->ema_decay, "EMA decay of the weights, e.g. 0.999 (0 = off); eval on EMA and raw")
      ->capture_default_str();
  sub->add_option("--drop-path", c->drop_path, "Drop-path rate at the last block (-1 = model config)")
      ->capture_default_str();
  sub->add_option("--smoothing", c->label_smoothing, "Label smoothing")->capture_default_str();
  sub->add_option("--mixup", c->mixup, "Mixup alpha (0 = off)")->capture_default_str();
  sub->add_option("--cutmix", c->cutmix, "CutMix alpha (0 = off)")->capture_default_str();
  sub->add_option("--mix-prob", c->mix_prob, "Probability of mixing a batch")->capture_default_str();
  sub->add_option("--switch-prob", c->switch_prob, "Probability of CutMix instead of mixup when both are on")
      ->capture_default_str();
  sub->add_option("--crop", c->crop, "Train crop: none | pad (pad + random crop) | rrc (random resized crop)")
      ->capture_default_str();
  sub->add_option("--padding", c->padding, "Padding for --crop pad")->capture_default_str();
  sub->add_flag("--hflip,!--no-hflip", c->hflip, "Random horizontal flip");
  sub->add_option("--randaug-n", c->randaug_n, "RandAugment: ops per image (0 = off)")->capture_default_str();
  sub->add_option("--randaug-m", c->randaug_m, "RandAugment magnitude (0-10)")->capture_default_str();
  sub->add_option("--randaug-mstd", c->randaug_mstd, "RandAugment magnitude std")->capture_default_str();
  sub->add_option("--reprob", c->random_erase, "Random erasing probability")->capture_default_str();
  sub->add_option(
      "--mean", c->mean,
      "Per-channel mean after /255 (default: the model config's, ImageNet's for the 224 models, else 0.5)");
  sub->add_option(
      "--std", c->std,
      "Per-channel std after /255 (default: the model config's, ImageNet's for the 224 models, else 0.5)");
  sub->add_option("--seed", c->seed, "Seed of init, data order, augmentation and drop-path")
      ->capture_default_str();
  sub->add_option("--workers", c->workers,
                  "Data loader threads (-1: automatic = 1 on the CPU, all cores but one with --device cuda)")
      ->capture_default_str();
  sub->add_option("--threads", c->threads, "Compute threads (0 = all cores)")->capture_default_str();
  sub->add_option("--keep-last", c->keep_last, "Checkpoints kept (besides best)")->capture_default_str();
  sub->add_option("--save-every", c->save_every, "Also checkpoint every N steps (0 = epoch ends)")
      ->capture_default_str();
  sub->add_option("--max-steps", c->max_steps, "Stop with a checkpoint after N steps in total (0 = off)")
      ->capture_default_str();
  sub->add_option("--log-every", c->log_every, "metrics.jsonl line every N steps")->capture_default_str();
  sub->add_option("--train-subset", c->train_subset, "Use only the first N training images (0 = all)")
      ->capture_default_str();
  sub->add_option("--test-subset", c->test_subset, "Use only the first N test images (0 = all)")
      ->capture_default_str();
  sub->add_flag("--skip-bad", c->skip_bad, "Skip (and count) corrupt images instead of stopping");
  sub->add_flag("--lazy-data", c->lazy_data,
                "folder: datasets: decode each image when a batch needs it (in the --workers threads) instead of "
                "holding the whole decoded dataset in memory (ImageNet-size folders)");
  sub->add_option("--decode", c->decode,
                  "Where training images are decoded and augmented: cpu (the --workers threads), gpu (nvJPEG on "
                  "the GPU's JPEG engine or CUDA cores, augmentation as CUDA kernels; a folder: dataset read "
                  "per batch, --device cuda on one GPU, a build with nvJPEG), auto (gpu when --lazy-data, "
                  "a folder: dataset and one GPU allow it, else cpu). The same random decisions either way; "
                  "pixels differ by the decode's rounding. With --lazy-data the test split is evaluated on the "
                  "GPU too. Bad "
                  "files with --skip-bad are skipped and counted")
      ->check(CLI::IsMember({"auto", "cpu", "gpu"}))
      ->capture_default_str();
  sub->add_option("--decode-cpu-share", c->decode_cpu_share,
                  "--decode gpu: the share of the JPEGs the --workers threads decode with libjpeg-turbo while "
                  "the GPU's JPEG engine decodes the rest (a fixed subset of the files, chosen by index; "
                  "bench/gpu_data.sh measures the best share for a machine)")
      ->check(CLI::Range(0.0, 1.0))
      ->capture_default_str();
  sub->add_option("--decode-streams", c->decode_streams,
                  "--decode gpu: nvJPEG decoders, each with a host thread and a stream, decoding batches in "
                  "parallel (1 to 8; the same pixels whatever the count; the host part of nvJPEG's batched "
                  "call is the limit of one)")
      ->check(CLI::Range(1, 8))
      ->capture_default_str();
  sub->add_option("--loader-nice", c->loader_nice,
                  "--decode gpu: the loader's threads (readers, nvJPEG, augmentation) at this niceness "
                  "(0 to 19): on a host with fewer cores than threads they then cannot delay the thread "
                  "that launches the training step")
      ->check(CLI::Range(0, 19))
      ->capture_default_str();
  sub->add_option("--decode-priority", c->decode_priority,
                  "--decode gpu: the loader's CUDA streams at the GPU's greatest priority (high), so its "
                  "kernels start before the training step's pending ones, or the default (normal). "
                  "EXPERIMENTAL: one H100 run with high made no progress (docs/DATA_PIPELINE.md)")
      ->check(CLI::IsMember({"normal", "high"}))
      ->capture_default_str();
  sub->add_option("--data-timeout", c->data_timeout,
                  "--decode gpu: stop with an error naming the stage it waits for (files, decode, "
                  "augmentation, the GPU) when no batch arrives and the pipeline makes no progress for "
                  "this many seconds (0: wait forever)")
      ->check(CLI::Range(0.0, 1e6))
      ->capture_default_str();
  sub->add_option("--eval-crop-pct", c->eval_crop_pct,
                  "folder: datasets: the test split is fitted like timm's evaluation (bicubic resize of the "
                  "shorter side to img_size / crop_pct, center crop img_size)")
      ->capture_default_str();
  sub->add_flag("--no-progress", *no_progress, "No progress bar (summary lines only)");
  add_attention_option(sub, *attention);
  sub->add_option("--rendezvous", job->rendezvous,
                  "Under torchrun / srun (one process per GPU): how rank 0 hands the NCCL id to the others: tcp "
                  "(default: MASTER_ADDR, port MASTER_PORT + 1), tcp:HOST:PORT, tcp::PORT, or file:PATH on a "
                  "filesystem all nodes share (a fresh path per job)");
  sub->add_option("--rendezvous-timeout", job->rendezvous_timeout,
                  "Seconds every process waits for the others at start-up; a missing rank is named")
      ->capture_default_str();
  sub->add_option("--dist-timeout", job->timeout,
                  "Under torchrun / srun: seconds a process waits on the others (an all-reduce, rank 0 writing a "
                  "checkpoint) before it aborts the NCCL communicator and exits, so a dead or hung rank ends the "
                  "job; NCCL's asynchronous errors end it at once")
      ->capture_default_str();
  registry().push_back({sub,
                        [c, resume, no_progress, attention, job] {
    c->progress = !*no_progress;
    apply_attention_option(*attention);
    // A malformed --device, launcher variable or --rendezvous is an error before any data is read.
    resolve_train_devices(*c, *job);
    install_sigint_handler();
    const TrainResult r = train(*c, *resume);
    if (r.interrupted || !c->is_rank0()) return 0;
    std::printf(
        "final test top-1: %.2f%% (best %.2f%%%s) after %d epochs, %lld steps; checkpoint %s\n", r.final_top1,
        r.best_top1,
        r.final_ema_top1 >= 0 ? (", EMA " + std::to_string(r.final_ema_top1).substr(0, 5) + "%").c_str() : "",
        r.epochs_done, (long long)r.steps, r.last_checkpoint.c_str());
    const std::filesystem::path dir = std::filesystem::path(r.last_checkpoint).parent_path();
    std::string plots;  // the PNG of each plot, else its SVG
    for (const std::string stem : {"curves", "rationals"})
      for (const char* ext : {".png", ".svg"})
        if (std::filesystem::exists(dir / (stem + ext))) {
          plots += (plots.empty() ? "" : ", ") + (dir / (stem + ext)).string();
          break;
        }
    if (!plots.empty()) std::printf("plots: %s\n", plots.c_str());
    return 0;
                        }});
}

}  // namespace kat::cli
