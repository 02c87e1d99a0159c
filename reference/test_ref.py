#!/usr/bin/python3
"""Self-checks of the PyTorch reference. Run: /usr/bin/python3 reference/test_ref.py

1. state_dict names/shapes equal docs/MODEL.md §2's timm names for the six full-size models; parameter
   counts equal docs/MODEL.md's table (kat 5,718,328 / 22,051,576 / 86,568,568; deit 912 fewer).
2. GroupRational: autograd gradients == docs/MODEL.md §1 closed-form gradients (float64, random data,
   shared and per-group numerators); D % G != 0 raises ValueError; init tables.
3. Attention == torch's multi_head_attention_forward; loss == F.cross_entropy(label_smoothing).
4. Whole-model backward == central finite differences along random directions (float64).
5. safetensors writer/reader round trip and byte layout.
6. Every golden file in tests/golden/ is self-consistent: recomputing from its stored F32 params
   and input gives its logits / features / loss / grads to float32 rounding, layout is valid.
"""
import glob
import json
import math
import os
import struct
import sys
import tempfile

import torch
import torch.nn.functional as F

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from configs import CONFIGS, load_config  # noqa: E402
from kat_ref import (KAT, GroupRational, expected_param_count, init_coefficients, kat_loss,  # noqa: E402
                     randomize_parameters, rational_eval_np, rational_grads_closed_form, load_weights)
from safetensors_io import load_file, save_file  # noqa: E402

FAILS = []


def check(cond, msg):
    print(("ok   " if cond else "FAIL ") + msg)
    if not cond:
        FAILS.append(msg)


