"""GR-KAN for PyTorch: kat's CPU and CUDA kernels behind a drop-in for the public ``KAT_Group``.

    from kat.torch import GRKAN, replace_rationals
    act = GRKAN(num_groups=8, mode="gelu")     # as KAT_Group(num_groups=8, mode="gelu")
    model = replace_rationals(model)           # every KAT_Group-like module -> GRKAN, same weights

The rational (docs/MODEL.md §1): F(x) = P(x) / Q(x) on the last dim C of x, in num_groups
contiguous groups of C / num_groups channels,
    P(x) = sum_k a_k x^k (k = 0..m),   Q(x) = 1 + sum_k |b_k| |x|^k (k = 1..n),
    weight_numerator a: (1, m+1) shared by every group (KAT_Group's layout) or (num_groups, m+1);
    weight_denominator b: (num_groups, n); (m, n) = (5, 4) for KAT_Group, up to (8, 8) here.

What the op does with tensors:
  - any shape (..., C); x is used in place when contiguous (else one .contiguous() copy), y is
    a new tensor of x's shape and dtype; nothing else is copied (the coefficients are converted
    to fp32 when they are not, 38 numbers for KAT_Group);
  - float32, bfloat16 and float16 inputs natively, math in fp32 inside the kernel (under autocast
    the input stays bf16/fp16: no upcast copy), gradients in the inputs' / parameters' dtypes;
    float64 on the CPU (double kernels, for gradcheck);
  - CPU tensors run the CPU kernels (OpenMP), CUDA tensors on any device index run the CUDA
    kernels on that device's current stream (capturable in CUDA graphs);
  - deterministic: the coefficient gradients are reduced in a fixed order on both backends;
  - errors (ValueError / TypeError) for C not divisible by num_groups, mismatched coefficient
    shapes or devices, unsupported dtypes and devices, a build without CUDA given CUDA tensors.
With torch >= 2.4 the op is a torch.library custom op (``torch.ops.kat.grkan``) with autograd and
a fake (meta) implementation, so torch.compile traces it without graph breaks; on older torch it
is a plain torch.autograd.Function.
"""
import os
from typing import Optional, Tuple

import torch
from torch import Tensor, nn

from . import _ops

__all__ = ["GRKAN", "grkan", "replace_rationals", "init_coefficients", "uses_custom_op"]

_DTYPE_NAMES = {torch.float32: "f32", torch.bfloat16: "bf16", torch.float16: "f16", torch.float64: "f64"}


def _coef_dtype(x: Tensor) -> torch.dtype:
    """The kernels' coefficient type: fp32, except float64 inputs (CPU, double kernels: gradcheck)."""
    return torch.float64 if x.dtype == torch.float64 else torch.float32


def init_coefficients(mode: str) -> Tuple[list, list]:
    """(a0..a5, b1..b4) of an initial mode: "identity", "swish" (docs/MODEL.md's tables) or "gelu"
    (kat's A-form least-squares fit; the public gelu table was fitted for another denominator)."""
    return _ops.init_coefficients(mode)


# ---- checks and the raw calls ---------------------------------------------------------------


def _check(x: Tensor, a: Tensor, b: Tensor, groups: int) -> None:
    """Every argument error of the op, raised before any kernel runs."""
    if not isinstance(x, Tensor):
        raise TypeError(f"GR-KAN: input must be a torch.Tensor, got {type(x).__name__}")
    if x.dtype not in _DTYPE_NAMES:
        raise TypeError(f"GR-KAN: input dtype {x.dtype} is not supported (float32, bfloat16 or float16; "
                        "float64 on the CPU)")
    if x.dtype == torch.float64 and x.device.type != "cpu":
        raise TypeError("GR-KAN: float64 input runs on the CPU only (the CUDA kernels compute in fp32)")
    if x.device.type not in ("cpu", "cuda"):
        raise ValueError(f"GR-KAN: input on device '{x.device}'; kat has CPU and CUDA kernels only")
    if x.device.type == "cuda" and not _ops.has_cuda():
        raise RuntimeError("GR-KAN: input is on CUDA but this kat build has no CUDA kernels "
                           "(nvcc was not found when it was built; reinstall with nvcc on PATH)")
    if x.dim() < 1 or x.shape[-1] == 0:
        raise ValueError(f"GR-KAN: input of shape {tuple(x.shape)} has no channel dim (expected (..., C))")
    if groups <= 0 or x.shape[-1] % groups != 0:
        raise ValueError(f"GR-KAN: the input's {x.shape[-1]} channels (last dim of shape {tuple(x.shape)}) "
                         f"are not divisible by num_groups={groups}")
    if b.dim() != 2 or b.shape[0] != groups:
        raise ValueError(f"GR-KAN: weight_denominator must be (num_groups={groups}, n), got {tuple(b.shape)}")
    if a.dim() != 2 or a.shape[0] not in (1, groups):
        raise ValueError(f"GR-KAN: weight_numerator must be (1, m+1) or ({groups}, m+1), got {tuple(a.shape)}")
    max_degree = _ops.max_degree
    if not (1 <= a.shape[1] <= max_degree + 1 and b.shape[1] <= max_degree):
        raise ValueError(f"GR-KAN: degrees (m, n) = ({a.shape[1] - 1}, {b.shape[1]}) out of range "
                         f"(at most {max_degree} each)")
    for name, t in (("weight_numerator", a), ("weight_denominator", b)):
        if t.device != x.device:
            raise ValueError(f"GR-KAN: {name} is on {t.device}, the input on {x.device}")
        if not t.is_floating_point():
            raise TypeError(f"GR-KAN: {name} must be floating point, got {t.dtype}")


