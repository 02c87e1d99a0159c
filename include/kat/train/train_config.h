// Everything a training run is configured by. Written to DIR/config.json (with the resolved model
// config) and into every checkpoint, so a run can be inspected and resumed.
#pragma once
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

namespace kat {

struct TrainConfig {
  // what
  std::string model = "kat_micro_patch4_28";
  std::vector<std::string> model_overrides;  // "key=value"
  std::string data = "fashion-mnist";        // see data::load_dataset
  std::string out_dir;                       // "" -> runs/<model>-<YYYYmmdd-HHMMSS>
  std::string device = "cpu";                // as given to --device: recorded in config.json and checkpoints
  // The GPUs to train on (data parallel when several); empty: the CPU. Parsed from --device by the
  // CLI (apps/kat/device_flag.h); not saved (a resumed run trains where it is told to).
  std::vector<int> devices;
  // One process of a multi-process job (torchrun / srun, one process per GPU): the CLI fills this
  // from the launcher's environment (dist/launch_env.h) and the --rendezvous* / --dist-timeout
  // flags. Not saved: a resumed run joins the job it is started in (same global batch).
  struct Processes {
    int rank = 0, world_size = 1;     // this process in the job; 1: no job (everything as before)
    int local_world_size = 1;         // processes on this node (they share its cores)
    std::string rendezvous;           // where rank 0's NCCL id is handed over: tcp:HOST:PORT or file:PATH
    std::string job_tag;              // names the job at the rendezvous (TORCHELASTIC_RUN_ID / SLURM_JOB_ID)
    double rendezvous_timeout = 300;  // --rendezvous-timeout: seconds to wait for every process
    double timeout = 600;             // --dist-timeout: longest wait on a peer before the job is aborted
  } procs;
  bool is_rank0() const { return procs.rank == 0; }  // writes logs, metrics, plots, checkpoints
  std::string init;  // fine-tuning: initialise the weights from this checkpoint (see load_pretrained)
  // schedule
  int epochs = 6;
  int batch = 128;      // images per micro-batch
  int accum_steps = 1;  // micro-batches per optimizer step
  double lr = 3e-3, min_lr = 1e-5, warmup_lr = 1e-5;
  double warmup_epochs = 0.3;
  double weight_decay = 0.05;
  bool decay_rational = true;  // timm decays the rational coefficients
  double clip_grad = 0.0;      // max global grad norm (0 = off)
  double ema_decay = 0.0;      // 0 = no EMA
  double drop_path = -1.0;     // -1: model config's drop_path_rate
  // Arithmetic of the training (checked by validate()):
  //   "auto": the backend's own: fp32 on the CPU, bf16 compute (fp32 master weights) on a GPU
  //   "fp32": the CPU's fp32 (a GPU does not train in fp32 yet)
  //   "bf16": a GPU's bf16 compute (GPU only)
  //   "fp8":  the linear layers of the blocks in FP8 (E4M3 activations and weights, E5M2 gradients,
  //           per-tensor power-of-two scales, delayed scaling from an amax history: src/ops/fp8.h).
  //           On the CPU an emulation (the exact FP8 values multiplied in fp32: slower than fp32,
  //           for checking the recipe's numerics); not on the GPU yet.
  // Saved with the run; checkpoints without it (older runs) read as "auto".
  std::string precision = "auto";
  // regularisation / augmentation
  double label_smoothing = 0.1;
  double mixup = 0.0, cutmix = 0.0, mix_prob = 1.0, switch_prob = 0.5;
  // Defaults fit the built-in Fashion-MNIST run (6 short epochs on 2 cores): the model underfits
  // in that budget, so no crop/flip by default (measured: pad-crop + flip cost 5.7 points of test
  // top-1 after 2 epochs, bench/records/NOTES.md). Longer runs should turn augmentation on.
  std::string crop = "none";  // none | pad | rrc
  int padding = 2;
  bool hflip = false;
  int randaug_n = 0;
  double randaug_m = 9.0, randaug_mstd = 0.5;
  double random_erase = 0.0;
  std::vector<float> mean, std;  // empty: 0.5 / 0.5 for every channel
  // mechanics
  uint64_t seed = 0;
  int workers = -1;                           // loader threads; -1: 1 on the CPU, all cores but one on a GPU
  int threads = 0;                            // 0: OpenMP default (all cores)
  int keep_last = 2;                          // checkpoints kept besides best
  int64_t save_every = 0;                     // also save every N optimizer steps (0: epoch ends only)
  int64_t max_steps = 0;                      // stop (with a checkpoint) after this many steps in total (0: off)
  int log_every = 20;                         // metrics.jsonl line every N steps
  int64_t train_subset = 0, test_subset = 0;  // use the first N samples (0: all)
  bool skip_bad = false;
  bool lazy_data = false;  // folder datasets: decode images in the loader workers, not up front
  // Training batches of folder datasets: "cpu" (the loader's worker threads), "gpu" (nvJPEG +
  // GPU augmentation, data/cuda/gpu_loader.h; implies lazy reading of the train split), "auto"
  // (gpu when possible: see resolve_decode). Taken from the command line on resume, like device.
  std::string decode = "auto";
  // --decode gpu: the share of JPEGs the reader threads decode with libjpeg-turbo beside the GPU's
  // JPEG engine (a fixed hashed subset of the files; pixels depend on it, so it is kept on resume),
  // and how many nvJPEG decoders (each a host thread and a stream) decode batches in parallel
  // (1 to 8; same pixels). decode_streams and the three mechanics below change no batch, so on
  // resume they come from the command line (resume_run in trainer.cpp).
  double decode_cpu_share = 0.0;
  int decode_streams = 3;
  // --decode gpu: the loader's host threads at this niceness (0 .. 19), so that they cannot preempt
  // the thread that launches the training step when the host has fewer cores than threads.
  int loader_nice = 0;
  // --decode gpu: the loader's CUDA streams at the device's greatest priority ("high") or the
  // default ("normal"; GpuLoaderOptions::high_priority), and how long the training waits for a batch
  // while the pipeline makes no progress before it stops with an error naming the stage it waits
  // for (seconds; 0: forever; GpuLoaderOptions::stall_timeout_s).
  std::string decode_priority = "normal";
  double data_timeout = 300;
  bool progress = true;
  int eval_batch = 256;
  // folder: datasets' test split is fitted with timm's evaluation transform (docs/MODEL.md §4): bicubic
  // resize of the shorter side to floor(img_size / eval_crop_pct), center crop img_size.
  double eval_crop_pct = 0.875;

  // "gpu" or "cpu": where this run decodes and augments its training images. "auto" gives gpu for a
  // lazy folder dataset on one GPU in a build with nvJPEG, else cpu; "gpu" where that is impossible
  // is a kat::Error saying why. why (optional): the reason auto chose cpu.
  std::string resolve_decode(std::string* why = nullptr) const;

  std::string to_json(int indent = 2) const;
  static TrainConfig from_json(const std::string& text, const std::string& source);
  void validate() const;
};

struct ModelConfig;
// The input normalisation (mean, std per channel) a run uses: --mean / --std when given, else the
// model config's (the weights' own: ImageNet statistics for the 224 models), else empty (0.5 / 0.5).
// Training, `kat eval` and `kat predict` all resolve it here, so they agree.
std::pair<std::vector<float>, std::vector<float>> input_normalisation(const TrainConfig& t, const ModelConfig& m);

}  // namespace kat