def spec_names(cfg):
    """docs/MODEL.md §2's timm names and shapes, written out independently of kat_ref."""
    D, T, C = cfg["embed_dim"], 1 + (cfg["img_size"] // cfg["patch_size"]) ** 2, cfg["num_classes"]
    p, ch, H, G = cfg["patch_size"], cfg["in_chans"], cfg["mlp_hidden"], cfg["groups"]
    an = 1 if cfg["shared_numerator"] else G
    s = {"cls_token": (1, 1, D), "pos_embed": (1, T, D), "patch_embed.proj.weight": (D, ch, p, p),
         "patch_embed.proj.bias": (D,), "norm.weight": (D,), "norm.bias": (D,),
         "head.weight": (C, D), "head.bias": (C,)}
    for i in range(cfg["depth"]):
        b = f"blocks.{i}."
        s.update({b + "norm1.weight": (D,), b + "norm1.bias": (D,),
                  b + "attn.qkv.weight": (3 * D, D), b + "attn.qkv.bias": (3 * D,),
                  b + "attn.proj.weight": (D, D), b + "attn.proj.bias": (D,),
                  b + "norm2.weight": (D,), b + "norm2.bias": (D,),
                  b + "mlp.fc1.weight": (H, D), b + "mlp.fc1.bias": (H,),
                  b + "mlp.fc2.weight": (D, H), b + "mlp.fc2.bias": (D,)})
        if cfg["ffn"] == "kat":
            s.update({b + "mlp.act1.weight_numerator": (an, 6), b + "mlp.act1.weight_denominator": (G, 4),
                      b + "mlp.act2.weight_numerator": (an, 6), b + "mlp.act2.weight_denominator": (G, 4)})
    return s


def test_names_and_counts():
    want = {"kat_tiny_patch16_224": 5_718_328, "kat_small_patch16_224": 22_051_576,
            "kat_base_patch16_224": 86_568_568}
    for k in list(want):
        want[k.replace("kat_", "deit_")] = want[k] - 912
    for name, count in want.items():
        cfg = load_config(name)
        model = KAT(cfg, dtype=torch.float32)
        sd = model.state_dict()
        got = {k: tuple(v.shape) for k, v in sd.items()}
        check(got == spec_names(cfg), f"{name}: state_dict names/shapes == docs/MODEL.md §2")
        n = sum(p.numel() for p in model.parameters())
        check(n == count and expected_param_count(cfg) == count, f"{name}: {n:,} params == {count:,}")
        check(len(list(model.parameters())) == len(sd), f"{name}: no buffers in state_dict")
    for name in ("golden_kat_small", "golden_kat_pergroup", "golden_deit_small"):
        cfg = load_config(name)
        model = KAT(cfg)
        got = {k: tuple(v.shape) for k, v in model.state_dict().items()}
        check(got == spec_names(cfg) and sum(p.numel() for p in model.parameters())
              == expected_param_count(cfg), f"{name}: names/shapes/count")


def test_rational():
    g = torch.Generator().manual_seed(0)
    for shared, D, G, lead in ((True, 16, 8, (3, 5)), (False, 16, 4, (7,)), (True, 64, 8, (2, 3, 4)),
                               (False, 12, 3, (11,)), (True, 8, 1, (5,))):
        act = GroupRational(D, G, shared, init="swish")
        with torch.no_grad():
            for p in act.parameters():
                p.add_(0.3 * torch.randn(p.shape, generator=g, dtype=torch.float64))  # mixed signs
        x = (2.0 * torch.randn(*lead, D, generator=g, dtype=torch.float64)).requires_grad_()
        y = act(x)
        up = torch.randn(y.shape, generator=g, dtype=torch.float64)
        y.backward(up)
        dx, da, db = rational_grads_closed_form(x.detach(), up, act.weight_numerator.detach(),
                                                act.weight_denominator.detach(), G)
        # forward vs a direct per-element evaluation
        a, b = act.weight_numerator.detach(), act.weight_denominator.detach()
        xs = x.detach().reshape(-1, G, D // G)
        ref = torch.empty_like(xs)
        for gi in range(G):
            ai = a[0] if a.shape[0] == 1 else a[gi]
            ref[:, gi] = torch.from_numpy(rational_eval_np(ai.numpy(), b[gi].numpy(), xs[:, gi].numpy()))
        tag = f"rational D={D} G={G} shared={shared}"
        check(torch.allclose(y.detach().reshape(-1, G, D // G), ref, rtol=1e-12, atol=1e-12), tag + ": forward")
        check(torch.allclose(x.grad, dx, rtol=1e-10, atol=1e-12), tag + ": dx == closed form")
        check(torch.allclose(act.weight_numerator.grad, da, rtol=1e-10, atol=1e-10), tag + ": da == closed form")
        check(torch.allclose(act.weight_denominator.grad, db, rtol=1e-10, atol=1e-10), tag + ": db == closed form")
        check(torch.autograd.gradcheck(lambda t, aa, bb: _rat_fn(act, t, aa, bb),
                                       (x.detach()[..., :].clone().requires_grad_(),
                                        a.clone().requires_grad_(), b.clone().requires_grad_())),
              tag + ": gradcheck (finite differences)")
    for D, G in ((10, 4), (16, 3), (7, 2)):
        try:
            GroupRational(D, G)
            check(False, f"D={D} G={G} raises ValueError")
        except ValueError:
            check(True, f"D={D} G={G} raises ValueError")
    try:
        KAT(dict(load_config("golden_kat_small"), mlp_hidden=60))
        check(False, "mlp_hidden % groups != 0 raises ValueError")
    except ValueError:
        check(True, "mlp_hidden % groups != 0 raises ValueError")
    # init tables: identity is exact identity, swish ~ x*sigmoid(x) on [-3, 3]
    xs = torch.linspace(-3, 3, 601, dtype=torch.float64)
    ident = GroupRational(8, 8, True, "identity")
    check(torch.equal(ident(xs.unsqueeze(-1).expand(-1, 8)), xs.unsqueeze(-1).expand(-1, 8)), "identity init")
    sw = GroupRational(8, 8, True, "swish")(xs.unsqueeze(-1).expand(-1, 8))[:, 0]
    e = (sw - xs * torch.sigmoid(xs)).abs().max().item()
    check(e < 2e-2, f"swish init max err on [-3,3] = {e:.2e}")
    a, b = init_coefficients("gelu")
    ge = rational_eval_np(a, b, xs.numpy()) - F.gelu(xs).numpy()
    check(abs(ge).max() < 1e-2 and abs(rational_eval_np(a, b, 3.0) - 3.0 * 0.99865) < 1e-2,
          f"gelu fit (A-form) max err on [-3,3] = {abs(ge).max():.2e}")


def _rat_fn(act, x, a, b):
    m = GroupRational(act.dim, act.groups, a.shape[0] == 1)
    del m.weight_numerator, m.weight_denominator
    m.weight_numerator, m.weight_denominator = a, b
    return m(x)


def test_attention_and_loss():
    g = torch.Generator().manual_seed(1)
    cfg = load_config("golden_kat_small")
    model = KAT(cfg)
    randomize_parameters(model, g)
    attn = model.blocks[0].attn
    x = torch.randn(3, 5, 16, generator=g, dtype=torch.float64)
    ours = attn(x)
    D = 16
    ref, _ = F.multi_head_attention_forward(
        x.transpose(0, 1), x.transpose(0, 1), x.transpose(0, 1), D, attn.num_heads,
        attn.qkv.weight, attn.qkv.bias, None, None, False, 0.0, attn.proj.weight, attn.proj.bias,
        training=False, need_weights=False)
    check(torch.allclose(ours, ref.transpose(0, 1), rtol=1e-12, atol=1e-12), "attention == torch MHA")
    logits = torch.randn(4, 10, generator=g, dtype=torch.float64)
    tgt = torch.softmax(torch.randn(4, 10, generator=g, dtype=torch.float64), -1)
    for ls in (0.0, 0.1, 0.3):
        check(math.isclose(kat_loss(logits, tgt, ls).item(),
                           F.cross_entropy(logits, tgt, label_smoothing=ls).item(), rel_tol=1e-13),
              f"loss == F.cross_entropy(label_smoothing={ls})")


def test_model_fd():
    for name, seed in (("golden_kat_small", 5), ("golden_kat_pergroup", 6), ("golden_deit_small", 7)):
        cfg = load_config(name)
        g = torch.Generator().manual_seed(seed)
        model = KAT(cfg)
        randomize_parameters(model, g)
        x = torch.randn(2, cfg["in_chans"], cfg["img_size"], cfg["img_size"], generator=g, dtype=torch.float64)
        t = torch.zeros(2, cfg["num_classes"], dtype=torch.float64)
        t[0, 1] = t[1, 3] = 1.0
        model.zero_grad()
        kat_loss(model(x), t, 0.1).backward()
        params = list(model.parameters())
        grads = [p.grad.clone() for p in params]
        worst = 0.0
        for _ in range(3):
            v = [torch.randn(p.shape, generator=g, dtype=torch.float64) for p in params]
            eps = 1e-6
            with torch.no_grad():
                for p, d in zip(params, v):
                    p.add_(eps * d)
                lp = kat_loss(model(x), t, 0.1).item()
                for p, d in zip(params, v):
                    p.sub_(2 * eps * d)
                lm = kat_loss(model(x), t, 0.1).item()
                for p, d in zip(params, v):
                    p.add_(eps * d)
            fd = (lp - lm) / (2 * eps)
            an = sum((gr * d).sum().item() for gr, d in zip(grads, v))
            worst = max(worst, abs(fd - an) / max(1.0, abs(an)))
        check(worst < 1e-7, f"{name}: backward == finite differences (rel err {worst:.1e})")


def check_layout(path):
    """Verify the safetensors byte layout: alignment, sorted names, contiguous offsets."""
    with open(path, "rb") as f:
        raw = f.read()
    (h,) = struct.unpack("<Q", raw[:8])
    hdr = json.loads(raw[8:8 + h])
    hdr.pop("__metadata__", None)
    names = list(hdr)
    off = 0
    ok = (8 + h) % 8 == 0 and names == sorted(names)
    for n in names:
        b0, b1 = hdr[n]["data_offsets"]
        size = {"F32": 4, "F64": 8, "F16": 2, "BF16": 2}.get(hdr[n]["dtype"], 0) * math.prod(hdr[n]["shape"])
        ok = ok and b0 == off and b1 - b0 == size
        off = b1
    return ok and 8 + h + off == len(raw), hdr


def test_safetensors():
    g = torch.Generator().manual_seed(2)
    ts = {"b": torch.randn(3, 5, generator=g), "a": torch.randn(7, generator=g, dtype=torch.float64),
          "c.x": torch.randn(2, 1, 3, generator=g).to(torch.bfloat16), "d": torch.randn(1, generator=g)}
    with tempfile.TemporaryDirectory() as d:
        p = os.path.join(d, "t.safetensors")
        save_file(ts, p, metadata={"k": "v"})
        back, meta = load_file(p)
        ok = meta == {"k": "v"} and all(torch.equal(ts[k], back[k]) and ts[k].dtype == back[k].dtype for k in ts)
        check(ok and check_layout(p)[0], "safetensors round trip + layout")


def test_goldens():
    files = sorted(glob.glob(os.path.join(HERE, "..", "tests", "golden", "*.safetensors")))
    check(len(files) >= 3, f"{len(files)} golden files found")
    total = sum(os.path.getsize(f) for f in files)
    check(total < 2 * 1024 * 1024, f"golden files total {total} bytes < 2 MB")
    for path in files:
        base = os.path.basename(path)
        ok, hdr = check_layout(path)
        check(ok and all(v["dtype"] == "F32" for v in hdr.values()), f"{base}: layout, all F32")
        t, meta = load_file(path, as_dtype=torch.float64)
        cfg = json.loads(meta["config"])
        ls = float(meta["label_smoothing"])
        model = KAT(cfg)
        load_weights(model, t, prefix="param.")
        names = {k for k in t if k.startswith("grad.")}
        check(names == {"grad." + k for k in model.state_dict()}, f"{base}: grad.* names == param names")
        extra = set(t) - names - {"param." + k for k in model.state_dict()} - \
            {"input", "target", "logits", "features", "loss"}
        check(not extra, f"{base}: no unexpected tensors {sorted(extra)}")
        check(torch.allclose(t["target"].sum(-1), torch.ones(t["target"].shape[0], dtype=torch.float64),
                             rtol=0, atol=1e-7), f"{base}: target rows sum to 1")
        check(bool((t["input"] != 0).all()), f"{base}: no exact zeros in input")
        for k, v in t.items():
            if "weight_denominator" in k and k.startswith("param."):
                check(bool((v != 0).all()), f"{base}: {k} has no exact zeros")
        feats = model.forward_features(t["input"])
        logits = model.forward_head(feats)
        loss = kat_loss(logits, t["target"], ls)
        loss.backward()

        def close(a, b):  # stored values are float32 roundings of float64 results
            return torch.allclose(a, b.float().double(), rtol=1e-6, atol=1e-7)
        check(close(t["features"], feats.detach()) and close(t["logits"], logits.detach()) and
              close(t["loss"], loss.detach().reshape(1)), f"{base}: features/logits/loss reproduce")
        bad = [k for k, p in model.named_parameters() if not close(t["grad." + k], p.grad)]
        check(not bad, f"{base}: all {len(names)} grads reproduce {bad[:3]}")
        print(f"     {base}: loss {loss.item():.8f}, tokens {feats.shape[1]}, config {cfg['name']}")


if __name__ == "__main__":
    torch.set_num_threads(max(1, os.cpu_count() or 1))
    test_names_and_counts()
    test_rational()
    test_attention_and_loss()
    test_model_fd()
    test_safetensors()
    test_goldens()
    print(f"\n{'ALL OK' if not FAILS else f'{len(FAILS)} FAILED'}")
    sys.exit(1 if FAILS else 0)
