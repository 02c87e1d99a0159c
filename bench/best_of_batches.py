#!/usr/bin/env python3
"""The best batch of each side, from a bench/gpu_vs_pytorch.sh sweep (BATCHES="256 512 1024"):
reads OUT/ours_b*.csv (`kat bench --csv` lines) and OUT/torch_b*.csv (torch_gpu_bench.py --csv) and
prints one Markdown row per (model size, mode): our best img/s for kat and deit (with its batch),
timm DeiT's best eager and compiled (with theirs), and the ratios kat / best compiled and kat / best
eager — issue #13's comparison: each side at its own best batch, not a shared one.

usage: python3 bench/best_of_batches.py OUT
"""
import csv
import glob
import os
import sys


def size_of(model):
    for s in ("tiny", "small", "base", "micro", "mini"):
        if f"_{s}_" in model:
            return s
    return model


def best(rows):
    """(img/s, batch) of the fastest row, or None."""
    return max(rows, default=None)


def main():
    out = sys.argv[1]
    ours, torch = {}, {}
    for p in glob.glob(os.path.join(out, "ours_b*.csv")):
        for r in csv.DictReader(open(p)):
            if not r.get("img_per_s"):
                continue
            arch = r["model"].split("_")[0]
            ours.setdefault((size_of(r["model"]), r["mode"], arch), []).append((float(r["img_per_s"]), int(r["batch"])))
    for p in glob.glob(os.path.join(out, "torch_b*.csv")):
        for r in csv.DictReader(open(p)):
            torch.setdefault((r["size"], r["mode"], r["variant"]), []).append((float(r["img_per_s"]), int(r["batch"])))
    if not ours and not torch:
        sys.exit(f"best_of_batches: no ours_b*.csv / torch_b*.csv in {out}")
    fmt = lambda b: f"{b[0]:,.0f} (B={b[1]})" if b else "-"
    ratio = lambda a, b: f"{a[0] / b[0]:.2f}" if a and b else "-"
    print("| size | mode | kat best | deit (ours) best | timm DeiT eager best | timm DeiT compiled best |"
          " kat / compiled | kat / eager |")
    print("|---|---|---|---|---|---|---|---|")
    for size, mode in sorted({(k[0], k[1]) for k in list(ours) + list(torch)}):
        k, d = best(ours.get((size, mode, "kat"), [])), best(ours.get((size, mode, "deit"), []))
        e, c = best(torch.get((size, mode, "eager"), [])), best(torch.get((size, mode, "compile"), []))
        print(f"| {size} | {mode} | {fmt(k)} | {fmt(d)} | {fmt(e)} | {fmt(c)} | {ratio(k, c)} | {ratio(k, e)} |")


if __name__ == "__main__":
    main()
