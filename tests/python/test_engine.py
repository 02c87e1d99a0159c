"""The engine from Python (kat.models, kat.load(...).predict, kat.train) against `kat infer` and the
PyTorch reference. Needs the engine module (not in a KAT_PY_MINIMAL build: skipped there, saying
so) and, for the comparison with the CLI, the `kat` binary: $KAT_BINARY or build/kat (what
scripts/test.sh builds first)."""
import os
import subprocess

import numpy as np
import pytest
import torch
from conftest import ROOT

import kat

try:
    from kat import _engine  # noqa: F401
    HAVE_ENGINE = True
except ImportError:
    HAVE_ENGINE = False

pytestmark = pytest.mark.skipif(not HAVE_ENGINE, reason="kat built with KAT_PY_MINIMAL=ON: no engine module")
KAT_BINARY = os.environ.get("KAT_BINARY", os.path.join(ROOT, "build", "kat"))


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    """Random kat_micro_patch4_28 weights with timm names from the reference (golden parameter
    scheme: non-trivial rationals), a random input, and the reference's float64 logits."""
    from configs import load_config
    from kat_ref import KAT, randomize_parameters
    from safetensors_io import save_file
    d = tmp_path_factory.mktemp("w")
    cfg = load_config(os.path.join(ROOT, "configs", "kat_micro_patch4_28.json"))
    model = KAT(cfg, dtype=torch.float64)
    randomize_parameters(model, torch.Generator().manual_seed(0))
    save_file({k: v.float() for k, v in model.state_dict().items()}, str(d / "w.safetensors"), dtype="F32")
    x = torch.randn(5, 1, 28, 28, generator=torch.Generator().manual_seed(1)).float()
    save_file({"input": x}, str(d / "in.safetensors"), dtype="F32")
    with torch.no_grad():
        ref = model(x.double())
    return d, x, ref


def test_models():
    names = kat.models()
    assert "kat_tiny_patch16_224" in names and "deit_micro_patch4_28" in names


def test_predict_equals_kat_infer(weights):
    d, x, ref = weights
    if not os.path.exists(KAT_BINARY):
        pytest.skip(f"no kat binary at {KAT_BINARY} (set KAT_BINARY or build it: scripts/setup.sh)")
    subprocess.run([KAT_BINARY, "infer", "--model", "kat_micro_patch4_28", "--weights", str(d / "w.safetensors"),
                    "--input", str(d / "in.safetensors"), "--output", str(d / "out.safetensors")], check=True)
    from safetensors_io import load_file
    cli, _ = load_file(str(d / "out.safetensors"))
    m = kat.load(d / "w.safetensors")  # model inferred from the tensor names and shapes
    assert m.config["name"] == "kat_micro_patch4_28"
    logits, feats = m.predict(x.numpy())
    # The same CPU code on the same input, but the wheel is compiled for the portable x86-64 target
    # and build/kat for KAT_CPU_ARCH (x86-64-v3: FMA contraction, AVX2 GEMM kernels, other libmvec
    # variants), so fp32 results differ in the last bits (~1e-6 relative, measured up to 1.6e-5
    # on near-zero logits): norm-wise 1e-5, per element 1e-5 |ref| + 1e-5 rms(ref). Built with the
    # same KAT_CPU_ARCH they are bitwise equal.
    for got, want in ((logits, cli["logits"].numpy()), (feats, cli["features"].numpy())):
        assert got.shape == want.shape
        rms = np.sqrt(np.mean(want.astype(np.float64) ** 2))
        assert np.linalg.norm(got - want) <= 1e-5 * np.linalg.norm(want)
        assert np.all(np.abs(got - want) <= 1e-5 * np.abs(want) + 1e-5 * rms)


def test_predict_against_reference_and_torch_io(weights):
    """fp32 engine vs float64 reference: 1e-4 relative (fp32 through 4 blocks; the engine's own
    tests bound each layer much tighter). Torch in -> torch out; a non-contiguous float64 array is
    converted once."""
    d, x, ref = weights
    m = kat.load(str(d / "w.safetensors"), "kat_micro_patch4_28")
    logits, feats = m.predict(x)
    assert isinstance(logits, torch.Tensor) and logits.shape == (5, 10) and feats.shape == (5, 50, 64)
    assert ((logits.double() - ref).norm() / ref.norm()).item() < 1e-4
    xt = np.asfortranarray(x.numpy().astype(np.float64))
    np.testing.assert_array_equal(m.predict(xt, features=False), logits.numpy())
    # Another batch size changes the GEMMs' row counts, so OpenBLAS's blocking and fp32 summation
    # order: equal to ~1e-6 relative, not bitwise.
    np.testing.assert_allclose(m.predict(x.numpy(), batch=2, features=False), logits.numpy(), rtol=1e-5, atol=1e-5)


