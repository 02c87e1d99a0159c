"""kat: the Kolmogorov-Arnold Transformer engine from Python, and its GR-KAN op for PyTorch.

kat.torch.GRKAN           drop-in for the public KAT_Group module (CPU and CUDA kernels)
kat.torch.replace_rationals(model)   swap every KAT_Group-like module of a model for GRKAN
kat.models(), kat.load(weights), kat.train(**options)   the engine (not in a KAT_PY_MINIMAL build)
"""
import importlib.util

from . import _ops

__version__ = "0.1.0"


def has_cuda() -> bool:
    """Whether this build has the CUDA kernels (nvcc was found when it was built)."""
    return _ops.has_cuda()


def cpu_kernels() -> str:
    """The instruction set of the GR-KAN CPU kernels: "x86-64-v3" (AVX2 + FMA: a wheel built for the
    portable x86-64 target carries a second compilation of them, chosen when the CPU has it;
    KAT_CPU_DISPATCH=default in the environment before import forces the first) or "default"."""
    return _ops.cpu_kernels()


if importlib.util.find_spec(__name__ + "._engine") is not None:
    from ._engine_api import load, models, train  # noqa: F401
else:  # a KAT_PY_MINIMAL build: the op only

    def _missing(*args, **kwargs):
        raise ImportError("this kat build has no engine module (built with KAT_PY_MINIMAL=ON: the GR-KAN op only, "
                          "kat.torch); reinstall without it for kat.models / kat.load / kat.train")

    models = load = train = _missing
