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
a fake (meta) implementation, so torch.compile traces it without graph breaks; eager calls on plain
tensors take a torch.autograd.Function with the same kernels (less Python per call); on older
torch that Function is all there is.
"""
import os
from typing import Optional, Tuple

import torch
from torch import Tensor, nn
from torch.autograd.function import once_differentiable

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
# The eager path runs once per GRKAN call (24 calls per KAT-T step, forward and backward), so it
# does only what the kernels need: no copy of a contiguous input, no conversion of fp32
# coefficients, no zero-fill (the CUDA backward overwrites da/db), the workspace size cached per
# shape, the raw stream pointer without a torch.cuda.Stream object, positional arguments only.

_HAS_CUDA = _ops.has_cuda()
_MAX_DEGREE = _ops.max_degree
_RAW_STREAM = getattr(torch._C, "_cuda_getCurrentRawStream", None)


def _check(x: Tensor, a: Tensor, b: Tensor, groups: int) -> None:
    """Every argument error of the op, raised before any kernel runs."""
    if not isinstance(x, Tensor):
        raise TypeError(f"GR-KAN: input must be a torch.Tensor, got {type(x).__name__}")
    name = _DTYPE_NAMES.get(x.dtype)
    if name is None:
        raise TypeError(f"GR-KAN: input dtype {x.dtype} is not supported (float32, bfloat16 or float16; "
                        "float64 on the CPU)")
    dev = x.device
    if dev.type == "cuda":
        if name == "f64":
            raise TypeError("GR-KAN: float64 input runs on the CPU only (the CUDA kernels compute in fp32)")
        if not _HAS_CUDA:
            raise RuntimeError("GR-KAN: input is on CUDA but this kat build has no CUDA kernels "
                               "(nvcc was not found when it was built; reinstall with nvcc on PATH)")
    elif dev.type != "cpu":
        raise ValueError(f"GR-KAN: input on device '{dev}'; kat has CPU and CUDA kernels only")
    shape = x.shape
    if not shape or shape[-1] == 0:
        raise ValueError(f"GR-KAN: input of shape {tuple(shape)} has no channel dim (expected (..., C))")
    if groups <= 0 or shape[-1] % groups != 0:
        raise ValueError(f"GR-KAN: the input's {shape[-1]} channels (last dim of shape {tuple(shape)}) "
                         f"are not divisible by num_groups={groups}")
    bs, as_ = b.shape, a.shape
    if len(bs) != 2 or bs[0] != groups:
        raise ValueError(f"GR-KAN: weight_denominator must be (num_groups={groups}, n), got {tuple(bs)}")
    if len(as_) != 2 or as_[0] not in (1, groups):
        raise ValueError(f"GR-KAN: weight_numerator must be (1, m+1) or ({groups}, m+1), got {tuple(as_)}")
    if not (1 <= as_[1] <= _MAX_DEGREE + 1 and bs[1] <= _MAX_DEGREE):
        raise ValueError(f"GR-KAN: degrees (m, n) = ({as_[1] - 1}, {bs[1]}) out of range "
                         f"(at most {_MAX_DEGREE} each)")
    for pname, t in (("weight_numerator", a), ("weight_denominator", b)):
        if t.device != dev:
            raise ValueError(f"GR-KAN: {pname} is on {t.device}, the input on {dev}")
        if not t.is_floating_point():
            raise TypeError(f"GR-KAN: {pname} must be floating point, got {t.dtype}")


def _coef(t: Tensor, dtype: torch.dtype) -> Tensor:
    """The coefficients as the kernels read them: `dtype` (fp32, or float64 for float64 inputs),
    contiguous; the parameter itself when it already is (KAT_Group's fp32 parameters)."""
    return t if t.dtype == dtype and t.is_contiguous() else t.to(dtype).contiguous()


def _stream(dev: int) -> int:
    """The current CUDA stream of device `dev` as an integer (0 for the CPU, dev = -1)."""
    if dev < 0:
        return 0
    if _RAW_STREAM is not None:
        return _RAW_STREAM(dev)
    return torch.cuda.current_stream(dev).cuda_stream


_WORKSPACE_BYTES = {}  # (device, rows, C, G, An, m, n) -> bytes of scratch the CUDA backward needs


def _workspace(x: Tensor, dev: int, shape: tuple) -> Tensor:
    """Scratch for the CUDA backward's coefficient reduction, from PyTorch's allocator (stream-
    ordered; inside a CUDA graph, from the graph's pool); its size cached per device and shape."""
    key = (dev,) + shape
    n = _WORKSPACE_BYTES.get(key)
    if n is None:
        if len(_WORKSPACE_BYTES) > 1024:  # shapes that vary call after call: keep the cache small
            _WORKSPACE_BYTES.clear()
        n = _WORKSPACE_BYTES[key] = max(_ops.backward_workspace_bytes(dev, *shape), 4)
    return x.new_empty(n, dtype=torch.uint8)


def _shape(x: Tensor, a: Tensor, b: Tensor, groups: int) -> tuple:
    """(rows, C, G, An, m, n): the kernels' shape arguments, in _ops' order."""
    C = x.shape[-1]
    return (x.numel() // C, C, groups, a.shape[0], a.shape[1] - 1, b.shape[1])


def _forward_impl(x: Tensor, a: Tensor, b: Tensor, groups: int) -> Tensor:
    x = x.contiguous()
    cd = torch.float64 if x.dtype == torch.float64 else torch.float32
    a32, b32 = _coef(a, cd), _coef(b, cd)
    y = torch.empty_like(x)
    dev = x.get_device()
    _ops.forward(dev, _DTYPE_NAMES[x.dtype], x.data_ptr(), a32.data_ptr(), b32.data_ptr(), y.data_ptr(),
                 *_shape(x, a, b, groups), _stream(dev))
    return y


def _backward_impl(dy: Tensor, x: Tensor, a: Tensor, b: Tensor, groups: int) -> Tuple[Tensor, Tensor, Tensor]:
    x = x.contiguous()
    if dy.dtype != x.dtype:
        dy = dy.to(x.dtype)
    dy = dy.contiguous()  # e.g. the stride-0 gradient of a .sum()
    cd = torch.float64 if x.dtype == torch.float64 else torch.float32
    a32, b32 = _coef(a, cd), _coef(b, cd)
    dx = torch.empty_like(x)
    # Overwritten by the kernels (accumulate=False): no zero-fill before.
    da = x.new_empty(a.shape, dtype=cd)
    db = x.new_empty(b.shape, dtype=cd)
    dev, shape = x.get_device(), _shape(x, a, b, groups)
    ws = _workspace(x, dev, shape).data_ptr() if dev >= 0 else 0
    _ops.backward(dev, _DTYPE_NAMES[x.dtype], x.data_ptr(), dy.data_ptr(), a32.data_ptr(), b32.data_ptr(),
                  dx.data_ptr(), da.data_ptr(), db.data_ptr(), ws, *shape, _stream(dev), False)
    if a.dtype != cd:
        da = da.to(a.dtype)
    if b.dtype != cd:
        db = db.to(b.dtype)
    return dx, da, db


# ---- registration: torch.library custom op (torch >= 2.4) and autograd.Function --------------
# Eager calls on plain tensors run the autograd.Function below: a few microseconds of Python per
# call. The custom op (torch.ops.kat.grkan: autograd and a fake implementation registered) is what
# torch.compile / torch.export trace, without a graph break, and what tensor subclasses (fake
# tensors, ...) dispatch through; in eager mode its Python dispatch layers would cost ~10x the
# Function's per call. KAT_TORCH_FUNCTION=1 forces the Function everywhere (what torch < 2.4 gets,
# where torch.compile breaks the graph at the op; the tests use it).
_HAS_CUSTOM_OP = (hasattr(torch.library, "custom_op") and hasattr(torch.library, "register_fake")
                  and os.environ.get("KAT_TORCH_FUNCTION") != "1")


def uses_custom_op() -> bool:
    """True when the op is registered as torch.ops.kat.grkan (torch.compile-able without breaks)."""
    return _HAS_CUSTOM_OP


class _GrkanFunction(torch.autograd.Function):

    @staticmethod
    def forward(ctx, x, a, b, groups):
        x = x.contiguous()  # saved as the kernel read it
        ctx.save_for_backward(x, a, b)
        ctx.groups = groups
        return _forward_impl(x, a, b, groups)

    @staticmethod
    @once_differentiable  # the backward is a kernel, not differentiable again: say so if asked
    def backward(ctx, dy):
        x, a, b = ctx.saved_tensors
        dx, da, db = _backward_impl(dy, x, a, b, ctx.groups)
        return dx, da, db, None


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
    _is_compiling = getattr(torch.compiler, "is_compiling", None) or torch._dynamo.is_compiling

    def _apply(x, a, b, groups):
        if type(x) is Tensor and not _is_compiling():
            return _GrkanFunction.apply(x, a, b, groups)
        return _grkan_op(x, a, b, groups)

else:

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