def test_load_and_predict_errors(weights, tmp_path):
    d, x, _ = weights
    m = kat.load(d / "w.safetensors")
    with pytest.raises(ValueError, match=r"takes \(N, 1, 28, 28\)"):
        m.predict(np.zeros((2, 3, 28, 28), np.float32))
    with pytest.raises(ValueError, match=r"expected \(N, C, H, W\)"):
        m.predict(np.zeros((28, 28), np.float32))
    with pytest.raises(ValueError, match="deit"):  # a DeiT config does not fit KAT weights
        kat.load(d / "w.safetensors", "deit_micro_patch4_28")
    with pytest.raises(ValueError, match="nope.safetensors"):
        kat.load(tmp_path / "nope.safetensors")


def test_predict_precision(weights):
    """precision="fp8" on the CPU: the blocks' linears through FP8 (E4M3, current-scaled, the exact
    emulation of the GPU's FP8 GEMMs). E4M3 keeps 3 mantissa bits (relative rounding up to 2^-4 per
    operand value, ~2 % rms) on both operands of 16 linears, amplified by the random golden
    rationals: measured 0.133 of the logits' norm (2026-12-08), bound 0.25; never bitwise the fp32
    logits, and the same input gives the same output. bf16 is GPU only; an unknown precision names
    the flag."""
    d, x, _ = weights
    fp32 = kat.load(d / "w.safetensors").predict(x.numpy(), features=False)
    m8 = kat.load(d / "w.safetensors", precision="fp8")
    fp8 = m8.predict(x.numpy(), features=False)
    assert np.all(np.isfinite(fp8)) and not np.array_equal(fp8, fp32)
    assert np.linalg.norm(fp8 - fp32) <= 0.25 * np.linalg.norm(fp32)
    np.testing.assert_array_equal(m8.predict(x.numpy(), features=False), fp8)
    with pytest.raises(ValueError, match="--precision bf16 is GPU only"):
        kat.load(d / "w.safetensors", precision="bf16")
    with pytest.raises(ValueError, match="--precision must be auto, fp32, bf16 or fp8, got 'fp4'"):
        kat.load(d / "w.safetensors", precision="fp4")


def test_train_returns_run_and_metrics(tmp_path):
    """A few steps of `kat train` in-process (CLI option names), then the checkpoint loads."""
    out = tmp_path / "run"
    r = kat.train(model="kat_micro_patch4_28", epochs=1, batch=64, train_subset=256, test_subset=128,
                  out=str(out), no_progress=True, seed=3)
    assert r["run_dir"] == str(out) and r["epochs_done"] == 1 and r["steps"] == 4
    assert 0.0 <= r["final_top1"] <= 100.0 and np.isfinite(r["final_loss"])
    assert r["train_seconds"] > 0 and 0 <= r["data_wait_seconds"] <= r["train_seconds"]
    assert (out / "metrics.jsonl").exists() and (out / "best.safetensors").exists()
    assert kat.load(out / "best.safetensors").predict(np.zeros((1, 1, 28, 28), np.float32), features=False).shape \
        == (1, 10)
    with pytest.raises(ValueError, match="unknown option 'epoch'"):
        kat.train(epoch=1)
    with pytest.raises(ValueError, match="--epochs must be > 0"):
        kat.train(epochs=0, out=str(tmp_path / "bad"))


def test_predict_device(weights):
    """device="cuda": the engine's GPU inference runner (bf16 compute, as `kat infer --device cuda`)
    against the CPU's fp32: bf16 rounding of every activation through 4 blocks, ~1e-2 relative,
    norm-wise 3e-2. Without a usable GPU (or a CUDA build of the engine) predict says why."""
    d, x, _ = weights
    with pytest.raises(ValueError, match="expected cpu, cuda or cuda:N"):
        kat.load(d / "w.safetensors", device="gpu")
    cpu = kat.load(d / "w.safetensors").predict(x.numpy(), features=False)
    gpu_model = kat.load(d / "w.safetensors", device="cuda")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="cuda"):
            gpu_model.predict(x.numpy())
        return
    try:
        logits = gpu_model.predict(x.cuda(), features=False)
    except ValueError as e:
        if "no CUDA backend" in str(e):
            pytest.skip(f"the engine module was built without CUDA: {e}")
        raise
    assert logits.device.type == "cuda"
    assert np.linalg.norm(logits.cpu().numpy() - cpu) <= 3e-2 * np.linalg.norm(cpu)
