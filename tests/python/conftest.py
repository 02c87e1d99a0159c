"""pytest setup for the Python package's tests: the PyTorch reference (reference/kat_ref.py) on the
path, and the devices to run the op on (the CPU always; every CUDA device when torch sees one and
this kat build has the CUDA kernels)."""
import os
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(ROOT, "reference"))


def cuda_ready():
    import torch

    import kat
    return torch.cuda.is_available() and kat.has_cuda()


def devices():
    out = ["cpu"]
    if cuda_ready():
        import torch
        out += [f"cuda:{i}" for i in range(torch.cuda.device_count())]
    return out


needs_cuda = pytest.mark.skipif("not __import__('conftest').cuda_ready()",
                                reason="no CUDA device visible to torch, or a kat build without CUDA")
