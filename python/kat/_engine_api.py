"""kat.models / kat.load / kat.train: the engine through kat._engine (see src/python/engine_module.cpp)."""
import json
import os
from typing import Optional, Sequence

import numpy as np

from . import _engine

__all__ = ["models", "load", "train", "Model"]


def models() -> list:
    """Names of the built-in model configs (configs/*.json), e.g. 'kat_tiny_patch16_224'."""
    return list(_engine.models())


class Model:
    """A model loaded by kat.load. predict(x) runs the engine's forward on the CPU, or on the GPU
    given to kat.load(device=...) (bf16 compute, as `kat infer --device cuda`, unless
    kat.load(precision=...) says otherwise)."""

    def __init__(self, impl):
        self._impl = impl
        self.config = json.loads(impl.config_json)
        self.class_names = list(impl.class_names)

    def predict(self, x, batch: int = 64, features: bool = True):
        """x: (N, C, H, W) float images, normalised as the weights expect (numpy array or torch
        tensor, CPU or CUDA). Returns logits (N, classes), and features (N, tokens, D) (the tokens
        after the final norm, as timm's forward_features) when `features`; numpy in -> numpy out,
        torch in -> torch out on the input's device. float32 C-contiguous host input is read in
        place (DLPack); anything else is converted once; a CUDA tensor is copied to the host (the
        engine reads host images, also for its GPU path, which uploads them)."""
        torch_device = None
        if type(x).__module__.startswith("torch"):
            import torch
            torch_device = x.device
            x = x.detach().to(device="cpu", dtype=torch.float32).contiguous()
        else:
            x = np.ascontiguousarray(x, dtype=np.float32)
        if x.ndim != 4:
            raise ValueError(f"predict: expected (N, C, H, W) images, got shape {tuple(x.shape)}")
        logits, feats = self._impl.predict(x, int(batch))
        if torch_device is not None:
            import torch
            logits, feats = torch.from_numpy(logits).to(torch_device), torch.from_numpy(feats).to(torch_device)
        return (logits, feats) if features else logits


def load(weights: str, model: Optional[str] = None, *, overrides: Sequence[str] = (), ema: bool = False,
         device: str = "cpu", precision: str = "auto") -> Model:
    """Loads a training checkpoint (its config comes along) or a plain timm-named safetensors file;
    `model` (a built-in name or a config JSON path) for a plain file, else inferred from the tensor
    names and shapes (num_classes, in_chans, img_size, patch size from the tensors). `overrides`:
    "key=value" config overrides; `ema`: a checkpoint's EMA weights; `device`: "cpu", "cuda" or
    "cuda:N" (a CUDA build of the engine) for predict; `precision`: as `kat eval --precision`:
    "auto" (fp32 on the CPU, bf16 on a GPU), "fp32", "bf16" (GPU only) or "fp8" (the blocks'
    linear layers in FP8: tensor cores of compute capability 8.9+, or the CPU's exact emulation)."""
    return Model(_engine.load(os.fspath(weights), model or "", list(overrides), bool(ema), str(device),
                              str(precision)))


# `kat train` flags whose TrainConfig field has another name (the rest: flag with '-' -> '_').
_CLI_ALIASES = {"set": "model_overrides", "out": "out_dir", "accum": "accum_steps", "wd": "weight_decay",
                "ema": "ema_decay", "smoothing": "label_smoothing", "reprob": "random_erase"}
_NEGATED = {"no_progress": "progress", "no_decay_rational": "decay_rational"}


def train(resume: Optional[str] = None, **options) -> dict:
    """Runs `kat train` in this process: options are the CLI's flags as keyword arguments
    (kat.train(epochs=2, batch=64, model="kat_micro_patch4_28", out="runs/x", device="cuda:0",
    set=["drop_path_rate=0.1"])) or TrainConfig's field names (include/kat/train/train_config.h);
    resume=DIR continues a run. Returns the final metrics and 'run_dir' (also 'train_seconds' and
    'data_wait_seconds': how long the training waited for its loader)."""
    fields = json.loads(_engine.train_config_defaults())
    cfg = {}
    for key, value in options.items():
        k = key.replace("-", "_")
        if k in _NEGATED:
            k, value = _NEGATED[k], not value
        k = _CLI_ALIASES.get(k, k)
        if k not in fields:
            raise ValueError(f"kat.train: unknown option '{key}' (known: {', '.join(sorted(fields))})")
        if isinstance(fields[k], list) and isinstance(value, (str, int, float)):
            value = [value]
        cfg[k] = value
    result = dict(_engine.train(json.dumps(cfg), os.fspath(resume) if resume else ""))
    ckpt = result.get("last_checkpoint") or ""
    result["run_dir"] = os.path.dirname(ckpt) if ckpt else (resume or cfg.get("out_dir", ""))
    return result
