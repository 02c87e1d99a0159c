#!/usr/bin/env python3
"""Serving latency of timm DeiT on the GPU (issue #13 item 1): ms per inference forward at small
batches, bf16 autocast, torch.inference_mode, for each mode:
  eager            the model as is
  compile          torch.compile(model)                       (default mode)
  reduce-overhead  torch.compile(model, mode="reduce-overhead")  (CUDA graphs)
CUDA events around each forward after warm-up, median of --iters. One CSV line per (model, batch,
mode): torch_latency,MODEL,BATCH,MODE,MS (a mode that fails prints MS as "failed").

usage: python3 bench/torch_infer_latency.py [--models deit_tiny_patch16_224] [--batches 1,8,32]
           [--modes eager,compile,reduce-overhead] [--iters 50]
"""
import argparse
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from torch_gpu_bench import time_it  # noqa: E402


def latency(fn, warmup, iters):
    """Median ms of fn() by CUDA events: torch_gpu_bench.py's protocol (one for every PyTorch bench)."""
    return time_it(fn, warmup, iters)[0]


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default="deit_tiny_patch16_224")
    ap.add_argument("--batches", default="1,8,32")
    ap.add_argument("--modes", default="eager,compile,reduce-overhead")
    ap.add_argument("--iters", type=int, default=50)
    a = ap.parse_args()
    import timm

    for name in a.models.split(","):
        torch.manual_seed(0)
        model = timm.create_model(name).cuda().eval()
        for mode in a.modes.split(","):
            torch._dynamo.reset()
            fwd = model if mode == "eager" else torch.compile(model, mode=None if mode == "compile" else mode)
            for b in (int(v) for v in a.batches.split(",")):
                x = torch.randn(b, 3, 224, 224, device="cuda")

                def infer():
                    with torch.inference_mode(), torch.autocast("cuda", dtype=torch.bfloat16):
                        fwd(x)

                try:
                    ms = f"{latency(infer, 3 if mode == 'eager' else 15, a.iters):.4f}"
                except Exception as e:  # noqa: BLE001 (a mode that cannot run is a result)
                    print(f"{name} b{b} {mode}: {type(e).__name__}: {e}", file=sys.stderr)
                    ms = "failed"
                print(f"torch_latency,{name},{b},{mode},{ms}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
