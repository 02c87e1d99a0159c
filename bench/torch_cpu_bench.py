"""PyTorch CPU baseline for `kat bench`: the same KAT / DeiT models (reference/kat_ref.py, float32,
eager; the public KAT's rational kernel is Triton/GPU-only, so on the CPU PyTorch runs the rational as
plain tensor ops exactly like this) timed the same way: median of ITERS runs after one warm-up.

usage: /usr/bin/python3 bench/torch_cpu_bench.py MODEL BATCH [ITERS] [--threads N]
prints CSV lines:  torch_infer,MODEL,BATCH,THREADS,IMG_PER_S,MS   and   torch_train,...
A training step = forward + cross-entropy (label smoothing 0.1) + backward + AdamW step.
"""
import argparse
import os
import statistics
import sys
import time

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "reference"))
from configs import load_config  # noqa: E402
from kat_ref import KAT  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("model")
    ap.add_argument("batch", type=int)
    ap.add_argument("iters", type=int, nargs="?", default=5)
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    name = a.model
    path = os.path.join(os.path.dirname(__file__), "..", "configs", name + ".json")
    cfg = load_config(path if os.path.exists(path) else name)
    model = KAT(cfg, dtype=torch.float32)
    x = torch.randn(a.batch, cfg["in_chans"], cfg["img_size"], cfg["img_size"])
    y = torch.arange(a.batch) % cfg["num_classes"]
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0.05)

    def timed(fn):
        ts = []
        for i in range(a.iters + 1):
            t0 = time.perf_counter()
            fn()
            if i:
                ts.append(time.perf_counter() - t0)
        return statistics.median(ts)

    model.eval()
    with torch.no_grad():
        t_inf = timed(lambda: model(x))
    model.train()

    def step():
        opt.zero_grad(set_to_none=True)
        loss = F.cross_entropy(model(x), y, label_smoothing=0.1)
        loss.backward()
        opt.step()

    t_tr = timed(step)
    print(f"torch_infer,{name},{a.batch},{a.threads},{a.batch / t_inf:.1f},{t_inf * 1e3:.3f}")
    print(f"torch_train,{name},{a.batch},{a.threads},{a.batch / t_tr:.1f},{t_tr * 1e3:.3f}")


if __name__ == "__main__":
    main()
