#!/usr/bin/env python3
"""KAT-T inside PyTorch on one GPU: a timm-structured KAT-T (timm's VisionTransformer with KAT's
FFN, fc2(act2(fc1(act1(x)))), act1 identity / act2 swish, 5,718,328 parameters) with its GR-KAN
  (a) as plain PyTorch ops (fp32 math, as the public module computes under autocast), eager and
      torch.compile,
  (b) as kat.torch.GRKAN (our CPU/CUDA kernels through torch.library), eager and torch.compile,
next to timm's deit_tiny_patch16_224 eager and torch.compile. Same protocol as
bench/torch_gpu_bench.py (its time_it: CUDA events per iteration after warm-up, median;
synthetic 224^2 data, drop_path_rate 0.1, bf16 autocast, fused AdamW):
  train step = zero_grad + forward + soft-target cross-entropy (label smoothing 0.1) + backward
               + AdamW step;   inference = forward under torch.inference_mode.
Prints a markdown table (img/s, peak MiB, ratio to DeiT-T in the same mode) on stdout.

usage: python3 bench/torch_grkan_train.py [--batch 256] [--iters 20] [--no-compile]
"""
import argparse
import os
import sys

import torch
from torch import nn

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from torch_gpu_bench import bench_model  # noqa: E402  (one timing protocol for every PyTorch bench)

from kat.torch import GRKAN, init_coefficients  # noqa: E402


class TorchRational(nn.Module):
    """GR-KAN in plain PyTorch ops (docs/MODEL.md §1, KAT_Group's parameters): fp32 math whatever
    the input dtype, Horner for P, shared numerator, contiguous channel groups; autograd for the
    backward."""

    def __init__(self, num_groups=8, mode="identity"):
        super().__init__()
        a, b = init_coefficients(mode)
        self.num_groups = num_groups
        self.weight_numerator = nn.Parameter(torch.tensor([a], dtype=torch.float32))
        self.weight_denominator = nn.Parameter(torch.tensor([b] * num_groups, dtype=torch.float32))

    def forward(self, x):
        shape, G = x.shape, self.num_groups
        xf = x.float().reshape(*shape[:-1], G, shape[-1] // G)
        a, b = self.weight_numerator.float(), self.weight_denominator.float().abs()
        P = a[0, 5]
        for k in range(4, -1, -1):
            P = P * xf + a[0, k]
        ax = xf.abs()
        Q = b[:, 3, None]
        for k in range(2, -1, -1):
            Q = Q * ax + b[:, k, None]
        return (P / (1 + Q * ax)).reshape(shape).to(x.dtype)


def kat_mlp(rational):
    """timm's mlp_layer hook: KAT's FFN with the given rational class."""

    class KATMlp(nn.Module):
        def __init__(self, in_features, hidden_features=None, out_features=None, bias=True, **_):
            super().__init__()
            hidden, out = hidden_features or in_features, out_features or in_features
            self.act1 = rational(8, "identity")
            self.fc1 = nn.Linear(in_features, hidden, bias=bias)
            self.act2 = rational(8, "swish")
            self.fc2 = nn.Linear(hidden, out, bias=bias)

        def forward(self, x):
            return self.fc2(self.act2(self.fc1(self.act1(x))))

    return KATMlp


def make_model(kind):
    import timm
    from timm.models.vision_transformer import VisionTransformer
    if kind == "deit":
        return timm.create_model("deit_tiny_patch16_224", drop_path_rate=0.1)
    rational = TorchRational if kind == "kat_torch" else GRKAN
    return VisionTransformer(img_size=224, patch_size=16, embed_dim=192, depth=12, num_heads=3, mlp_ratio=4,
                             num_classes=1000, drop_path_rate=0.1, mlp_layer=kat_mlp(rational))


def bench(kind, batch, iters, compile_):
    return bench_model(lambda: make_model(kind), batch, iters, compile_)


def same_function_check():
    """The two KAT-T variants compute the same function (same init): relative difference of the
    logits in fp32 (our kernel vs plain ops: a few ulp per rational, ~1e-6 after 12 blocks)."""
    torch.manual_seed(0)
    a = make_model("kat_torch").cuda().eval()
    b = make_model("kat_ours").cuda().eval()
    b.load_state_dict(a.state_dict())
    x = torch.randn(8, 3, 224, 224, device="cuda")
    with torch.no_grad():
        ya, yb = a(x), b(x)
    return ((ya - yb).norm() / ya.norm()).item()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--iters", type=int, default=20)
    ap.add_argument("--no-compile", action="store_true")
    a = ap.parse_args()
    modes = [("eager", False)] + ([] if a.no_compile else [("compile", True)])
    rows = {}
    print(f"torch {torch.__version__}, {torch.cuda.get_device_name(0)}, batch {a.batch}, bf16 autocast, fused AdamW, "
          f"drop_path 0.1; KAT-T logits, our op vs plain ops (fp32, 8 images): rel diff {same_function_check():.2e}")
    print()
    for kind in ("deit", "kat_torch", "kat_ours"):
        for mname, comp in modes:
            try:
                params, (tr, trm), (inf, infm) = bench(kind, a.batch, a.iters, comp)
            except Exception as e:  # keep the other rows (e.g. compile failing on a bare machine)
                print(f"  {kind} {mname}: failed: {type(e).__name__}: {e}", file=sys.stderr)
                continue
            rows[(kind, mname)] = (params, a.batch / (tr * 1e-3), trm, a.batch / (inf * 1e-3), infm)
            print(f"  {kind:9s} {mname:7s} train {tr:8.2f} ms  infer {inf:8.2f} ms", file=sys.stderr, flush=True)
    names = {"deit": "timm DeiT-T (GELU MLP)", "kat_torch": "KAT-T, GR-KAN as plain PyTorch ops",
             "kat_ours": "KAT-T, kat.torch.GRKAN (our kernels)"}
    print("| model | params | mode | train img/s | train MiB | train vs DeiT-T | infer img/s | infer MiB | "
          "infer vs DeiT-T |")
    print("|---|---|---|---|---|---|---|---|---|")
    for (kind, mname), (params, trs, trm, ins, inm) in rows.items():
        base = rows.get(("deit", mname))
        rt = f"{trs / base[1]:.3f}" if base else "-"
        ri = f"{ins / base[3]:.3f}" if base else "-"
        print(f"| {names[kind]} | {params:,} | {mname} | {trs:.0f} | {trm:.0f} | {rt} | {ins:.0f} | {inm:.0f} | {ri} |")


if __name__ == "__main__":
    main()
