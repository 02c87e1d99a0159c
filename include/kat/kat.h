// The public C++ API of the kat engine, in one include.
//
//   #include <kat/kat.h>
//   kat::KatModel m(kat::ModelConfig::load("kat_tiny_patch16_224"));
//   m.load_weights(kat::io::SafetensorsFile::load("W.safetensors"));
//   m.plan(batch);
//   const float* logits = m.forward(images, batch);          // (batch, classes)
//
//   kat::TrainConfig c;  c.epochs = 3;  kat::train(c);      // what `kat train` runs
//                                                            // (c.device = "cuda:0" for a GPU)
//   // The same model on a GPU (CUDA build; bf16 compute, forward-only plan):
//   kat::GpuRunner gpu(m.config(), /*device*/ 0, /*bf16*/ true, kat::AdamWConfig{}, batch,
//                      /*training*/ false);
//   gpu.upload_params(m.params.data());
//   gpu.forward(images, batch, logits_out /* host (batch, classes) */);
//   // kat::cuda_available(&why) says whether a GPU is usable (false in a CPU-only build).
//   // Training your own loop on it, uploads overlapped with compute (what kat::train does):
//   //   gpu.stage(x0, t0, B);
//   //   for each micro-batch i: gpu.begin_step(); gpu.compute_staged(1, &rng);
//   //                           gpu.stage(x_next, t_next, B);   // uploads while i computes
//   //                           double loss = gpu.staged_loss(); gpu.finish_step(lr, clip);
//   // kat::GpuGroup: the same calls over several GPUs (data parallel, NCCL), as `--device cuda:0,1`.
//
//   kat::write_run_plots(run_dir, &m, "label");                // curves + learned rationals (SVG/PNG)
//
// Link against the `katlib` CMake target. Errors are thrown as kat::Error with a message that
// names the input at fault.
#pragma once

#include "core/error.h"
#include "data/data.h"
#include "io/safetensors.h"
#include "model/config.h"
#include "model/kat_model.h"
#include "model/pretrained.h"
#include "ops/cpu_ops.h"
#include "ops/grkan.h"
#include "train/evaluate.h"
#include "train/gpu_group.h"
#include "train/gpu_runner.h"
#include "train/inference.h"
#include "train/optim.h"
#include "train/run_plots.h"
#include "train/train_config.h"
#include "train/trainer.h"
