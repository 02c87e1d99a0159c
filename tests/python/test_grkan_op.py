"""kat.torch's GR-KAN op against the PyTorch reference (reference/kat_ref.py GroupRational, written
from docs/MODEL.md with plain autograd ops), on the CPU and on every visible CUDA device.

Tolerances, each with its reason:
  - float64 (CPU, the double kernels): the same formula in a different operation order as the
    reference's autograd: ~1e-15 relative; 1e-10 (gradcheck: torch's defaults, eps 1e-6, atol 1e-5).
  - float32: fp32 math on the same inputs as the float64 reference: a few ulp of the largest term
    of P and Q (~1e-6 relative), amplified where P cancels; norm-wise 1e-5, per element
    1e-5 |ref| + 1e-5 rms(ref). Coefficient gradients are sums over every element (double per
    chunk on the CPU, fp32 partials on the GPU): norm-wise 1e-4.
  - bfloat16 / float16 inputs: the kernel computes in fp32 on the 16-bit inputs and rounds y and
    dx once, so against the float64 reference on the same (16-bit) inputs the error is half an
    ulp of the type plus the fp32 error: per element 2^-8 (bf16) / 2^-10 (fp16) |ref| + 1e-5
    rms(ref) (2x the rounding for fp16's finer grid, whose fp32 noise is relatively larger);
    the coefficient gradients are fp32 sums of fp32 terms of exactly those inputs: norm-wise 1e-4.
"""
import os

import pytest
import torch
from conftest import devices, needs_cuda
from kat_ref import GroupRational

import kat
from kat import _ops
from kat.torch import GRKAN, grkan, init_coefficients, replace_rationals, uses_custom_op

SHAPES = [((2, 3, 16), 4, True, (5, 4)), ((7, 24), 8, False, (5, 4)), ((3, 2, 5, 12), 4, True, (3, 2)),
          ((5, 16), 2, False, (6, 6))]


def make_params(groups, shared, deg, dtype=torch.float64, seed=0):
    """Coefficients: swish init + N(0, 0.05) noise (degrees (5, 4)), else small random values; no
    zeros (the |.| kink: torch.abs has gradient 0 there, the spec sign(0) = +1)."""
    g = torch.Generator().manual_seed(seed)
    m, n = deg
    rows = 1 if shared else groups
    if deg == (5, 4):
        a0, b0 = init_coefficients("swish")
        a = torch.tensor([a0] * rows, dtype=torch.float64) + 0.05 * torch.randn(rows, 6, generator=g, dtype=torch.float64)
        b = torch.tensor([b0] * groups, dtype=torch.float64) + 0.05 * torch.randn(groups, 4, generator=g,
                                                                                 dtype=torch.float64)
    else:
        a = 0.3 * torch.randn(rows, m + 1, generator=g, dtype=torch.float64)
        b = 0.3 * torch.randn(groups, n, generator=g, dtype=torch.float64)
    return a.to(dtype), b.to(dtype)


def reference(x, a, b, groups):
    """y and (dx, da, db) of sum(y * w) from the reference module in float64, w fixed random."""
    C = x.shape[-1]
    ref = GroupRational(C, groups, a.shape[0] == 1, "identity", m=a.shape[1] - 1, n=b.shape[1], dtype=torch.float64)
    with torch.no_grad():
        ref.weight_numerator.copy_(a.double())
        ref.weight_denominator.copy_(b.double())
    xd = x.detach().double().cpu().requires_grad_()
    y = ref(xd)
    return y, xd, ref


def rel(a, b):
    a, b = a.double().cpu(), b.double().cpu()
    return ((a - b).norm() / b.norm().clamp_min(1e-300)).item()


def assert_close_elementwise(got, ref, rtol, what):
    got, ref = got.double().cpu(), ref.double().cpu()
    rms = ref.pow(2).mean().sqrt().item() if ref.numel() else 0.0
    bad = (got - ref).abs() > rtol * ref.abs() + 1e-5 * rms
    assert not torch.isnan(got).any(), f"{what}: NaN"
    assert not bad.any(), f"{what}: {int(bad.sum())} elements off, worst {(got - ref).abs().max().item():.3g}"


