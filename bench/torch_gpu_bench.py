#!/usr/bin/env python3
"""PyTorch/timm reference throughput on the GPU, and the side-by-side table with our engine.

timm deit_{tiny,small,base}_patch16_224 (drop_path_rate 0.1, as our configs), synthetic 224^2
data, bf16 autocast, fused AdamW:
  train step = zero_grad + forward + soft-target cross-entropy (label smoothing 0.1) + backward
               + AdamW step
  inference  = forward under torch.inference_mode
eager, and torch.compile with --compile. CUDA events around each iteration after warm-up; median.
Peak memory = torch.cuda.max_memory_allocated over the timed phase (tensors only: the CUDA
context and allocator slack are not counted; ours counts everything it holds, see kat bench).

--ours CSV: lines of `kat bench {train,infer} --device cuda --csv` (bench/gpu_vs_pytorch.sh writes
them) or of gpu_model_check_main bench. Each of our models is compared with the timm DeiT of the
same size (kat_tiny and deit_tiny -> timm deit_tiny): timm has no KAT.
"""
import argparse
import csv
import gc
import statistics
import sys

import torch
import torch.nn.functional as F


def time_it(fn, warmup, iters):
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    ms = []
    for _ in range(iters):
        e0 = torch.cuda.Event(enable_timing=True)
        e1 = torch.cuda.Event(enable_timing=True)
        e0.record()
        fn()
        e1.record()
        e1.synchronize()
        ms.append(e0.elapsed_time(e1))
    return statistics.median(ms), torch.cuda.max_memory_allocated() / 2**20


def bench(model_name, batch, iters, compile_):
    import timm

    _, tr, inf = bench_model(lambda: timm.create_model(model_name, drop_path_rate=0.1), batch, iters, compile_)
    return tr, inf


def bench_model(make_model, batch, iters, compile_):
    """The protocol for any 224^2, 1000-class model on the GPU (also bench/torch_grkan_train.py's):
    (parameters, (train ms, MiB), (infer ms, MiB)) of a fused-AdamW bf16-autocast train step and an
    inference forward on synthetic data, for the model make_model() builds after seeding torch with
    0 (built here so it is freed here, before the next one)."""
    torch.manual_seed(0)
    model = make_model().cuda()
    params = sum(p.numel() for p in model.parameters())
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0.05, fused=True)
    x = torch.randn(batch, 3, 224, 224, device="cuda")
    t = torch.softmax(torch.randn(batch, 1000, device="cuda"), dim=1)
    fwd = torch.compile(model) if compile_ else model

    def train_step():
        opt.zero_grad(set_to_none=True)
        with torch.autocast("cuda", dtype=torch.bfloat16):
            out = fwd(x)
            loss = F.cross_entropy(out.float(), t, label_smoothing=0.1)
        loss.backward()
        opt.step()

    def infer():
        with torch.inference_mode(), torch.autocast("cuda", dtype=torch.bfloat16):
            fwd(x)

    model.train()
    warm = 10 if compile_ else 5
    tr = time_it(train_step, warm, iters)
    model.eval()
    inf = time_it(infer, warm, iters)
    del model, opt, fwd, x, t
    gc.collect()
    torch.cuda.empty_cache()
    return params, tr, inf


def size_of(name):
    for s in ("tiny", "small", "base"):
        if f"_{s}_" in name:
            return s
    return None


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--models", default="deit_tiny_patch16_224", help="comma-separated timm names")
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--iters", type=int, default=20)
    ap.add_argument("--compile", action="store_true")
    ap.add_argument("--ours", default=None, help="CSV of kat bench --csv (or gpu_model_check_main bench)")
    ap.add_argument("--csv", default=None)
    a = ap.parse_args()
    models = [m for m in a.models.split(",") if m]
    print(f"torch {torch.__version__}, {torch.cuda.get_device_name(0)}, batch {a.batch}, bf16 autocast, fused AdamW")
    rows = {}  # (size, mode, variant) -> (img/s, MiB)
    variants = [("eager", False)] + ([("compile", True)] if a.compile else [])
    for m in models:
        for vname, comp in variants:
            try:
                (tr, trm), (inf, infm) = bench(m, a.batch, a.iters, comp)
            except Exception as e:  # compile may fail on a bare machine; keep the eager numbers
                print(f"  {m} {vname}: failed: {e}", file=sys.stderr)
                continue
            rows[(size_of(m), "train", vname)] = (a.batch / (tr * 1e-3), trm)
            rows[(size_of(m), "infer", vname)] = (a.batch / (inf * 1e-3), infm)
            print(f"  timm {m} {vname:8s} train {tr:8.2f} ms {a.batch / (tr * 1e-3):9.0f} img/s {trm:7.0f} MiB   "
                  f"infer {inf:8.2f} ms {a.batch / (inf * 1e-3):9.0f} img/s {infm:7.0f} MiB", flush=True)
    if a.csv:
        with open(a.csv, "w") as f:
            f.write("size,mode,variant,batch,img_per_s,peak_mib\n")
            for (size, mode, v), (ips, mib) in rows.items():
                f.write(f"{size},{mode},{v},{a.batch},{ips:.1f},{mib:.0f}\n")
    if not a.ours:
        return
    try:
        ours = list(csv.DictReader(open(a.ours)))
    except OSError:
        ours = []
    compiled = any(k[2] == "compile" for k in rows)
    print()
    hdr = "| ours: model | mode | ours img/s | ours MiB | timm DeiT eager img/s | MiB | ours/eager |"
    if compiled:
        hdr += " timm DeiT compile img/s | ours/compile |"
    print(hdr)
    print("|" + "---|" * (hdr.count("|") - 1))
    for r in ours:
        mode, size = r["mode"], size_of(r["model"])
        ips = float(r["img_per_s"])
        mib = r.get("device_mib") or "-"
        where = r.get("where") or r.get("precision", "")
        line = f"| {r['model']} ({where}, B={r['batch']}) | {mode} | {ips:.0f} | {mib} |"
        e = rows.get((size, mode, "eager"))
        line += f" {e[0]:.0f} | {e[1]:.0f} | {ips / e[0]:.2f} |" if e else " - | - | - |"
        if compiled:
            c = rows.get((size, mode, "compile"))
            line += f" {c[0]:.0f} | {ips / c[0]:.2f} |" if c else " - | - |"
        print(line)


if __name__ == "__main__":
    main()
