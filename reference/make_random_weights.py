#!/usr/bin/python3
"""Random full-size weights (timm names, F32) and optionally a random input, for checking the C++
engine against reference/infer_ref.py on real model sizes.

  /usr/bin/python3 reference/make_random_weights.py --config kat_tiny_patch16_224 --seed 0 \
      --out W.safetensors [--input-out I.safetensors --batch 2 [--input-seed S]]

Parameters use the golden scheme (kat_ref.randomize_parameters): linear/conv weights N(0, 1/fan_in),
biases N(0, 0.1^2), LayerNorm weight 1 + N(0, 0.1^2), cls/pos N(0, 0.1^2), rational coefficients =
init + N(0, 0.05^2). The input is N(0, 1), shape (batch, in_chans, img, img), stored as 'input' (F32),
drawn from its own generator (seed --input-seed, default seed + 1).
"""
import argparse
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from configs import config_json, load_config  # noqa: E402
from kat_ref import KAT, randomize_parameters  # noqa: E402
from safetensors_io import save_file  # noqa: E402


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", required=True, help="built-in config name or path to a config JSON")
    ap.add_argument("--seed", type=int, required=True)
    ap.add_argument("--out", required=True, help="weights file to write")
    ap.add_argument("--input-out", help="also write a random input here (tensor 'input')")
    ap.add_argument("--batch", type=int, default=2)
    ap.add_argument("--input-seed", type=int, help="default: seed + 1")
    args = ap.parse_args()
    cfg = load_config(args.config)
    model = KAT(cfg, dtype=torch.float32)           # randomize_parameters draws in float64
    randomize_parameters(model, torch.Generator().manual_seed(args.seed))
    save_file(dict(model.state_dict()), args.out, dtype="F32", metadata={"config": config_json(cfg)})
    n = sum(p.numel() for p in model.parameters())
    print(f"{args.out}: {cfg['name']} seed {args.seed}, {n:,} params, {os.path.getsize(args.out):,} bytes")
    if args.input_out:
        s = args.seed + 1 if args.input_seed is None else args.input_seed
        g = torch.Generator().manual_seed(s)
        x = torch.randn(args.batch, cfg["in_chans"], cfg["img_size"], cfg["img_size"], generator=g,
                        dtype=torch.float64)
        save_file({"input": x}, args.input_out, dtype="F32")
        print(f"{args.input_out}: input {tuple(x.shape)} seed {s}")


if __name__ == "__main__":
    main()
