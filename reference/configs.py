"""Built-in model configs (fields as in docs/FORMATS.md) and a loader for config JSON files."""
import copy
import json
import os

_FULL = dict(img_size=224, patch_size=16, in_chans=3, num_classes=1000, depth=12, groups=8,
             shared_numerator=True, act1_init="identity", act2_init="swish", init="paper")

CONFIGS = {}
for _size, _d, _h, _dpr in (("tiny", 192, 3, 0.1), ("small", 384, 6, 0.1), ("base", 768, 12, 0.4)):
    for _fam, _ffn in (("kat", "kat"), ("deit", "mlp")):
        _name = f"{_fam}_{_size}_patch16_224"
        CONFIGS[_name] = dict(name=_name, **_FULL, embed_dim=_d, num_heads=_h, mlp_hidden=4 * _d,
                              ffn=_ffn, drop_path_rate=_dpr)

CONFIGS["golden_kat_small"] = dict(
    name="golden_kat_small", img_size=8, patch_size=4, in_chans=3, num_classes=10, embed_dim=16,
    depth=2, num_heads=2, mlp_hidden=64, ffn="kat", groups=8, shared_numerator=True,
    act1_init="identity", act2_init="swish", drop_path_rate=0.0, init="paper")
CONFIGS["golden_kat_pergroup"] = dict(
    CONFIGS["golden_kat_small"], name="golden_kat_pergroup", in_chans=1, img_size=12, patch_size=4,
    shared_numerator=False, depth=1, groups=4)
CONFIGS["golden_deit_small"] = dict(CONFIGS["golden_kat_small"], name="golden_deit_small", ffn="mlp")

DEFAULTS = dict(in_chans=3, ffn="kat", groups=8, shared_numerator=True, act1_init="identity",
                act2_init="swish", drop_path_rate=0.0, init="paper")
REQUIRED = ("img_size", "patch_size", "num_classes", "embed_dim", "depth", "num_heads", "mlp_hidden")


def _strip_comments(text: str) -> str:
    """Drop // line comments outside strings (FORMATS.md's example config carries them)."""
    out, i, in_str = [], 0, False
    while i < len(text):
        c = text[i]
        if in_str:
            out.append(c)
            if c == "\\":
                out.append(text[i + 1:i + 2])
                i += 1
            elif c == '"':
                in_str = False
        elif c == '"':
            in_str = True
            out.append(c)
        elif text.startswith("//", i):
            while i < len(text) and text[i] != "\n":
                i += 1
            continue
        else:
            out.append(c)
        i += 1
    return "".join(out)


def load_config(name_or_path: str) -> dict:
    """A built-in name, or a path to a JSON file (FORMATS.md). Missing optional fields get defaults."""
    if name_or_path in CONFIGS:
        cfg = copy.deepcopy(CONFIGS[name_or_path])
    elif os.path.isfile(name_or_path):
        with open(name_or_path) as f:
            cfg = json.loads(_strip_comments(f.read()))
    else:
        raise ValueError(f"unknown config '{name_or_path}' (not a built-in name nor a file); "
                         f"built-ins: {', '.join(sorted(CONFIGS))}")
    for k in REQUIRED:
        if k not in cfg:
            raise ValueError(f"config '{name_or_path}' lacks required field '{k}'")
    for k, v in DEFAULTS.items():
        cfg.setdefault(k, v)
    cfg.setdefault("name", os.path.splitext(os.path.basename(name_or_path))[0])
    return cfg


def num_tokens(cfg: dict) -> int:
    return 1 + (cfg["img_size"] // cfg["patch_size"]) ** 2


FIELD_ORDER = ("name", "img_size", "patch_size", "in_chans", "num_classes", "embed_dim", "depth",
               "num_heads", "mlp_hidden", "ffn", "groups", "shared_numerator", "act1_init",
               "act2_init", "drop_path_rate", "init")


def config_json(cfg: dict) -> str:
    """The config as a JSON string, fields in FORMATS.md order (unknown extra fields last)."""
    ordered = {k: cfg[k] for k in FIELD_ORDER if k in cfg}
    ordered.update({k: v for k, v in cfg.items() if k not in ordered})
    return json.dumps(ordered)
