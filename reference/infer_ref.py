#!/usr/bin/python3
"""Float64 reference inference from a safetensors weights file (timm names), to check `kat infer`.

  /usr/bin/python3 reference/infer_ref.py --config kat_tiny_patch16_224 --weights W.safetensors \
      --input I.safetensors --output O.safetensors

Reads tensor 'input' (N, C, H, W) from --input (any float dtype), runs the model in float64 with
drop-path off, and writes 'logits' (N, classes) and 'features' (N, tokens, D; after the final
norm) to --output, as F32 by default (--dtype F64 keeps full precision). The weights file must hold
exactly the model's timm parameter names (a 'param.' prefix, as in golden files, is also accepted);
missing, unexpected or mis-shaped names are an error.
"""
import argparse
import os
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from configs import config_json, load_config  # noqa: E402
from kat_ref import KAT, load_weights  # noqa: E402
from safetensors_io import load_file, save_file  # noqa: E402


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", required=True, help="built-in config name or path to a config JSON")
    ap.add_argument("--weights", required=True)
    ap.add_argument("--input", required=True, help="safetensors file with tensor 'input'")
    ap.add_argument("--output", required=True)
    ap.add_argument("--dtype", choices=("F32", "F64"), default="F32", help="stored dtype of the outputs")
    ap.add_argument("--chunk", type=int, default=8, help="images per forward pass (memory bound)")
    args = ap.parse_args()

    cfg = load_config(args.config)
    model = KAT(cfg, dtype=torch.float64).eval()
    w, _ = load_file(args.weights, as_dtype=torch.float64)
    prefix = "param." if any(k.startswith("param.") for k in w) else ""   # a golden file
    if prefix:
        w = {k: v for k, v in w.items() if k.startswith(prefix)}
    load_weights(model, w, prefix=prefix)
    inp, _ = load_file(args.input, as_dtype=torch.float64)
    if "input" not in inp:
        sys.exit(f"{args.input}: no tensor named 'input' (has {sorted(inp)})")
    x = inp["input"]
    want = (cfg["in_chans"], cfg["img_size"], cfg["img_size"])
    if x.dim() != 4 or tuple(x.shape[1:]) != want:
        sys.exit(f"input shape {tuple(x.shape)} does not match (N, {want[0]}, {want[1]}, {want[2]})")
    t0 = time.time()
    feats, logits = [], []
    with torch.no_grad():
        for i in range(0, x.shape[0], max(1, args.chunk)):
            f = model.forward_features(x[i:i + args.chunk])
            feats.append(f)
            logits.append(model.forward_head(f))
    feats, logits = torch.cat(feats), torch.cat(logits)
    save_file({"logits": logits, "features": feats}, args.output, dtype=args.dtype,
              metadata={"config": config_json(cfg), "precision": "float64 compute"})
    print(f"{args.output}: {cfg['name']} N={x.shape[0]} logits {tuple(logits.shape)} features "
          f"{tuple(feats.shape)} ({time.time() - t0:.1f} s); argmax {logits.argmax(-1).tolist()[:16]}")


if __name__ == "__main__":
    main()
