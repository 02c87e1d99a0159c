#!/usr/bin/env python3
"""torchvision's GPU data path on a folder of JPEGs, the PyTorch user's fastest way to the same
batches as kat's GPU pipeline (bench/data_bench.cpp): file reads in a thread pool (one batch read
ahead), torchvision.io.decode_jpeg(list, device="cuda") (nvJPEG, batched), then torchvision.transforms.v2
on the GPU tensors. Recipes:
  light: per image RandomResizedCrop(224) + RandomHorizontalFlip, then ToDtype(float32, scale) +
         Normalize(ImageNet) on the batch (v2 transforms draw one set of parameters per call, so the
         per-image random crop needs one call per image);
  deit:  light + RandAugment(2, 9) per image (uint8, before normalising) + RandomErasing(0.25) per
         image, then MixUp(0.8) or CutMix(1.0) on the batch (v2.RandomChoice).
Timed: --batches batches after 5 warm-up batches, one torch.cuda.synchronize() at the end.

  python3 bench/torch_gpu_data.py DIR [--recipe light|deit] [--batch 256] [--batches 60] [--threads N] [--csv]
"""
import argparse
import concurrent.futures as cf
import glob
import os
import time

import torch
import torchvision
from torchvision.io import ImageReadMode, decode_jpeg, read_file
from torchvision.transforms import v2


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("dir")
    ap.add_argument("--recipe", choices=["light", "deit"], default="light")
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--batches", type=int, default=60)
    ap.add_argument("--threads", type=int, default=max(1, (os.cpu_count() or 2) - 1))
    ap.add_argument("--csv", action="store_true")
    a = ap.parse_args()
    classes = sorted(d for d in os.listdir(os.path.join(a.dir, "train")) if not d.startswith("."))
    files, labels = [], []
    for k, c in enumerate(classes):
        fs = sorted(glob.glob(os.path.join(a.dir, "train", c, "*.jpg")))
        files += fs
        labels += [k] * len(fs)
    assert len(files) >= a.batch, f"{len(files)} files in {a.dir}/train, fewer than one batch"
    g = torch.Generator().manual_seed(0)
    dev = torch.device("cuda")
    crop = v2.Compose([v2.RandomResizedCrop(224, antialias=True), v2.RandomHorizontalFlip()])
    randaug = v2.RandAugment(num_ops=2, magnitude=9)
    erase = v2.RandomErasing(p=0.25, value=0)
    norm = v2.Compose([v2.ToDtype(torch.float32, scale=True),
                       v2.Normalize(mean=[0.485, 0.456, 0.406], std=[0.229, 0.224, 0.225])])
    mix = v2.RandomChoice([v2.MixUp(alpha=0.8, num_classes=len(classes)), v2.CutMix(alpha=1.0, num_classes=len(classes))])
    pool = cf.ThreadPoolExecutor(a.threads)  # file reads
    ahead_pool = cf.ThreadPoolExecutor(1)      # the next batch's reads, while this one is built
    perm = torch.randperm(len(files), generator=g).tolist()
    nb = len(files) // a.batch

    def read_batch(b):
        idx = perm[(b % nb) * a.batch:(b % nb + 1) * a.batch]
        return list(pool.map(lambda i: read_file(files[i]), idx)), torch.tensor([labels[i] for i in idx])

    def build(datas, y):
        imgs = decode_jpeg(datas, mode=ImageReadMode.RGB, device=dev)
        out = []
        for im in imgs:
            im = crop(im)
            if a.recipe == "deit":
                im = randaug(im)
            out.append(im)
        x = norm(torch.stack(out))
        y = y.to(dev, non_blocking=True)
        if a.recipe == "deit":
            x = torch.stack([erase(t) for t in x])
            x, y = mix(x, y)
        return x, y

    total = a.batches + 5
    ahead = ahead_pool.submit(read_batch, 0)
    t0 = None
    for b in range(total):
        if b == 5:
            torch.cuda.synchronize()
            t0 = time.perf_counter()
        datas, y = ahead.result()
        if b + 1 < total:
            ahead = ahead_pool.submit(read_batch, b + 1)
        x, y = build(datas, y)
    torch.cuda.synchronize()
    s = time.perf_counter() - t0
    ips = a.batches * a.batch / s
    print(f"torchvision {torchvision.__version__} GPU decode + v2 GPU transforms, {a.recipe} recipe, batch {a.batch}, "
          f"{a.threads} read threads: {ips:.0f} img/s ({1e3 * s / a.batches:.1f} ms per batch) on {torch.cuda.get_device_name()}")
    if a.csv:
        print(f"torch_gpu_data,{a.recipe},{a.batch},{ips:.1f}")


if __name__ == "__main__":
    main()
