"""Independent PyTorch reference of KAT (Kolmogorov-Arnold Transformer) and its DeiT twin,
written from docs/MODEL.md with plain autograd-able torch ops.

Module attribute names reproduce timm's state_dict names exactly (docs/MODEL.md §2), e.g.
blocks.{i}.mlp.act1.weight_numerator. Every model is meant to run in float64 (see README.md).

Note on |.| at zero: docs/MODEL.md takes sign(0) = +1 in the gradients (for sign(x) and sign(b_k)), while
torch.abs has gradient 0 at exactly 0. The two therefore differ only when an input element or a
denominator coefficient is exactly 0. The golden data never contains exact zeros there (random
inputs, and N(0, 0.05) noise on every rational coefficient, including the identity init's all-zero
denominator), so autograd here equals docs/MODEL.md's closed-form gradients on all golden files.
"""
import math

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

# ----------------------------------------------------------------------------------------------
# Initial rational coefficients (docs/MODEL.md §1)

SWISH_A = [3.054879741161051e-07, 0.5000007853744493, 0.24999783422824703, 0.05326628273219478,
           0.005803034571292244, 0.0002751961022402342]
SWISH_B = [-4.111554955950634e-06, 0.10652899335007572, -1.2690007399796238e-06,
           0.0005502331264140556]
IDENTITY_A = [0.0, 1.0, 0.0, 0.0, 0.0, 0.0]
IDENTITY_B = [0.0, 0.0, 0.0, 0.0]


def rational_eval_np(a, b, x):
    """A-form F(x) = P/Q for numpy arrays (one group)."""
    P = sum(a[k] * x ** k for k in range(len(a)))
    Q = 1.0 + sum(abs(b[k]) * np.abs(x) ** (k + 1) for k in range(len(b)))
    return P / Q


def fit_rational(f, lo=-3.0, hi=3.0, m=5, n=4, npts=1201, iters=200):
    """A-form least-squares fit of f on [lo, hi]: linearised fit of P - f*Q, then Levenberg-
    Marquardt on the true residual P/Q - f. Returns (a, b, max_abs_err). Only used for the
    'gelu' init mode (docs/MODEL.md says the public gelu table is B-form and must be refitted)."""
    xs = np.linspace(lo, hi, npts)
    fx = f(xs)
    ax = np.abs(xs)
    J = np.concatenate([np.stack([xs ** k for k in range(m + 1)], 1),
                        np.stack([-fx * ax ** k for k in range(1, n + 1)], 1)], 1)
    p = np.linalg.lstsq(J, fx, rcond=None)[0]
    a, b = p[:m + 1].copy(), np.abs(p[m + 1:])

    def sq(a, b):
        return float(np.sum((rational_eval_np(a, b, xs) - fx) ** 2))

    lam, cur = 1e-3, sq(a, b)
    for _ in range(iters):
        P = sum(a[k] * xs ** k for k in range(m + 1))
        Q = 1.0 + sum(abs(b[k]) * ax ** (k + 1) for k in range(n))
        Jn = np.stack([xs ** k / Q for k in range(m + 1)], 1)
        Jd = np.stack([-P / Q ** 2 * (1.0 if b[k] >= 0 else -1.0) * ax ** (k + 1) for k in range(n)], 1)
        Jt = np.concatenate([Jn, Jd], 1)
        r = fx - P / Q
        A = Jt.T @ Jt
        A += lam * (np.eye(A.shape[0]) + np.diag(np.diag(A)))
        d = np.linalg.solve(A, Jt.T @ r)
        a2, b2 = a + d[:m + 1], b + d[m + 1:]
        e2 = sq(a2, b2)
        if e2 < cur:
            rel = (cur - e2) / (cur + 1e-300)
            a, b, cur = a2, b2, e2
            lam = max(lam * 0.3, 1e-12)
            if rel < 1e-12:
                break
        else:
            lam *= 10
            if lam > 1e8:
                break
    return a, b, float(np.max(np.abs(rational_eval_np(a, b, xs) - fx)))


_GELU_FIT = None


def init_coefficients(mode: str):
    """(a[6], b[4]) as python lists of float for mode identity | swish | gelu."""
    global _GELU_FIT
    if mode == "identity":
        return list(IDENTITY_A), list(IDENTITY_B)
    if mode == "swish":
        return list(SWISH_A), list(SWISH_B)
    if mode == "gelu":
        if _GELU_FIT is None:
            from math import erf
            gelu = np.vectorize(lambda v: 0.5 * v * (1.0 + erf(v / math.sqrt(2.0))))
            a, b, _ = fit_rational(gelu)
            _GELU_FIT = (list(map(float, a)), list(map(float, b)))
        return list(_GELU_FIT[0]), list(_GELU_FIT[1])
    raise ValueError(f"unknown rational init '{mode}' (expected identity, swish or gelu)")


