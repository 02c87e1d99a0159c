// The public C++ API of the kat engine, in one include.
//
//   #include <kat/kat.h>
//   kat::KatModel m(kat::ModelConfig::load("kat_tiny_patch16_224"));
//   m.load_weights(kat::io::SafetensorsFile::load("W.safetensors"));
//   m.plan(batch);
//   const float* logits = m.forward(images, batch);          // (batch, classes)
//
//   kat::TrainConfig c;  c.epochs = 3;  kat::train(c);      // what `kat train` runs
//                     // (GPUs: c.device = "cuda:0" and c.devices = {0}; `kat train` parses --device)
//
//   // One backend interface, kat::Engine, for training and evaluation on any device:
//   //   kat::CpuEngine cpu(m);                               // the CPU, computing on m itself
//   //   kat::GpuRunner gpu(m.config(), /*device*/ 0, kat::DType::BF16, kat::AdamWConfig{}, batch,
//   //                      /*training*/ false);              // one GPU (CUDA build), bf16 compute
//   //   gpu.upload_params(m.params.data());
//   //   const float* z = gpu.logits(images, batch);          // host (batch, classes)
//   //   kat::evaluate(gpu, dataset, eval_loader_cfg, true);  // top-1/top-5/loss with any Engine
//   // kat::cuda_available(&why) says whether a GPU is usable (false in a CPU-only build).
//   // Training your own loop on an Engine, uploads overlapped with compute (what kat::train does):
//   //   e.stage(x0, t0, B);
//   //   for each micro-batch i: e.begin_step(); e.compute_staged(1, &rng);
//   //                           e.stage(x_next, t_next, B);   // uploads while i computes
//   //                           double loss = e.staged_loss(); e.finish_step(lr, clip);
//   // kat::GpuGroup: the same calls over several GPUs (data parallel, NCCL), as `--device cuda:0,1`.
//
//   kat::write_run_plots(run_dir, &m, "label");                // curves + learned rationals (SVG/PNG)
//
// Link against the `kat::kat` CMake target (find_package(kat) or add_subdirectory). Only include/ is
// public: the ops, the CUDA model and the kernels are internal. Errors are thrown as kat::Error with a message
// that names the input at fault.
#pragma once

#include "kat/core/dtype.h"
#include "kat/core/error.h"
#include "kat/data/data.h"
#include "kat/io/safetensors.h"
#include "kat/model/config.h"
#include "kat/model/kat_model.h"
#include "kat/model/layout.h"
#include "kat/model/pretrained.h"
#include "kat/ops/grkan.h"
#include "kat/train/cpu_engine.h"
#include "kat/train/engine.h"
#include "kat/train/evaluate.h"
#include "kat/train/gpu_group.h"
#include "kat/train/gpu_runner.h"
#include "kat/train/inference.h"
#include "kat/train/optim.h"
#include "kat/train/run_plots.h"
#include "kat/train/train_config.h"
#include "kat/train/trainer.h"
