#!/usr/bin/env python3
"""PyTorch reference timings for bench/grkan_bench.cu (same shapes, same table).

Times, in bf16 storage on (128, 197, D) for D = 192, 768, 1536:
  - gelu:     F.gelu (exact erf) forward, backward (autograd.grad of dy), forward+backward;
  - rational: a straightforward eager PyTorch implementation of the GR-KAN A-form
              (fp32 math, shared numerator (1, 6), denominator (8, 4), autograd for dx, da, db).
Timing: triton.testing.do_bench (CUDA events, L2 flushed before every call), median; falls back
to CUDA events around single calls with a 256 MB L2 flush when Triton is missing.
Floors: forward 2 * es B/elem, backward 3 * es, f+b 5 * es over the device-to-device copy
bandwidth measured here (torch copy_ of 1 GiB, bytes read + written).

usage: python3 bench/grkan_torch.py [out.csv]
"""
import csv
import sys

import torch
import torch.nn.functional as F

SWISH_A = [3.054879741161051e-07, 0.5000007853744493, 0.24999783422824703,
           0.05326628273219478, 0.005803034571292244, 0.0002751961022402342]
SWISH_B = [-4.111554955950634e-06, 0.10652899335007572, -1.2690007399796238e-06,
           0.0005502331264140556]

try:
    from triton.testing import do_bench as _do_bench

    def bench(fn):
        return float(_do_bench(fn, warmup=25, rep=200, return_mode="median"))
except Exception:  # pragma: no cover - triton missing
    _flush = None

    def bench(fn):
        global _flush
        if _flush is None:
            _flush = torch.empty(256 << 20, dtype=torch.int8, device="cuda")
        for _ in range(5):
            fn()
        times = []
        for _ in range(100):
            _flush.zero_()
            s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            s.record()
            fn()
            e.record()
            e.synchronize()
            times.append(s.elapsed_time(e))
        times.sort()
        return times[len(times) // 2]


def rational(x, a, b, groups):
    """Eager GR-KAN A-form: x (..., D) any dtype; a (6,), b (G, 4) fp32; fp32 math."""
    shp = x.shape
    xs = x.float().view(*shp[:-1], groups, shp[-1] // groups)
    p = a[5]
    for k in range(4, -1, -1):
        p = p * xs + a[k]
    ax = xs.abs()
    bb = b.abs().unsqueeze(-1)  # (G, 4, 1)
    q = bb[:, 3]
    for k in range(2, -1, -1):
        q = q * ax + bb[:, k]
    q = 1.0 + q * ax
    return (p / q).to(x.dtype).view(shp)


def copy_bandwidth():
    n = 1 << 30
    a = torch.empty(n, dtype=torch.uint8, device="cuda").fill_(1)
    b = torch.empty_like(a)
    ms = bench(lambda: b.copy_(a))
    return 2.0 * n / (ms * 1e-3)


def main():
    out = sys.argv[1] if len(sys.argv) > 1 else None
    dev = torch.cuda.get_device_name(0)
    bw = copy_bandwidth()
    print(f"device: {dev}; torch {torch.__version__}; copy bandwidth {bw * 1e-9:.0f} GB/s (read+write)")
    hdr = (f"{'op':<9} {'stor':<5} {'shape':<16} {'fwd ms':>8} {'bwd ms':>8} {'f+b ms':>9} | "
           f"{'fwd GB/s':>8} {'bwd':>7} {'f+b':>7} | {'%cp f':>5} {'%cp b':>5} {'%cp fb':>6}")
    print("\n" + hdr)
    rows_out = []
    torch.manual_seed(0)
    rows, groups = 128 * 197, 8
    for dim in (192, 768, 1536):
        n = rows * dim
        es = 2
        x = (torch.randn(128, 197, dim, device="cuda") * 1.5).to(torch.bfloat16).requires_grad_(True)
        dy = torch.randn(128, 197, dim, device="cuda").to(torch.bfloat16)
        a = (torch.tensor(SWISH_A, device="cuda") + 1e-3 * torch.randn(6, device="cuda")).requires_grad_(True)
        b = (torch.tensor(SWISH_B, device="cuda").repeat(groups, 1)
             + 1e-2 * torch.randn(groups, 4, device="cuda")).requires_grad_(True)
        ops = {
            "gelu": (lambda: F.gelu(x), (x,)),
            "rational": (lambda: rational(x, a, b, groups), (x, a, b)),
        }
        for name, (fwd, inputs) in ops.items():
            with torch.no_grad():
                t_f = bench(fwd)
            y = fwd()
            t_b = bench(lambda: torch.autograd.grad(y, inputs, dy, retain_graph=True))
            t_fb = bench(lambda: torch.autograd.grad(fwd(), inputs, dy))
            del y
            fl = [2 * es * n, 3 * es * n, 5 * es * n]
            ts = [t_f, t_b, t_fb]
            gbs = [f / (t * 1e-3) * 1e-9 for f, t in zip(fl, ts)]
            frac = [g / (bw * 1e-9) * 100 for g in gbs]
            shape = f"(128,197,{dim})"
            print(f"{name:<9} {'bf16':<5} {shape:<16} {t_f:8.4f} {t_b:8.4f} {t_fb:9.4f} | "
                  f"{gbs[0]:8.0f} {gbs[1]:7.0f} {gbs[2]:7.0f} | {frac[0]:5.1f} {frac[1]:5.1f} {frac[2]:6.1f}",
                  flush=True)
            rows_out.append(dict(op=name, device=dev, storage="bf16", rows=rows, dim=dim,
                                 groups=groups, fwd_ms=t_f, bwd_ms=t_b, fwdbwd_ms=t_fb,
                                 fwd_GBs=gbs[0], bwd_GBs=gbs[1], fwdbwd_GBs=gbs[2],
                                 copy_GBs=bw * 1e-9))
        del x, dy
    print("(gelu fwd under no_grad; bwd = autograd.grad of a retained graph; %cp = achieved / copy GB/s;"
          " bytes counted as for GR-KAN: fwd 2, bwd 3, f+b 5 x 2 B/elem)")
    if out:
        with open(out, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=list(rows_out[0].keys()))
            w.writeheader()
            w.writerows(rows_out)


if __name__ == "__main__":
    main()