# ----------------------------------------------------------------------------------------------
# GR-KAN group-rational activation


class GroupRational(nn.Module):
    """F(x) = P(x) / Q(x) applied channel-wise on the last dim, D channels in G contiguous groups.

    A-form (docs/MODEL.md, what all public kernels compute):
        P(x) = sum_k a_k x^k (k = 0..m),  Q(x) = 1 + sum_k |b_k| |x|^k (k = 1..n)
    B-form (paper, optional): Q(x) = 1 + |sum_k b_k x^k|.
    weight_numerator: (1, m+1) shared by all groups, or (G, m+1) per group.
    weight_denominator: (G, n); row g, column k-1 multiplies |x|^k.
    """

    def __init__(self, dim, groups=8, shared_numerator=True, init="identity", m=5, n=4,
                 form="A", dtype=torch.float64):
        super().__init__()
        if groups <= 0 or dim % groups != 0:
            raise ValueError(f"GroupRational: dim {dim} is not divisible by groups {groups}")
        if form not in ("A", "B"):
            raise ValueError(f"GroupRational: form must be 'A' or 'B', got {form!r}")
        self.dim, self.groups, self.m, self.n, self.form = dim, groups, m, n, form
        a0, b0 = init_coefficients(init) if (m, n) == (5, 4) else ([0.0, 1.0] + [0.0] * (m - 1), [0.0] * n)
        rows = 1 if shared_numerator else groups
        self.weight_numerator = nn.Parameter(torch.tensor([a0] * rows, dtype=dtype))
        self.weight_denominator = nn.Parameter(torch.tensor([b0] * groups, dtype=dtype))

    def forward(self, x):
        if x.shape[-1] != self.dim:
            raise ValueError(f"GroupRational: expected last dim {self.dim}, got {x.shape[-1]}")
        G = self.groups
        xg = x.reshape(*x.shape[:-1], G, self.dim // G)          # (..., G, D/G)
        a = self.weight_numerator                                # (An, m+1)
        b = self.weight_denominator                              # (G, n)
        if a.shape[0] == 1:
            ak = [a[0, k] for k in range(self.m + 1)]            # scalars, broadcast to all groups
        elif a.shape[0] == G:
            ak = [a[:, k].unsqueeze(-1) for k in range(self.m + 1)]   # (G, 1)
        else:
            raise ValueError(f"GroupRational: numerator has {a.shape[0]} rows, expected 1 or {G}")
        # P by Horner: a_m, then P*x + a_k.
        P = ak[self.m] * torch.ones_like(xg)
        for k in range(self.m - 1, -1, -1):
            P = P * xg + ak[k]
        if self.form == "A":
            ax = torch.abs(xg)
            Q = torch.ones_like(xg)
            axp = ax
            for k in range(self.n):
                Q = Q + torch.abs(b[:, k]).unsqueeze(-1) * axp
                axp = axp * ax
        else:
            S = torch.zeros_like(xg)
            xp = xg
            for k in range(self.n):
                S = S + b[:, k].unsqueeze(-1) * xp
                xp = xp * xg
            Q = 1.0 + torch.abs(S)
        return (P / Q).reshape(x.shape)


def rational_grads_closed_form(x, g, a, b, groups):
    """docs/MODEL.md §1's closed-form gradients (A-form), sign(0) := +1. x, g: (..., D).
    a: (An, m+1), b: (G, n). Returns (dx, da, db)."""
    D = x.shape[-1]
    G = groups
    m, n = a.shape[1] - 1, b.shape[1]
    xg = x.reshape(-1, G, D // G)
    gg = g.reshape(-1, G, D // G)
    A = a.expand(G, -1) if a.shape[0] == 1 else a              # (G, m+1)
    col = lambda t, k: t[:, k].view(1, G, 1)
    sgn = lambda t: torch.where(t >= 0, torch.ones_like(t), -torch.ones_like(t))
    ax = xg.abs()
    P = sum(col(A, k) * xg ** k for k in range(m + 1))
    Q = 1.0 + sum(col(b.abs(), k) * ax ** (k + 1) for k in range(n))
    R = sum(k * col(A, k) * xg ** (k - 1) for k in range(1, m + 1))
    S = sgn(xg) * sum((k + 1) * col(b.abs(), k) * ax ** k for k in range(n))
    dx = gg * (R * Q - S * P) / Q ** 2
    da_g = torch.stack([(gg * xg ** k / Q).sum(dim=(0, 2)) for k in range(m + 1)], 1)   # (G, m+1)
    da = da_g.sum(0, keepdim=True) if a.shape[0] == 1 else da_g
    db = torch.stack([(gg * (-P / Q ** 2) * ax ** (k + 1)).sum(dim=(0, 2)) * sgn(b[:, k])
                      for k in range(n)], 1)
    return dx.reshape(x.shape), da, db


# ----------------------------------------------------------------------------------------------
# Transformer


class PatchEmbed(nn.Module):
    def __init__(self, img_size, patch_size, in_chans, dim, dtype):
        super().__init__()
        if img_size % patch_size != 0:
            raise ValueError(f"img_size {img_size} is not a multiple of patch_size {patch_size}")
        self.img_size, self.patch_size = img_size, patch_size
        self.proj = nn.Conv2d(in_chans, dim, kernel_size=patch_size, stride=patch_size, dtype=dtype)

    def forward(self, x):
        if x.shape[-1] != self.img_size or x.shape[-2] != self.img_size:
            raise ValueError(f"expected {self.img_size}x{self.img_size} images, got {tuple(x.shape)}")
        return self.proj(x).flatten(2).transpose(1, 2)          # (N, patches, D), row-major patches


class Attention(nn.Module):
    def __init__(self, dim, num_heads, dtype):
        super().__init__()
        if dim % num_heads != 0:
            raise ValueError(f"embed_dim {dim} is not divisible by num_heads {num_heads}")
        self.num_heads, self.head_dim = num_heads, dim // num_heads
        self.qkv = nn.Linear(dim, 3 * dim, bias=True, dtype=dtype)
        self.proj = nn.Linear(dim, dim, dtype=dtype)

    def forward(self, x):
        N, T, D = x.shape
        # qkv rows: [q; k; v], each split into heads of head_dim consecutive rows.
        qkv = self.qkv(x).reshape(N, T, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]                        # (N, H, T, hd)
        att = torch.softmax(q @ k.transpose(-2, -1) / math.sqrt(self.head_dim), dim=-1)
        y = (att @ v).transpose(1, 2).reshape(N, T, D)
        return self.proj(y)


class KATMlp(nn.Module):
    """KAT FFN: fc2(act2(fc1(act1(x)))), act1 width D, act2 width hidden."""

    def __init__(self, dim, hidden, groups, shared_numerator, act1_init, act2_init, dtype):
        super().__init__()
        self.act1 = GroupRational(dim, groups, shared_numerator, act1_init, dtype=dtype)
        self.fc1 = nn.Linear(dim, hidden, dtype=dtype)
        self.act2 = GroupRational(hidden, groups, shared_numerator, act2_init, dtype=dtype)
        self.fc2 = nn.Linear(hidden, dim, dtype=dtype)

    def forward(self, x):
        return self.fc2(self.act2(self.fc1(self.act1(x))))


class Mlp(nn.Module):
    """DeiT/ViT FFN: fc2(GELU_erf(fc1(x)))."""

    def __init__(self, dim, hidden, dtype):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden, dtype=dtype)
        self.fc2 = nn.Linear(hidden, dim, dtype=dtype)

    def forward(self, x):
        return self.fc2(F.gelu(self.fc1(x)))                    # exact erf GELU (approximate='none')


class Block(nn.Module):
    def __init__(self, cfg, dtype):
        super().__init__()
        D = cfg["embed_dim"]
        self.norm1 = nn.LayerNorm(D, eps=1e-6, dtype=dtype)
        self.attn = Attention(D, cfg["num_heads"], dtype)
        self.norm2 = nn.LayerNorm(D, eps=1e-6, dtype=dtype)
        if cfg["ffn"] == "kat":
            self.mlp = KATMlp(D, cfg["mlp_hidden"], cfg["groups"], cfg["shared_numerator"],
                              cfg.get("act1_init", "identity"), cfg.get("act2_init", "swish"), dtype)
        elif cfg["ffn"] == "mlp":
            self.mlp = Mlp(D, cfg["mlp_hidden"], dtype)
        else:
            raise ValueError(f"unknown ffn '{cfg['ffn']}' (expected kat or mlp)")

    def forward(self, x):
        # Drop-path is not modelled: the reference is the eval-style (drop-path off) forward.
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class KAT(nn.Module):
    """KAT (ffn 'kat') or DeiT (ffn 'mlp') from a FORMATS.md config dict."""

    def __init__(self, cfg: dict, dtype=torch.float64):
        super().__init__()
        self.cfg = dict(cfg)
        D = cfg["embed_dim"]
        self.num_tokens = 1 + (cfg["img_size"] // cfg["patch_size"]) ** 2
        self.cls_token = nn.Parameter(torch.zeros(1, 1, D, dtype=dtype))
        self.pos_embed = nn.Parameter(torch.zeros(1, self.num_tokens, D, dtype=dtype))
        self.patch_embed = PatchEmbed(cfg["img_size"], cfg["patch_size"], cfg.get("in_chans", 3), D, dtype)
        self.blocks = nn.ModuleList([Block(cfg, dtype) for _ in range(cfg["depth"])])
        self.norm = nn.LayerNorm(D, eps=1e-6, dtype=dtype)
        self.head = nn.Linear(D, cfg["num_classes"], dtype=dtype)

    def forward_features(self, x):
        x = self.patch_embed(x)
        x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1) + self.pos_embed
        for blk in self.blocks:
            x = blk(x)
        return self.norm(x)                                     # (N, tokens, D)

    def forward_head(self, feats):
        return self.head(feats[:, 0])

    def forward(self, x):
        return self.forward_head(self.forward_features(x))


def kat_loss(logits, target, label_smoothing: float):
    """mean_n -sum_k t_nk log_softmax(logits_n)_k, t = (1 - ls) * target + ls / classes."""
    C = logits.shape[-1]
    t = (1.0 - label_smoothing) * target + label_smoothing / C
    return -(t * F.log_softmax(logits, dim=-1)).sum(-1).mean()


# ----------------------------------------------------------------------------------------------
# Random parameters for goldens / test weights


def expected_param_count(cfg: dict) -> int:
    D, H, C = cfg["embed_dim"], cfg["mlp_hidden"], cfg["num_classes"]
    p, ch, G = cfg["patch_size"], cfg.get("in_chans", 3), cfg["groups"]
    T = 1 + (cfg["img_size"] // p) ** 2
    act = (6 if cfg["shared_numerator"] else 6 * G) + 4 * G
    blk = 2 * D + (3 * D * D + 3 * D) + (D * D + D) + 2 * D + (H * D + H) + (D * H + D)
    if cfg["ffn"] == "kat":
        blk += 2 * act
    return D + T * D + (D * ch * p * p + D) + cfg["depth"] * blk + 2 * D + (C * D + C)


@torch.no_grad()
def randomize_parameters(model: KAT, gen: torch.Generator, coef_noise=0.05):
    """Golden-style random parameters, drawn in named_parameters() order from `gen`, then rounded
    to float32 (the stored values) and kept in the model's dtype.
      Linear / Conv weights: N(0, 1/fan_in) (std 1/sqrt(fan_in));  biases: N(0, 0.1^2)
      LayerNorm: weight 1 + N(0, 0.1^2), bias N(0, 0.1^2);  cls_token, pos_embed: N(0, 0.1^2)
      rationals: their init coefficients + N(0, coef_noise^2) on every coefficient."""
    kinds = {}
    for mname, mod in model.named_modules():
        pre = mname + "." if mname else ""
        if isinstance(mod, (nn.Linear, nn.Conv2d)):
            kinds[pre + "weight"] = "fanin"
            kinds[pre + "bias"] = "bias"
        elif isinstance(mod, nn.LayerNorm):
            kinds[pre + "weight"] = "ln_w"
            kinds[pre + "bias"] = "bias"
        elif isinstance(mod, GroupRational):
            kinds[pre + "weight_numerator"] = "coef"
            kinds[pre + "weight_denominator"] = "coef"
    kinds["cls_token"] = kinds["pos_embed"] = "embed"
    for name, p in model.named_parameters():
        noise = torch.randn(p.shape, generator=gen, dtype=torch.float64)
        kind = kinds[name]
        if kind == "fanin":
            v = noise / math.sqrt(p[0].numel())
        elif kind == "ln_w":
            v = 1.0 + 0.1 * noise
        elif kind in ("bias", "embed"):
            v = 0.1 * noise
        else:  # rational coefficients: keep the init (already in p) and add noise
            v = p.detach().double() + coef_noise * noise
        p.copy_(v.float().to(p.dtype))


def load_weights(model: KAT, tensors: dict, prefix: str = ""):
    """Copy {prefix + timm name: tensor} into the model. Missing, unexpected or mis-shaped names
    raise ValueError listing them."""
    sd = model.state_dict()
    got = {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}
    missing = sorted(set(sd) - set(got))
    extra = sorted(set(got) - set(sd))
    bad = sorted(k for k in set(sd) & set(got) if tuple(sd[k].shape) != tuple(got[k].shape))
    if missing or extra or bad:
        raise ValueError(f"weights do not match the model: missing {missing[:10]}, "
                         f"unexpected {extra[:10]}, wrong shape "
                         f"{[(k, tuple(got[k].shape), tuple(sd[k].shape)) for k in bad[:10]]}")
    with torch.no_grad():
        for k, p in model.named_parameters():
            p.copy_(got[k].to(p.dtype))
