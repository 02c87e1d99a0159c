#!/usr/bin/python3
"""Write a golden file (docs/FORMATS.md): random float32 parameters and inputs, float64 forward,
loss and backward, everything stored as F32.

  /usr/bin/python3 reference/export_golden.py --config golden_kat_small --batch 3 --seed 1 \
      --label-smoothing 0.1 --out tests/golden/golden_kat_small.safetensors

RNG draw order (one torch.Generator seeded with --seed): every parameter in named_parameters()
order, then the input (N, C, H, W) ~ N(0, 1), then the labels (and for --soft-targets the second
labels and the mixing weights).
"""
import argparse
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from configs import config_json, load_config, num_tokens  # noqa: E402
from kat_ref import KAT, kat_loss, randomize_parameters  # noqa: E402
from safetensors_io import save_file  # noqa: E402


def make_targets(gen, n, classes, soft):
    """One-hot rows, or (soft) lam * onehot(i) + (1 - lam) * onehot(j), j != i, lam in [0.5, 1).
    lam is rounded to float32 first; with lam >= 0.5 the value 1 - lam is exact in float32, so every
    stored row sums to exactly 1."""
    labels = torch.randint(classes, (n,), generator=gen)
    t = torch.zeros(n, classes, dtype=torch.float64)
    if not soft:
        t[torch.arange(n), labels] = 1.0
        return t
    if classes < 2:
        raise ValueError("--soft-targets needs at least 2 classes")
    other = (labels + torch.randint(1, classes, (n,), generator=gen)) % classes
    lam = (0.5 + 0.5 * torch.rand(n, generator=gen, dtype=torch.float64)).float().double()
    t[torch.arange(n), labels] = lam
    t[torch.arange(n), other] = 1.0 - lam
    return t


def export(cfg, batch, seed, ls, soft):
    if cfg.get("drop_path_rate", 0.0) != 0.0:
        print(f"note: drop_path_rate {cfg['drop_path_rate']} set to 0 (goldens have drop-path off)",
              file=sys.stderr)
        cfg = dict(cfg, drop_path_rate=0.0)
    gen = torch.Generator().manual_seed(seed)
    model = KAT(cfg, dtype=torch.float64)
    randomize_parameters(model, gen)
    x = torch.randn(batch, cfg["in_chans"], cfg["img_size"], cfg["img_size"], generator=gen,
                    dtype=torch.float64).float().double()
    target = make_targets(gen, batch, cfg["num_classes"], soft).float().double()
    ls = float(ls)

    model.zero_grad()
    feats = model.forward_features(x)
    logits = model.forward_head(feats)
    loss = kat_loss(logits, target, ls)
    loss.backward()

    out = {"input": x, "target": target, "logits": logits.detach(), "features": feats.detach(),
           "loss": loss.detach().reshape(1)}
    for name, p in model.named_parameters():
        out["param." + name] = p.detach()
        if p.grad is None:
            raise RuntimeError(f"parameter {name} got no gradient")
        out["grad." + name] = p.grad.detach()
    assert feats.shape == (batch, num_tokens(cfg), cfg["embed_dim"])
    return out, cfg, loss.item()


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", required=True, help="built-in config name or path to a config JSON")
    ap.add_argument("--batch", type=int, required=True)
    ap.add_argument("--seed", type=int, required=True)
    ap.add_argument("--label-smoothing", default="0.0",
                    help="decimal string, stored verbatim in the metadata")
    ap.add_argument("--soft-targets", action="store_true", help="mixup-like two-class soft targets")
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    ls_str = args.label_smoothing
    ls = float(ls_str)
    if not 0.0 <= ls < 1.0:
        sys.exit("--label-smoothing must be in [0, 1)")
    cfg = load_config(args.config)
    tensors, cfg, loss = export(cfg, args.batch, args.seed, ls, args.soft_targets)
    save_file(tensors, args.out, metadata={"config": config_json(cfg), "label_smoothing": ls_str},
              dtype="F32")
    print(f"{args.out}: {cfg['name']} batch {args.batch} seed {args.seed} ls {ls_str} "
          f"soft {args.soft_targets}: loss {loss:.10f}, {len(tensors)} tensors, "
          f"{os.path.getsize(args.out)} bytes")


if __name__ == "__main__":
    main()
