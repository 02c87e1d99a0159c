"""Golden file for the image resampling of timm's evaluation transform (src/data/image_io.cpp:
resize_bicubic_pil, eval_resize_center_crop).

timm evaluates at img_size with torchvision's Compose([Resize(floor(img_size / crop_pct),
interpolation=BICUBIC), CenterCrop(img_size), ...]) on PIL images (docs/MODEL.md §4: 224 / 0.875,
bicubic). This script builds a few deterministic 8-bit images (RGB and gray, landscape, portrait,
odd sizes), runs PIL's Image.resize(BICUBIC) on them (shrinking, enlarging, one axis only) and the
torchvision Resize + CenterCrop pair, and stores inputs and outputs as U8 tensors (H, W, C):
  "in{i}"                 the input images
  "resize{i}_{h}x{w}"     Image.resize((w, h), Image.BICUBIC)
  "eval{i}_{size}_{pct}"  Resize(floor(size / pct), BICUBIC) then CenterCrop(size)

    /usr/bin/python3 reference/pil_eval_golden.py tests/golden/pil_eval.safetensors
(Debian: python3-pil, python3-torchvision, python3-torch.)
"""
import math
import sys

import numpy as np
import PIL
import torch
import torchvision
from PIL import Image
from torchvision import transforms

from safetensors_io import save_file

# (h, w, channels)
INPUTS = [(47, 61, 3), (90, 64, 3), (33, 33, 1), (100, 150, 3)]
RESIZES = {0: [(20, 30), (80, 100), (47, 30), (20, 61), (5, 7)], 1: [(45, 32), (91, 65)], 2: [(16, 16), (50, 40)],
           3: [(64, 96), (37, 150)]}
EVALS = {0: [(32, 0.875), (24, 1.0), (40, 0.9)], 1: [(32, 0.875), (56, 0.875)], 2: [(28, 0.875)], 3: [(64, 0.875), (96, 1.0)]}


def image(i: int, h: int, w: int, c: int) -> np.ndarray:
    """Smooth gradients plus edges and noise, so every filter tap matters."""
    rng = np.random.default_rng(100 + i)
    y, x = np.mgrid[0:h, 0:w]
    base = [128 + 100 * np.sin(0.21 * x + 0.13 * y + k) for k in range(c)]
    img = np.stack(base, axis=-1) + rng.normal(0, 25, (h, w, c))
    img[(x // 7 + y // 5) % 4 == 0] = 255  # hard edges: overshoot must clip
    img[(x * 3 + y) % 23 == 0] = 0
    return np.clip(np.rint(img), 0, 255).astype(np.uint8)


def pil(a: np.ndarray) -> Image.Image:
    return Image.fromarray(a[:, :, 0] if a.shape[2] == 1 else a, mode="L" if a.shape[2] == 1 else "RGB")


def arr(im: Image.Image) -> torch.Tensor:
    a = np.asarray(im)
    return torch.from_numpy((a[:, :, None] if a.ndim == 2 else a).copy())


def main() -> None:
    out = {}
    for i, (h, w, c) in enumerate(INPUTS):
        a = image(i, h, w, c)
        out[f"in{i}"] = torch.from_numpy(a.copy())
        for oh, ow in RESIZES[i]:
            out[f"resize{i}_{oh}x{ow}"] = arr(pil(a).resize((ow, oh), Image.BICUBIC))
        for size, pct in EVALS[i]:
            t = transforms.Compose([transforms.Resize(math.floor(size / pct), interpolation=transforms.InterpolationMode.BICUBIC),
                                    transforms.CenterCrop(size)])
            out[f"eval{i}_{size}_{pct}"] = arr(t(pil(a)))
    meta = {"pil": PIL.__version__, "torchvision": torchvision.__version__}
    save_file(out, sys.argv[1], metadata=meta)


if __name__ == "__main__":
    main()
