#!/usr/bin/env python3
"""Writes a folder of ImageNet-geometry JPEGs for the data-pipeline benchmarks (bench/gpu_data.sh):
DIR/train/c<k>/<n>.jpg and DIR/val/c<k>/<n>.jpg, `--classes` classes, 500x375 (a quarter of them
375x500, as ImageNet's portrait share), quality 90, 4:2:0, baseline: ~70-80 KiB each, like
ImageNet's average file. Content: a low-frequency random colour field (bicubic upsampling of a
coarse grid), soft edges and sensor-like noise, so the file size and the decoder's work are those
of a photo rather than of a flat or pure-noise image. Deterministic per (seed, split, index).
Fast: one process per core (multiprocessing), numpy + PIL.

  python3 bench/make_jpegs.py DIR [--train 20480] [--val 1024] [--classes 10] [--seed 0] [--jobs N]
Files already present are kept (re-running completes a folder).
"""
import argparse
import multiprocessing as mp
import os

import numpy as np
from PIL import Image, ImageFilter


def make_one(job):
    path, seed, portrait = job
    if os.path.exists(path):
        return os.path.getsize(path)
    rng = np.random.default_rng(seed)
    w, h = (375, 500) if portrait else (500, 375)
    coarse = rng.integers(0, 256, size=(6, 8, 3), dtype=np.uint8)
    base = Image.fromarray(coarse).resize((w, h), Image.BICUBIC)
    mid = Image.fromarray(rng.integers(0, 256, size=(24, 32, 3), dtype=np.uint8)).resize((w, h), Image.BILINEAR)
    img = Image.blend(base, mid, 0.35).filter(ImageFilter.GaussianBlur(0.6))
    px = np.asarray(img, dtype=np.int16)
    px = px + rng.normal(0, 12.5, size=px.shape).astype(np.int16)  # texture / sensor noise
    Image.fromarray(np.clip(px, 0, 255).astype(np.uint8)).save(path, quality=90, subsampling=2, optimize=False)
    return os.path.getsize(path)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("dir")
    ap.add_argument("--train", type=int, default=20480)
    ap.add_argument("--val", type=int, default=1024)
    ap.add_argument("--classes", type=int, default=10)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--jobs", type=int, default=os.cpu_count())
    a = ap.parse_args()
    jobs = []
    for split, count, tag in (("train", a.train, 0), ("val", a.val, 1)):
        for k in range(a.classes):
            os.makedirs(os.path.join(a.dir, split, f"c{k}"), exist_ok=True)
        for i in range(count):
            k = i % a.classes
            path = os.path.join(a.dir, split, f"c{k}", f"{i:07d}.jpg")
            jobs.append((path, (a.seed * 2 + tag) * 10_000_000 + i, i % 4 == 3))
    with mp.Pool(a.jobs) as pool:
        sizes = pool.map(make_one, jobs, chunksize=64)
    print(f"{len(sizes)} JPEGs in {a.dir} ({a.train} train, {a.val} val, {a.classes} classes), "
          f"mean {np.mean(sizes) / 1024:.1f} KiB, total {np.sum(sizes) / 2**30:.2f} GiB")


if __name__ == "__main__":
    main()
