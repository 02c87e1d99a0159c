"""Compare two safetensors files tensor by tensor: norm-wise relative error ||a - b|| / ||b||.

usage: compare_outputs.py OURS REF [--tol 1e-5]   exit code 1 if any common tensor exceeds tol.
"""
import argparse
import sys

import numpy as np

import torch
from safetensors_io import load_file


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("ours")
    ap.add_argument("ref")
    ap.add_argument("--tol", type=float, default=1e-5)
    a = ap.parse_args()
    ours, _ = load_file(a.ours, torch.float64)
    ref, _ = load_file(a.ref, torch.float64)
    ok = True
    for name in sorted(set(ours) & set(ref)):
        x = ours[name].numpy()
        y = ref[name].numpy()
        if x.shape != y.shape:
            print(f"{name}: shape {x.shape} vs {y.shape}")
            ok = False
            continue
        err = np.linalg.norm(x - y) / max(np.linalg.norm(y), 1e-300)
        bad = not np.isfinite(x).all() or err > a.tol
        ok &= not bad
        print(f"{name:10s} {str(x.shape):18s} rel err {err:.3e}  {'FAIL' if bad else 'ok'} (tol {a.tol:g})")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
