"""Golden file for the pos_embed resampling of `kat train --init` (src/model/pretrained.cpp).

timm's resample_abs_pos_embed reshapes the patch part of pos_embed to (1, C, H, W) and calls
F.interpolate(mode="bicubic", antialias=True) (align_corners False). This script applies exactly
that to grids given by a closed formula (the C++ test rebuilds the same inputs) and stores the
results: tensor "case{i}" of shape (out_h, out_w, C), with "__metadata__" listing the cases.

    /usr/bin/python3 reference/pos_embed_golden.py tests/golden/pos_embed_resample.safetensors
"""
import math
import sys

import torch
import torch.nn.functional as F

from safetensors_io import save_file

CASES = [(7, 8, 6), (14, 24, 5), (14, 7, 4), (7, 5, 3), (8, 8, 2)]  # (in side, out side, channels)


def grid(side: int, channels: int) -> torch.Tensor:
    """(side, side, C) channels-last, float32: v = sin(0.3 y + 0.7 c) + cos(0.45 x - 0.2 c) + 0.1 ((x y) mod 5)."""
    v = torch.empty(side, side, channels, dtype=torch.float64)
    for y in range(side):
        for x in range(side):
            for c in range(channels):
                v[y, x, c] = math.sin(0.3 * y + 0.7 * c) + math.cos(0.45 * x - 0.2 * c) + 0.1 * ((x * y) % 5)
    return v.float()


def main() -> None:
    out = {}
    for i, (a, b, c) in enumerate(CASES):
        g = grid(a, c).permute(2, 0, 1).unsqueeze(0)  # (1, C, a, a)
        r = F.interpolate(g, size=(b, b), mode="bicubic", antialias=True, align_corners=False)
        out[f"case{i}"] = r[0].permute(1, 2, 0).contiguous()
    meta = {"cases": ";".join(f"{a},{b},{c}" for a, b, c in CASES), "torch": torch.__version__}
    save_file(out, sys.argv[1], metadata=meta)


if __name__ == "__main__":
    main()