def _device_index(x: Tensor) -> int:
    if x.device.type == "cpu":
        return -1
    return x.device.index if x.device.index is not None else torch.cuda.current_device()


def _stream(x: Tensor) -> int:
    return torch.cuda.current_stream(x.device).cuda_stream if x.device.type == "cuda" else 0


def _shape_args(x: Tensor, a: Tensor, b: Tensor, groups: int):
    C = x.shape[-1]
    return dict(rows=x.numel() // C, dim=C, groups=groups, num_rows=a.shape[0], m=a.shape[1] - 1, n=b.shape[1])


def _forward_impl(x: Tensor, a: Tensor, b: Tensor, groups: int) -> Tensor:
    x = x.contiguous()
    a32 = a.to(_coef_dtype(x)).contiguous()
    b32 = b.to(_coef_dtype(x)).contiguous()
    y = torch.empty_like(x)
    _ops.forward(_device_index(x), _DTYPE_NAMES[x.dtype], x.data_ptr(), a32.data_ptr(), b32.data_ptr(),
                 y.data_ptr(), stream=_stream(x), **_shape_args(x, a, b, groups))
    return y


def _backward_impl(dy: Tensor, x: Tensor, a: Tensor, b: Tensor, groups: int) -> Tuple[Tensor, Tensor, Tensor]:
    x = x.contiguous()
    dy = dy.to(x.dtype).contiguous()
    cd = _coef_dtype(x)
    a32 = a.to(cd).contiguous()
    b32 = b.to(cd).contiguous()
    dx = torch.empty_like(x)
    da = torch.zeros(a.shape, dtype=cd, device=x.device)  # the kernels accumulate (+=)
    db = torch.zeros(b.shape, dtype=cd, device=x.device)
    dev, shape = _device_index(x), _shape_args(x, a, b, groups)
    ws_bytes = _ops.backward_workspace_bytes(dev, **shape)
    # Scratch from PyTorch's allocator (stream-ordered; inside a CUDA graph, from the graph's pool).
    ws = torch.empty(max(ws_bytes, 4), dtype=torch.uint8, device=x.device) if dev >= 0 else None
    _ops.backward(dev, _DTYPE_NAMES[x.dtype], x.data_ptr(), dy.data_ptr(), a32.data_ptr(), b32.data_ptr(),
                  dx.data_ptr(), da.data_ptr(), db.data_ptr(), ws.data_ptr() if ws is not None else 0,
                  stream=_stream(x), **shape)
    return dx, da.to(a.dtype), db.to(b.dtype)


# ---- registration: torch.library custom op (torch >= 2.4) or autograd.Function ----------------

# KAT_TORCH_FUNCTION=1 forces the autograd.Function path (what torch < 2.4 gets; the tests use it).
_HAS_CUSTOM_OP = (hasattr(torch.library, "custom_op") and hasattr(torch.library, "register_fake")
                  and os.environ.get("KAT_TORCH_FUNCTION") != "1")


def uses_custom_op() -> bool:
    """True when the op is registered as torch.ops.kat.grkan (torch.compile-able without breaks)."""
    return _HAS_CUSTOM_OP


if _HAS_CUSTOM_OP:

    @torch.library.custom_op("kat::grkan", mutates_args=())
    def _grkan_op(x: Tensor, a: Tensor, b: Tensor, groups: int) -> Tensor:
        return _forward_impl(x, a, b, groups)

    @_grkan_op.register_fake
    def _(x, a, b, groups):
        return torch.empty_like(x, memory_format=torch.contiguous_format)

    @torch.library.custom_op("kat::grkan_backward", mutates_args=())
    def _grkan_backward_op(dy: Tensor, x: Tensor, a: Tensor, b: Tensor, groups: int) -> Tuple[Tensor, Tensor, Tensor]:
        return _backward_impl(dy, x, a, b, groups)

    @_grkan_backward_op.register_fake
    def _(dy, x, a, b, groups):
        return (torch.empty_like(x, memory_format=torch.contiguous_format),
                torch.empty_like(a, memory_format=torch.contiguous_format),
                torch.empty_like(b, memory_format=torch.contiguous_format))

    def _setup_context(ctx, inputs, output):
        x, a, b, groups = inputs
        ctx.save_for_backward(x, a, b)
        ctx.groups = groups

    def _grkan_autograd_backward(ctx, dy):
        x, a, b = ctx.saved_tensors
        dx, da, db = _grkan_backward_op(dy, x, a, b, ctx.groups)
        return dx, da, db, None

    _grkan_op.register_autograd(_grkan_autograd_backward, setup_context=_setup_context)

    def _apply(x, a, b, groups):
        return _grkan_op(x, a, b, groups)

else:

    class _GrkanFunction(torch.autograd.Function):

        @staticmethod
        def forward(ctx, x, a, b, groups):
            ctx.save_for_backward(x, a, b)
            ctx.groups = groups
            return _forward_impl(x, a, b, groups)

        @staticmethod
        def backward(ctx, dy):
            x, a, b = ctx.saved_tensors
            dx, da, db = _backward_impl(dy, x, a, b, ctx.groups)
            return dx, da, db, None

    def _apply(x, a, b, groups):
        return _GrkanFunction.apply(x, a, b, groups)


def grkan(x: Tensor, weight_numerator: Tensor, weight_denominator: Tensor, num_groups: int) -> Tensor:
    """F(x) on the last dim of x (functional form of GRKAN; shapes in the module docstring)."""
    num_groups = int(num_groups)
    _check(x, weight_numerator, weight_denominator, num_groups)
    return _apply(x.contiguous(), weight_numerator, weight_denominator, num_groups)


# ---- the module ------------------------------------------------------------------------------


class GRKAN(nn.Module):
    """Drop-in for the public ``KAT_Group(num_groups=8, mode="gelu")``: the same constructor
    arguments, the same parameters ``weight_numerator`` (1, 6) and ``weight_denominator``
    (num_groups, 4) with the same meaning (state_dicts move both ways), any input (..., C) with
    C % num_groups == 0. ``mode``: "identity", "swish" or "gelu" (see init_coefficients).
    ``shared_numerator=False`` gives a per-group numerator (num_groups, 6)."""

    def __init__(self, num_groups: int = 8, mode: str = "gelu", device=None, dtype: Optional[torch.dtype] = None,
                 *, shared_numerator: bool = True):
        super().__init__()
        if int(num_groups) <= 0:
            raise ValueError(f"GRKAN: num_groups must be positive, got {num_groups}")
        self.num_groups = int(num_groups)
        self.mode = mode
        self.order = (5, 4)
        a, b = init_coefficients(mode)
        kw = dict(device=device, dtype=dtype if dtype is not None else torch.float32)
        rows = 1 if shared_numerator else self.num_groups
        self.weight_numerator = nn.Parameter(torch.tensor([a] * rows, **kw))
        self.weight_denominator = nn.Parameter(torch.tensor([b] * self.num_groups, **kw))

    def forward(self, x: Tensor) -> Tensor:
        return grkan(x, self.weight_numerator, self.weight_denominator, self.num_groups)

    def extra_repr(self) -> str:
        return f"num_groups={self.num_groups}, mode={self.mode!r}, numerator={tuple(self.weight_numerator.shape)}"

    @classmethod
    def from_module(cls, module: nn.Module) -> "GRKAN":
        """A GRKAN that shares `module`'s parameter objects (so optimizers and tied references keep
        working); `module` is any KAT_Group-like rational (see replace_rationals)."""
        if not _is_rational(module):
            raise ValueError(f"GRKAN.from_module: {type(module).__name__} is not a KAT_Group-like A-form rational "
                             "(nn.Parameters weight_numerator (1 or G, m+1) and weight_denominator (G, n))")
        b = module.weight_denominator
        groups = int(getattr(module, "num_groups", None) or getattr(module, "groups", None) or b.shape[0])
        if groups != b.shape[0]:
            raise ValueError(f"GRKAN.from_module: {type(module).__name__} has {groups} groups but "
                             f"weight_denominator {tuple(b.shape)}")
        new = cls.__new__(cls)
        nn.Module.__init__(new)
        new.num_groups = groups
        new.mode = getattr(module, "mode", "loaded")
        new.order = (module.weight_numerator.shape[1] - 1, b.shape[1])
        new.weight_numerator = module.weight_numerator
        new.weight_denominator = b
        new.train(module.training)
        return new


def _is_rational(m: nn.Module) -> bool:
    """KAT_Group-like: nn.Parameters weight_numerator and weight_denominator (2-D each), acting on
    the last dim (not KAT_Group2D, which acts on dim 1), in the A-form (not the reference's
    optional paper B-form)."""
    if isinstance(m, GRKAN):
        return False
    a, b = getattr(m, "weight_numerator", None), getattr(m, "weight_denominator", None)
    if not (isinstance(a, nn.Parameter) and isinstance(b, nn.Parameter) and a.dim() == 2 and b.dim() == 2):
        return False
    if type(m).__name__.endswith("2D") or getattr(m, "form", "A") != "A":
        return False
    return a.shape[0] in (1, b.shape[0])


def replace_rationals(model: nn.Module) -> nn.Module:
    """Replaces every KAT_Group-like submodule of `model` (timm's KAT: blocks.*.mlp.act1/act2) by a
    GRKAN holding the same parameter objects, in place; returns the model (or a GRKAN when `model`
    itself is one). State_dict names and values are unchanged."""
    if _is_rational(model):
        return GRKAN.from_module(model)
    for name, child in list(model.named_children()):
        if _is_rational(child):
            setattr(model, name, GRKAN.from_module(child))
        else:
            replace_rationals(child)
    return model
