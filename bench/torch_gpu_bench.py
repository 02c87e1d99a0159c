#!/usr/bin/env python3
"""PyTorch/timm reference throughput on the GPU for bench/run_model_h200.sh.

timm deit_tiny_patch16_224 (drop_path_rate 0.1, as configs/deit_tiny_patch16_224.json), batch 256,
224^2, synthetic data, bf16 autocast, fused AdamW:
  train step = zero_grad + forward + soft-target cross-entropy (label smoothing 0.1) + backward
               + AdamW step
  inference  = forward under torch.inference_mode
eager, and torch.compile with --compile. CUDA events around each iteration after warm-up; median.
With --ours CSV (written by gpu_model_check_main bench) prints one table with the ratio
ours / PyTorch (DeiT-T eager as the reference for both of our models: timm has no KAT).
"""
import argparse
import csv
import statistics
import sys

import torch
import torch.nn.functional as F


def time_it(fn, warmup, iters):
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    ms = []
    for _ in range(iters):
        e0 = torch.cuda.Event(enable_timing=True)
        e1 = torch.cuda.Event(enable_timing=True)
        e0.record()
        fn()
        e1.record()
        e1.synchronize()
        ms.append(e0.elapsed_time(e1))
    return statistics.median(ms)


def bench(model_name, batch, iters, compile_):
    import timm

    torch.manual_seed(0)
    model = timm.create_model(model_name, drop_path_rate=0.1).cuda()
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
    return tr, inf


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--iters", type=int, default=20)
    ap.add_argument("--compile", action="store_true")
    ap.add_argument("--ours", default=None, help="CSV of gpu_model_check_main bench")
    ap.add_argument("--csv", default=None)
    a = ap.parse_args()
    print(f"torch {torch.__version__}, {torch.cuda.get_device_name(0)}, batch {a.batch}, bf16 autocast, fused AdamW")
    rows = {}
    variants = [("eager", False)] + ([("compile", True)] if a.compile else [])
    for vname, comp in variants:
        try:
            tr, inf = bench("deit_tiny_patch16_224", a.batch, a.iters, comp)
        except Exception as e:  # compile may fail on a bare machine; keep the eager numbers
            print(f"  {vname}: failed: {e}", file=sys.stderr)
            continue
        rows[("train", vname)] = a.batch / (tr * 1e-3)
        rows[("infer", vname)] = a.batch / (inf * 1e-3)
        print(f"  timm deit_tiny {vname:8s} train {tr:8.2f} ms {a.batch / (tr * 1e-3):9.0f} img/s   "
              f"infer {inf:8.2f} ms {a.batch / (inf * 1e-3):9.0f} img/s", flush=True)
    if a.csv:
        with open(a.csv, "w") as f:
            f.write("model,mode,variant,img_per_s\n")
            for (mode, v), ips in rows.items():
                f.write(f"deit_tiny_patch16_224,{mode},{v},{ips:.1f}\n")
    if a.ours:
        try:
            ours = list(csv.DictReader(open(a.ours)))
        except OSError:
            ours = []
        print()
        hdr = "| ours: model | mode | ours img/s | timm DeiT-T eager img/s | ours/eager |"
        if ("train", "compile") in rows:
            hdr += " timm DeiT-T compile img/s | ours/compile |"
        print(hdr)
        print("|" + "---|" * (hdr.count("|") - 1))
        for r in ours:
            mode = r["mode"]
            ips = float(r["img_per_s"])
            line = f"| {r['model']} ({r['precision']}, B={r['batch']}) | {mode} | {ips:.0f} |"
            e = rows.get((mode, "eager"))
            line += f" {e:.0f} | {ips / e:.2f} |" if e else " - | - |"
            if ("train", "compile") in rows:
                c = rows.get((mode, "compile"))
                line += f" {c:.0f} | {ips / c:.2f} |" if c else " - | - |"
            print(line)


if __name__ == "__main__":
    main()
