// The training recipe the data benchmarks time (data_bench, loader_bench): DeiT's, as timm's
// train.py runs it and `kat train` spells it with flags (bench/gpu_data.sh's DEIT): RandomResizedCrop
// to 224, flip, RandAugment 2/9 m-std 0.5, random erasing 0.25, mixup 0.8 / cutmix 1.0, label
// smoothing 0.1, ImageNet normalisation. One description for both benchmarks.
#pragma once
#include "kat/data/loader.h"

namespace kat::bench {

// light = true: only the crop, flip and normalisation (what torchvision's GPU path is compared on).
inline data::LoaderConfig deit_recipe(int batch, bool light = false) {
  data::LoaderConfig c;
  c.batch_size = batch;
  c.seed = 1;
  c.aug.train = true;
  c.aug.out_size = 224;
  c.aug.crop = "rrc";
  c.aug.hflip = true;
  c.aug.mean = {0.485f, 0.456f, 0.406f};
  c.aug.std = {0.229f, 0.224f, 0.225f};
  if (!light) {
    c.aug.randaug_n = 2;
    c.aug.randaug_m = 9;
    c.aug.randaug_mstd = 0.5;
    c.aug.random_erase = 0.25;
    c.mix.mixup_alpha = 0.8;
    c.mix.cutmix_alpha = 1.0;
    c.mix.label_smoothing = 0.1;
  }
  return c;
}

}  // namespace kat::bench