# ---- float64: gradcheck and the reference ---------------------------------------------------


@pytest.mark.parametrize("shape,groups,shared,deg", SHAPES)
def test_gradcheck_float64(shape, groups, shared, deg):
    a, b = make_params(groups, shared, deg)
    x = torch.randn(*shape, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    x = (x + 0.1 * torch.sign(x)).requires_grad_()  # away from the |x| kink
    a.requires_grad_()
    b.requires_grad_()
    assert torch.autograd.gradcheck(lambda x, a, b: grkan(x, a, b, groups), (x, a, b))


@pytest.mark.parametrize("shape,groups,shared,deg", SHAPES)
def test_float64_equals_reference(shape, groups, shared, deg):
    a, b = make_params(groups, shared, deg)
    x = torch.randn(*shape, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    w = torch.randn(*shape, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    y_ref, xd, ref = reference(x, a, b, groups)
    (y_ref * w).sum().backward()
    xk, ak, bk = x.clone().requires_grad_(), a.clone().requires_grad_(), b.clone().requires_grad_()
    y = grkan(xk, ak, bk, groups)
    (y * w).sum().backward()
    assert rel(y, y_ref) < 1e-12
    assert rel(xk.grad, xd.grad) < 1e-12
    assert rel(ak.grad, ref.weight_numerator.grad) < 1e-12
    assert rel(bk.grad, ref.weight_denominator.grad) < 1e-12


# ---- float32 / bfloat16 / float16 on every device -------------------------------------------

TOL = {torch.float32: 1e-5, torch.bfloat16: 2.0**-8, torch.float16: 2.0**-10}


@pytest.mark.parametrize("device", devices())
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("shape,groups,shared,deg", SHAPES + [((4, 197, 192), 8, True, (5, 4))])
def test_against_reference(device, dtype, shape, groups, shared, deg):
    a, b = make_params(groups, shared, deg, torch.float32)
    gen = torch.Generator().manual_seed(4)
    x = (1.5 * torch.randn(*shape, generator=gen)).to(dtype)  # the values the kernel sees
    w = torch.randn(*shape, generator=gen).to(dtype)
    y_ref, xd, ref = reference(x, a, b, groups)
    (y_ref * w.double()).sum().backward()
    xk = x.to(device).requires_grad_()
    ak, bk = a.to(device).requires_grad_(), b.to(device).requires_grad_()
    y = grkan(xk, ak, bk, groups)
    assert y.dtype == dtype and y.shape == x.shape and y.device == xk.device
    y.backward(w.to(device))
    assert xk.grad.dtype == dtype and ak.grad.dtype == torch.float32
    assert_close_elementwise(y, y_ref, TOL[dtype], f"y {dtype}")
    assert_close_elementwise(xk.grad, xd.grad, TOL[dtype], f"dx {dtype}")
    assert rel(y, y_ref) < max(TOL[dtype], 1e-5)
    assert rel(ak.grad, ref.weight_numerator.grad) < 1e-4
    assert rel(bk.grad, ref.weight_denominator.grad) < 1e-4


# The CPU kernels of a wheel built for the portable x86-64 target exist twice, for that target and
# for x86-64-v3 (AVX2, FMA), picked at run time (src/ops/cpu/grkan.cpp). Each run of both in a child
# process (the choice is made once per process; KAT_CPU_DISPATCH=default forces the first), against
# the float64 reference with test_against_reference's tolerances: the two compilations round
# differently (FMA contraction), so each is held to the reference, not to the other bitwise.
CPU_KERNELS_CHILD = """
import sys, torch, kat
from kat.torch import grkan
x, w, a, b, groups = torch.load(sys.argv[1])
out = {}
for dt in (torch.float32, torch.bfloat16, torch.float16):
    xk = x.to(dt).clone().requires_grad_()  # a leaf of its own (x.to(float32) is x itself)
    ak, bk = a.clone().requires_grad_(), b.clone().requires_grad_()
    y = grkan(xk, ak, bk, groups)
    y.backward(w.to(dt))
    out[str(dt)] = (y.detach(), xk.grad, ak.grad, bk.grad)
torch.save(out, sys.argv[2])
print(kat.cpu_kernels())
"""


def test_cpu_kernels_of_both_instruction_sets(tmp_path):
    import subprocess
    import sys

    groups = 8
    a, b = make_params(groups, True, (5, 4), torch.float32)
    gen = torch.Generator().manual_seed(7)
    x = 1.5 * torch.randn(4, 197, 192, generator=gen)
    w = torch.randn(4, 197, 192, generator=gen)
    torch.save((x, w, a, b, groups), tmp_path / "in.pt")
    seen = {}
    for mode in ("auto", "default"):
        env = {k: v for k, v in os.environ.items() if k != "KAT_CPU_DISPATCH"}
        if mode == "default":
            env["KAT_CPU_DISPATCH"] = "default"
        r = subprocess.run([sys.executable, "-c", CPU_KERNELS_CHILD, str(tmp_path / "in.pt"),
                            str(tmp_path / f"{mode}.pt")], env=env, capture_output=True, text=True, timeout=300)
        assert r.returncode == 0, f"child ({mode}) exited with {r.returncode}\n{r.stderr[-3000:]}"
        seen[mode] = r.stdout.strip()
        out = torch.load(tmp_path / f"{mode}.pt")
        for dt in (torch.float32, torch.bfloat16, torch.float16):
            xq = x.to(dt)
            y_ref, xd, ref = reference(xq, a, b, groups)
            (y_ref * w.to(dt).double()).sum().backward()
            y, dx, da, db = out[str(dt)]
            assert_close_elementwise(y, y_ref, TOL[dt], f"y {dt} ({mode}: {seen[mode]})")
            assert_close_elementwise(dx, xd.grad, TOL[dt], f"dx {dt} ({mode}: {seen[mode]})")
            assert rel(da, ref.weight_numerator.grad) < 1e-4
            assert rel(db, ref.weight_denominator.grad) < 1e-4
    assert seen["default"] in ("default", "x86-64-v3")  # x86-64-v3 when that is the build's own target
    assert seen["auto"] in ("default", "x86-64-v3")
    assert seen["auto"] == kat.cpu_kernels()


@pytest.mark.parametrize("device", devices())
def test_any_shape_and_layout(device):
    a, b = make_params(4, True, (5, 4), torch.float32)
    a, b = a.to(device), b.to(device)
    base = torch.randn(6, 5, 8, device=device)
    for x in (base[0, 0], base, base.reshape(2, 3, 5, 8)):  # (C,), (B, N, C), 4-D
        y = grkan(x, a, b, 4)
        assert y.shape == x.shape
        assert torch.equal(y.reshape(-1, 8), grkan(x.reshape(-1, 8), a, b, 4))
    empty = torch.randn(0, 8, device=device)
    assert grkan(empty, a, b, 4).shape == (0, 8)
    # A non-contiguous input (channels last after a transpose) gives the contiguous result.
    t = torch.randn(8, 6, device=device).t()
    assert not t.is_contiguous()
    assert torch.equal(grkan(t, a, b, 4), grkan(t.contiguous(), a, b, 4))


@pytest.mark.parametrize("device", devices())
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_deterministic(device, dtype):
    m = GRKAN(8, "swish", device=device)
    x = torch.randn(64, 197, 192, device=device).to(dtype)
    grads = []
    for _ in range(2):
        m.zero_grad()
        xk = x.clone().requires_grad_()
        m(xk).float().square().sum().backward()
        grads.append((xk.grad.clone(), m.weight_numerator.grad.clone(), m.weight_denominator.grad.clone()))
    for g1, g2 in zip(*grads):
        assert torch.equal(g1, g2)


# ---- the module: KAT_Group's constructor, parameters and state_dicts ------------------------


def test_module_matches_kat_group_layout():
    m = GRKAN(num_groups=8, mode="gelu")
    assert [n for n, _ in m.named_parameters()] == ["weight_numerator", "weight_denominator"]
    assert m.weight_numerator.shape == (1, 6) and m.weight_denominator.shape == (8, 4)
    assert m.weight_numerator.dtype == torch.float32
    a, b = init_coefficients("swish")
    s = GRKAN(4, "swish")
    assert torch.equal(s.weight_numerator, torch.tensor([a], dtype=torch.float32))
    assert torch.equal(s.weight_denominator, torch.tensor([b] * 4, dtype=torch.float32))
    x = torch.linspace(-3, 3, 64).reshape(1, 8, 8)
    assert torch.allclose(GRKAN(8, "identity")(x), x)
    gelu = torch.nn.functional.gelu(x)
    assert (GRKAN(8, "gelu")(x) - gelu).abs().max() < 2e-2  # a rational fit of GELU on [-3, 3]


def test_state_dict_round_trip_with_reference():
    ours = GRKAN(4, "swish")
    with torch.no_grad():
        ours.weight_denominator.add_(0.01 * torch.randn(4, 4))
    ref = GroupRational(16, 4, True, "identity", dtype=torch.float32)
    ref.load_state_dict(ours.state_dict())
    back = GRKAN(4, "identity")
    back.load_state_dict(ref.state_dict())
    for k, v in ours.state_dict().items():
        assert torch.equal(back.state_dict()[k], v)
    x = torch.randn(3, 16)
    assert torch.allclose(back(x), ref(x), rtol=1e-5, atol=1e-6)


def test_replace_rationals_in_reference_model():
    """The whole reference KAT (float64, timm names): swapping its rationals for GRKAN keeps the
    state_dict and the logits (float64 kernels: equal to 1e-12) and the gradients."""
    from configs import load_config
    from kat_ref import KAT, randomize_parameters
    cfg = load_config("golden_kat_small")
    model = KAT(cfg, dtype=torch.float64)
    randomize_parameters(model, torch.Generator().manual_seed(0))
    x = torch.randn(2, cfg["in_chans"], cfg["img_size"], cfg["img_size"], dtype=torch.float64)
    keys = list(model.state_dict())
    ref_out = model(x)
    ref_out.sum().backward()
    ref_grads = {n: p.grad.clone() for n, p in model.named_parameters()}
    model.zero_grad()
    act1 = model.blocks[0].mlp.act1.weight_numerator
    replace_rationals(model)
    assert isinstance(model.blocks[0].mlp.act1, GRKAN) and isinstance(model.blocks[1].mlp.act2, GRKAN)
    assert model.blocks[0].mlp.act1.weight_numerator is act1  # the same Parameter objects
    assert list(model.state_dict()) == keys
    out = model(x)
    out.sum().backward()
    assert rel(out, ref_out) < 1e-12
    for n, p in model.named_parameters():
        assert rel(p.grad, ref_grads[n]) < 1e-10, n


def test_replace_rationals_leaves_other_modules():
    class KAT_Group2D(torch.nn.Module):  # acts on dim 1: not ours to swap
        def __init__(self):
            super().__init__()
            self.weight_numerator = torch.nn.Parameter(torch.zeros(1, 6))
            self.weight_denominator = torch.nn.Parameter(torch.zeros(8, 4))

    seq = torch.nn.Sequential(torch.nn.Linear(8, 8), KAT_Group2D(), GroupRational(8, 8, form="B"))
    replace_rationals(seq)
    assert type(seq[1]).__name__ == "KAT_Group2D" and isinstance(seq[2], GroupRational)


@pytest.mark.parametrize("device", devices())
def test_raw_backward_accumulates_or_overwrites(device):
    """_ops.backward: da, db += the gradient by default; accumulate=False writes them, whatever
    they held (NaN here); both give the same gradient (float32: the same kernels, the same order,
    only the starting value differs: 1e-6 relative)."""
    rows, C, G = 37, 64, 8
    gen = torch.Generator().manual_seed(3)
    x = torch.randn(rows, C, generator=gen).to(device)
    dy = torch.randn(rows, C, generator=gen).to(device)
    a, b = (t.to(device) for t in make_params(G, True, (5, 4), torch.float32))
    idx = -1 if device == "cpu" else torch.device(device).index
    stream = torch.cuda.current_stream(device).cuda_stream if idx >= 0 else 0
    shape = (rows, C, G, 1, 5, 4)
    ws = torch.empty(max(_ops.backward_workspace_bytes(idx, *shape), 4), dtype=torch.uint8, device=device)
    grads = {}
    for acc, start in ((True, 1.0), (False, float("nan"))):
        dx = torch.empty_like(x)
        da, db = torch.full_like(a, start), torch.full_like(b, start)
        _ops.backward(idx, "f32", x.data_ptr(), dy.data_ptr(), a.data_ptr(), b.data_ptr(), dx.data_ptr(),
                      da.data_ptr(), db.data_ptr(), ws.data_ptr(), *shape, stream, acc)
        grads[acc] = (da.cpu() - (1.0 if acc else 0.0), db.cpu() - (1.0 if acc else 0.0))
    for g_acc, g_new in zip(grads[True], grads[False]):
        assert not torch.isnan(g_new).any()
        assert rel(g_acc, g_new) < 1e-6


def test_eager_calls_take_the_function_path():
    """Eager calls on plain tensors run the autograd.Function (little Python per call); the
    torch.library op stays registered for torch.compile (test_compile_fullgraph, test_opcheck)."""
    x = torch.randn(3, 16, requires_grad=True)
    y = GRKAN(4, "swish")(x)
    assert type(y.grad_fn).__name__ == "_GrkanFunctionBackward"


def test_double_backward_is_refused():
    """The backward is a kernel, not differentiable again: asking for it raises instead of
    returning a silently wrong second derivative."""
    x = torch.randn(3, 16, requires_grad=True)
    (g,) = torch.autograd.grad(GRKAN(4, "swish")(x).sum(), x, create_graph=True)
    with pytest.raises(RuntimeError, match="once_differentiable|differentiate|does not require grad"):
        g.sum().backward()


# ---- errors ---------------------------------------------------------------------------------


def test_errors():
    m = GRKAN(8, "swish")
    with pytest.raises(ValueError, match="10 channels .* not divisible by num_groups=8"):
        m(torch.randn(2, 10))
    with pytest.raises(TypeError, match="dtype torch.int32"):
        m(torch.ones(2, 8, dtype=torch.int32))
    with pytest.raises(ValueError, match="no channel dim"):
        m(torch.tensor(1.0))
    with pytest.raises(ValueError, match="device 'meta'"):
        m(torch.randn(2, 8, device="meta"))
    a, b = make_params(8, True, (5, 4), torch.float32)
    with pytest.raises(ValueError, match="weight_denominator must be"):
        grkan(torch.randn(2, 8), a, b[:4], 8)
    with pytest.raises(ValueError, match="weight_numerator must be"):
        grkan(torch.randn(2, 8), torch.zeros(3, 6), b, 8)
    with pytest.raises(ValueError, match="out of range"):
        grkan(torch.randn(2, 8), torch.zeros(1, 11), b, 8)
    with pytest.raises(ValueError, match="unknown rational init|relu"):
        GRKAN(8, "relu")
    with pytest.raises(ValueError, match="num_groups"):
        GRKAN(0)


RAW_ERRORS = """
import torch  # loaded first, as in every kat.torch user's process
from kat import _ops
for kw, dtype, want in ((dict(dim=10), "f32", "not divisible by groups"), (dict(dim=8), "i8", "unknown element type")):
    try:
        _ops.forward(-1, dtype, 0, 0, 0, 0, rows=1, groups=8, num_rows=1, m=5, n=4, **kw)
    except ValueError as e:
        assert want in str(e), str(e)
    else:
        raise SystemExit("no error raised for " + want)
print("ok")
"""


def test_raw_entry_point_errors():
    """The raw entry point checks too (kat::Error -> ValueError naming the problem). In a child
    process: on the GPU machine (Python 3.12, torch 2.11, g++ 13) the interpreter died at the first
    C++ exception raised through kat._ops, which took the whole pytest run with it; here such a
    crash fails this test alone, with its signal."""
    import subprocess
    import sys

    r = subprocess.run([sys.executable, "-X", "faulthandler", "-c", RAW_ERRORS], capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 0 and r.stdout.strip() == "ok", (
        f"child exited with {r.returncode} (negative: killed by that signal)\n{r.stdout}\n{r.stderr[-3000:]}")


@needs_cuda
def test_cuda_errors():
    m = GRKAN(8, "swish")
    with pytest.raises(ValueError, match="is on cpu, the input on cuda"):
        m(torch.randn(2, 8, device="cuda"))
    with pytest.raises(TypeError, match="float64 input runs on the CPU only"):
        grkan(torch.randn(2, 8, device="cuda", dtype=torch.float64), *[p.cuda().double() for p in m.parameters()], 8)


def test_no_cuda_build_says_so():
    if kat.has_cuda():
        pytest.skip("this build has the CUDA kernels")
    with pytest.raises(ValueError, match="no CUDA backend"):
        _ops.forward(0, "f32", 0, 0, 0, 0, rows=1, dim=8, groups=8, num_rows=1, m=5, n=4)


# ---- autocast, torch.library, torch.compile -------------------------------------------------


@pytest.mark.parametrize("device", devices())
def test_autocast_keeps_bf16(device):
    lin, act = torch.nn.Linear(16, 16).to(device), GRKAN(4, "swish", device=device)
    x = torch.randn(3, 16, device=device)
    with torch.autocast(device_type=torch.device(device).type, dtype=torch.bfloat16):
        h = lin(x)
        y = act(h)
    assert h.dtype == torch.bfloat16 and y.dtype == torch.bfloat16  # no upcast: the op runs on bf16
    y.float().sum().backward()
    assert act.weight_numerator.grad.dtype == torch.float32 and lin.weight.grad is not None


@pytest.mark.skipif(not uses_custom_op(), reason="torch < 2.4: no torch.library.custom_op (autograd.Function path)")
@pytest.mark.parametrize("device", devices()[:2])
def test_opcheck(device):
    a, b = make_params(4, True, (5, 4), torch.float32)
    x = torch.randn(3, 16, device=device, requires_grad=True)
    args = (x, a.to(device).requires_grad_(), b.to(device).requires_grad_(), 4)
    torch.library.opcheck(torch.ops.kat.grkan.default, args)


@pytest.mark.skipif(not uses_custom_op(), reason="torch < 2.4: no torch.library.custom_op (autograd.Function path)")
@pytest.mark.parametrize("device", devices()[:2])
def test_compile_fullgraph(device):
    """No graph break (fullgraph=True raises on one); same values and gradients as eager. On the CPU
    the aot_eager backend (tracing through the fake implementation and the registered autograd;
    inductor's C++ compile of the rest would cost minutes on CI); inductor on CUDA."""
    torch._dynamo.reset()
    model = torch.nn.Sequential(torch.nn.Linear(16, 32), GRKAN(8, "swish"), torch.nn.Linear(32, 16)).to(device)
    backend = "inductor" if device.startswith("cuda") else "aot_eager"
    compiled = torch.compile(model, fullgraph=True, backend=backend)
    x = torch.randn(4, 5, 16, device=device)
    y_e = model(x)
    y_e.square().sum().backward()
    ge = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    y_c = compiled(x)
    y_c.square().sum().backward()
    assert torch.allclose(y_c, y_e, rtol=1e-5, atol=1e-6)
    for p, g in zip(model.parameters(), ge):
        assert torch.allclose(p.grad, g, rtol=1e-4, atol=1e-6)


# ---- CUDA specifics: device index, stream, CUDA graphs, poisoned outputs ----------------------


@needs_cuda
@pytest.mark.parametrize("dtype", ["f32", "bf16", "f16"])
@pytest.mark.parametrize("rows,C,G,shared,deg", [
    (1001, 768, 8, True, (5, 4)),    # 16-byte vectors, the specialised (5, 4) kernel
    (333, 120, 8, True, (5, 4)),     # D/G = 15: the scalar fallback
    (301, 192, 8, False, (3, 2)),    # per-group numerator, the generic kernel
    (8191, 192, 8, True, (5, 4)),    # many blocks and trips
])
@pytest.mark.parametrize("accumulate", [True, False])
def test_cuda_raw_against_cpu_poisoned(dtype, rows, C, G, shared, deg, accumulate):
    """The raw entry points on fresh random inputs with the outputs poisoned (NaN) first: every
    output element written, equal to the CPU kernels within the 16-bit rounding / fp32 noise
    (y, dx: both sides round the fp32 value once, which may land on either side of a 16-bit
    midpoint: 1 ulp, 2^-7 bf16 / 2^-9 fp16 relative with margin; coefficient sums 1e-4).
    accumulate=True: da, db start at a random value and get the gradient added; False: they
    start poisoned and are overwritten (what kat.torch's backward uses: no zero-fill)."""
    tdt = {"f32": torch.float32, "bf16": torch.bfloat16, "f16": torch.float16}[dtype]
    gen = torch.Generator().manual_seed(rows)
    x = (1.5 * torch.randn(rows, C, generator=gen)).to(tdt)
    dy = torch.randn(rows, C, generator=gen).to(tdt)
    a, b = make_params(G, shared, deg, torch.float32, seed=rows)
    shape = dict(rows=rows, dim=C, groups=G, num_rows=a.shape[0], m=deg[0], n=deg[1])
    outs, raw = {}, {}
    for dev in ("cpu", "cuda"):
        xd, dyd, ad, bd = x.to(dev), dy.to(dev), a.to(dev), b.to(dev)
        y = torch.full_like(xd, float("nan"))
        dx = torch.full_like(xd, float("nan"))
        base_a, base_b = torch.randn(a.shape, generator=gen), torch.randn(b.shape, generator=gen)
        if accumulate:
            # copies: on the CPU .to() would return base_a itself, and the += would land in it
            da, db = base_a.to(dev, copy=True), base_b.to(dev, copy=True)
        else:
            da, db = torch.full_like(ad, float("nan")), torch.full_like(bd, float("nan"))
        idx = -1 if dev == "cpu" else torch.cuda.current_device()
        stream = torch.cuda.current_stream().cuda_stream if dev == "cuda" else 0
        ws = torch.empty(max(_ops.backward_workspace_bytes(idx, **shape), 4), dtype=torch.uint8, device=dev)
        _ops.forward(idx, dtype, xd.data_ptr(), ad.data_ptr(), bd.data_ptr(), y.data_ptr(), stream=stream, **shape)
        _ops.backward(idx, dtype, xd.data_ptr(), dyd.data_ptr(), ad.data_ptr(), bd.data_ptr(), dx.data_ptr(),
                      da.data_ptr(), db.data_ptr(), ws.data_ptr(), stream=stream, accumulate=accumulate, **shape)
        torch.cuda.synchronize()
        raw[dev] = (da.cpu().clone(), db.cpu().clone(), base_a, base_b)
        if accumulate:  # the gradients alone (the base is the same on both sides)
            da, db = da.cpu() - base_a, db.cpu() - base_b
        outs[dev] = [t.cpu() for t in (y, dx, da, db)]
    for name, c, g in zip(("y", "dx"), outs["cpu"], outs["cuda"]):
        assert not torch.isnan(g).any(), f"{name}: unwritten (NaN) elements"
        assert_close_elementwise(g, c, {"f32": 1e-5, "bf16": 2.0**-7, "f16": 2.0**-9}[dtype], name)
    for k, (name, c, g) in enumerate(zip(("da", "db"), outs["cpu"][2:], outs["cuda"][2:])):
        assert not torch.isnan(g).any() and not torch.isnan(c).any(), f"{name}: unwritten (NaN) elements"
        # What went wrong, if anything: the CUDA output against the CPU gradient alone (overwritten
        # instead of added to), against its own start (nothing added), and the largest differences.
        out_cuda, start_cuda = raw["cuda"][k], raw["cuda"][2 + k]
        assert rel(g, c) < 1e-4, (
            f"{name}: rel {rel(g, c):.3e}; CUDA output vs CPU gradient {rel(out_cuda, c):.3e}, vs its start "
            f"{rel(out_cuda, start_cuda):.3e}; gradient norms CPU {c.norm():.4e} CUDA {g.norm():.4e}; first "
            f"values CPU {c.flatten()[:4].tolist()} CUDA {g.flatten()[:4].tolist()}")


@needs_cuda
def test_cuda_other_device_and_stream():
    dev = f"cuda:{torch.cuda.device_count() - 1}"  # the last device, whatever the current one is
    m = GRKAN(8, "swish", device=dev)
    x = torch.randn(33, 64, device=dev, requires_grad=True)
    ref = GRKAN(8, "swish")(x.detach().cpu())
    s = torch.cuda.Stream(device=dev)
    s.wait_stream(torch.cuda.current_stream(dev))  # x and the parameters were made on the default stream
    with torch.cuda.stream(s):
        y = m(x)
        y.sum().backward()
    s.synchronize()
    assert y.device == torch.device(dev) and x.grad is not None
    # fp32 on both sides, GPU rcp.approx and another operation order: see the module docstring.
    assert torch.allclose(y.cpu(), ref, rtol=1e-5, atol=1e-5)


@needs_cuda
def test_cuda_graph_capture():
    m = GRKAN(8, "swish", device="cuda")
    x = torch.randn(64, 192, device="cuda", requires_grad=True)
    s = torch.cuda.Stream()
    s.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(s):  # warm-up outside the graph (allocator, occupancy caches)
        m(x).sum().backward()
    torch.cuda.current_stream().wait_stream(s)
    g = torch.cuda.CUDAGraph()
    m.zero_grad()
    x.grad = None
    with torch.cuda.graph(g):
        y = m(x)
        y.sum().backward()
    x_new = torch.randn(64, 192, device="cuda")
    with torch.no_grad():
        x.copy_(x_new)
    m.zero_grad(set_to_none=False)
    g.replay()
    torch.cuda.synchronize()
    assert torch.allclose(y, m(x_new), rtol=1e-6, atol=1e-6)


def test_autograd_function_path():
    """The path of torch < 2.4 (a plain autograd.Function), forced with KAT_TORCH_FUNCTION=1 in a
    fresh interpreter: gradcheck in float64 and the reference in float32."""
    import subprocess
    import sys
    code = """
import torch
from kat.torch import GRKAN, grkan, uses_custom_op
from kat_ref import GroupRational
assert not uses_custom_op()
g = torch.Generator().manual_seed(0)
x = torch.randn(3, 16, dtype=torch.float64, generator=g).requires_grad_()
a = (0.3 * torch.randn(1, 6, dtype=torch.float64, generator=g)).requires_grad_()
b = (0.3 * torch.randn(4, 4, dtype=torch.float64, generator=g)).requires_grad_()
assert torch.autograd.gradcheck(lambda x, a, b: grkan(x, a, b, 4), (x, a, b))
m = GRKAN(4, 'swish')
ref = GroupRational(16, 4, True, 'swish', dtype=torch.float32)
xf = torch.randn(5, 16, generator=g)
assert torch.allclose(m(xf), ref(xf), rtol=1e-5, atol=1e-6)
print('ok')
"""
    env = dict(os.environ, KAT_TORCH_FUNCTION="1")
    r = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                       cwd=os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "reference"))
    assert r.returncode == 0 and r.stdout.strip() == "ok", r.stderr
