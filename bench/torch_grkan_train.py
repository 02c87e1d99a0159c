#!/usr/bin/env python3
"""KAT-T inside PyTorch on one GPU: a timm-structured KAT-T (timm's VisionTransformer with KAT's
FFN, fc2(act2(fc1(act1(x)))), act1 identity / act2 swish, 5,718,328 parameters) with its GR-KAN
  (a) as plain PyTorch ops (fp32 math, as the public module computes under autocast), eager and
      torch.compile,
  (b) as kat.torch.GRKAN (our CPU/CUDA kernels through torch.library), eager and torch.compile,
next to timm's deit_tiny_patch16_224 eager and torch.compile. Same protocol as
bench/torch_gpu_bench.py (its time_it: CUDA events per iteration after warm-up, median;
synthetic 224^2 data, drop_path_rate 0.1, bf16 autocast, fused AdamW):
  train step = zero_grad + forward + soft-target cross-entropy (label smoothing 0.1) + backward
               + AdamW step;   inference = forward under torch.inference_mode.
Prints a markdown table (img/s, peak MiB, ratio to DeiT-T in the same mode and batch; with several
batches also each model at its fastest batch), then the activations alone at KAT-T's shapes (GELU,
GR-KAN as plain ops, our op; forward and forward + backward); with --out DIR writes table.md,
results.csv and op_bench.md there, and with --profile a torch.profiler table of one eager step of
DeiT-T and of KAT-T with our op (profile_deit.txt, profile_kat_ours.txt).

usage: python3 bench/torch_grkan_train.py [--batch 256[,512]] [--iters 20] [--no-compile]
           [--compile-batches first|all|LIST] [--out DIR] [--profile] [--no-op-bench]
"""
import argparse
import os
import sys

import torch
from torch import nn

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from torch_gpu_bench import bench_model  # noqa: E402  (one timing protocol for every PyTorch bench)

from kat.torch import GRKAN, init_coefficients  # noqa: E402


class TorchRational(nn.Module):
    """GR-KAN in plain PyTorch ops (docs/MODEL.md §1, KAT_Group's parameters): fp32 math whatever
    the input dtype, Horner for P, shared numerator, contiguous channel groups; autograd for the
    backward."""

    def __init__(self, num_groups=8, mode="identity"):
        super().__init__()
        a, b = init_coefficients(mode)
        self.num_groups = num_groups
        self.weight_numerator = nn.Parameter(torch.tensor([a], dtype=torch.float32))
        self.weight_denominator = nn.Parameter(torch.tensor([b] * num_groups, dtype=torch.float32))

    def forward(self, x):
        shape, G = x.shape, self.num_groups
        xf = x.float().reshape(*shape[:-1], G, shape[-1] // G)
        a, b = self.weight_numerator.float(), self.weight_denominator.float().abs()
        P = a[0, 5]
        for k in range(4, -1, -1):
            P = P * xf + a[0, k]
        ax = xf.abs()
        Q = b[:, 3, None]
        for k in range(2, -1, -1):
            Q = Q * ax + b[:, k, None]
        return (P / (1 + Q * ax)).reshape(shape).to(x.dtype)


def kat_mlp(rational):
    """timm's mlp_layer hook: KAT's FFN with the given rational class."""

    class KATMlp(nn.Module):
        def __init__(self, in_features, hidden_features=None, out_features=None, bias=True, **_):
            super().__init__()
            hidden, out = hidden_features or in_features, out_features or in_features
            self.act1 = rational(8, "identity")
            self.fc1 = nn.Linear(in_features, hidden, bias=bias)
            self.act2 = rational(8, "swish")
            self.fc2 = nn.Linear(hidden, out, bias=bias)

        def forward(self, x):
            return self.fc2(self.act2(self.fc1(self.act1(x))))

    return KATMlp


def make_model(kind):
    import timm
    from timm.models.vision_transformer import VisionTransformer
    if kind == "deit":
        return timm.create_model("deit_tiny_patch16_224", drop_path_rate=0.1)
    rational = TorchRational if kind == "kat_torch" else GRKAN
    return VisionTransformer(img_size=224, patch_size=16, embed_dim=192, depth=12, num_heads=3, mlp_ratio=4,
                             num_classes=1000, drop_path_rate=0.1, mlp_layer=kat_mlp(rational))


def bench(kind, batch, iters, compile_):
    return bench_model(lambda: make_model(kind), batch, iters, compile_)


def same_function_check():
    """The two KAT-T variants compute the same function (same init): relative difference of the
    logits in fp32 (our kernel vs plain ops: a few ulp per rational, ~1e-6 after 12 blocks)."""
    torch.manual_seed(0)
    a = make_model("kat_torch").cuda().eval()
    b = make_model("kat_ours").cuda().eval()
    b.load_state_dict(a.state_dict())
    x = torch.randn(8, 3, 224, 224, device="cuda")
    with torch.no_grad():
        ya, yb = a(x), b(x)
    return ((ya - yb).norm() / ya.norm()).item()


def op_bench(batch, iters=50):
    """The activations alone at KAT-T's shapes, batch `batch` (197 tokens): act1 on the fp32
    LayerNorm output (C = 192), act2 on the bf16 fc1 output (C = 768; DeiT-T's GELU sits there).
    Forward, and forward + backward (grad of a fixed random dy), ms per call (CUDA events, median;
    the same time_it as the models). Returns markdown rows."""
    from torch_gpu_bench import time_it
    rows = []
    for name, C, dtype in (("act1", 192, torch.float32), ("act2", 768, torch.bfloat16)):
        x = torch.randn(batch, 197, C, device="cuda", dtype=dtype, requires_grad=True)
        dy = torch.randn_like(x)
        for label, mod in (("GELU (DeiT-T's)", nn.GELU()), ("GR-KAN plain ops", TorchRational(8, "swish")),
                           ("kat.torch.GRKAN", GRKAN(8, "swish"))):
            mod = mod.cuda()
            params = [x] + list(mod.parameters())

            def fwd():
                with torch.no_grad():
                    mod(x)

            def fwd_bwd():
                torch.autograd.grad(mod(x), params, dy)

            tf, _ = time_it(fwd, 5, iters)
            tb, _ = time_it(fwd_bwd, 5, iters)
            gb = x.numel() * x.element_size() / 1e9  # one pass over x
            rows.append(f"| {name} {tuple(x.shape)} {str(dtype).replace('torch.', '')} | {label} | {tf * 1e3:.1f} | "
                        f"{tb * 1e3:.1f} | {2 * gb / (tf * 1e-3):.0f} | {5 * gb / (tb * 1e-3):.0f} |")
    head = ["| activation | implementation | forward us | forward+backward us | fwd GB/s (x read + y written) | "
            "fwd+bwd GB/s (5 passes) |", "|---|---|---|---|---|---|"]
    return head + rows


def profile(kind, batch, path, steps=3, compile_=False):
    """torch.profiler over `steps` train steps (eager, or torch.compile'd with compile_): the top
    operators by CUDA time, and the step's wall time next to the summed kernel time (a step whose
    kernels sum to much less than its wall time is waiting for the host). Compiled, the header also
    gives dynamo's graph count and graph breaks (a break splits the step into graphs that inductor
    cannot fuse across)."""
    import torch.nn.functional as F
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as tprofile
    torch.manual_seed(0)
    model = make_model(kind).cuda().train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0.05, fused=True)
    x = torch.randn(batch, 3, 224, 224, device="cuda")
    t = torch.softmax(torch.randn(batch, 1000, device="cuda"), dim=1)
    fwd = model
    if compile_:
        from torch._dynamo.utils import counters
        torch._dynamo.reset()
        counters.clear()
        fwd = torch.compile(model)

    def step():
        opt.zero_grad(set_to_none=True)
        with torch.autocast("cuda", dtype=torch.bfloat16):
            loss = F.cross_entropy(fwd(x).float(), t, label_smoothing=0.1)
        loss.backward()
        opt.step()

    for _ in range(10 if compile_ else 5):
        step()
    graphs = ""
    if compile_:
        breaks = sum(counters["graph_break"].values())
        reasons = "; ".join(f"{k[:120]} x{v}" for k, v in counters["graph_break"].items())
        graphs = (f"# dynamo: {counters['stats'].get('unique_graphs', 0)} graphs, {breaks} graph breaks"
                  f"{': ' + reasons if reasons else ''}\n")
    torch.cuda.synchronize()
    with tprofile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        e0, e1 = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        e0.record()
        for _ in range(steps):
            step()
        e1.record()
        e1.synchronize()
    wall = e0.elapsed_time(e1) / steps
    from torch.autograd import DeviceType
    # Kernel time: the device-side events themselves (each kernel once; the ops' own totals would
    # count a kernel again under each op above it).
    kernels_ms = sum(e.time_range.elapsed_us() for e in prof.events() if e.device_type == DeviceType.CUDA)
    kernels_ms /= 1e3 * steps
    events = prof.key_averages()
    attr = "self_device_time_total" if hasattr(events[0], "self_device_time_total") else "self_cuda_time_total"
    with open(path, "w") as f:
        f.write(f"# {kind}, batch {batch}, {steps} {'compiled' if compile_ else 'eager'} train steps under "
                "torch.profiler\n" + graphs)
        f.write(f"# per step: wall {wall:.2f} ms (CUDA events), summed kernel time {kernels_ms:.2f} ms (a gap: "
                "the GPU waited for the host)\n\n")
        f.write(events.table(sort_by=attr, row_limit=45, max_name_column_width=70))
        f.write("\n\n# by CPU time\n")
        f.write(events.table(sort_by="self_cpu_time_total", row_limit=30, max_name_column_width=70))
    del model, opt, fwd
    torch.cuda.empty_cache()
    return wall, kernels_ms


NAMES = {"deit": "timm DeiT-T (GELU MLP)", "kat_torch": "KAT-T, GR-KAN as plain PyTorch ops",
         "kat_ours": "KAT-T, kat.torch.GRKAN (our kernels)"}


def render(header, results, batches):
    """The markdown table (and CSV lines) of the rows measured so far."""
    base = {(r[0], r[2]): r for r in results if r[1] == "deit"}
    lines = header + ["| model | params | batch | mode | train img/s | train MiB | train vs DeiT-T | infer img/s | "
                      "infer MiB | infer vs DeiT-T |", "|---|---|---|---|---|---|---|---|---|---|"]
    csv_rows = ["model,batch,mode,params,train_img_per_s,train_mib,train_vs_deit,infer_img_per_s,infer_mib,"
                "infer_vs_deit"]
    for batch, kind, mname, params, trs, trm, ins, inm in sorted(results, key=lambda r: (r[2] != "eager", r[0])):
        d = base.get((batch, mname))
        rt = trs / d[4] if d else float("nan")
        ri = ins / d[6] if d else float("nan")
        lines.append(f"| {NAMES[kind]} | {params:,} | {batch} | {mname} | {trs:.0f} | {trm:.0f} | {rt:.3f} | "
                     f"{ins:.0f} | {inm:.0f} | {ri:.3f} |")
        csv_rows.append(f"{kind},{batch},{mname},{params},{trs:.1f},{trm:.0f},{rt:.4f},{ins:.1f},{inm:.0f},{ri:.4f}")
    # Each model at its fastest batch (the comparison at each side's best operating point).
    best = {}
    for r in results:
        for what, col in (("train", 4), ("infer", 6)):
            k = (r[1], r[2], what)
            if k not in best or r[col] > best[k][0]:
                best[k] = (r[col], r[0])
    if len(batches) > 1:
        lines += ["", "Each model at its fastest batch of those run:", "",
                  "| model | mode | best train img/s (batch) | vs DeiT-T best | best infer img/s (batch) | "
                  "vs DeiT-T best |", "|---|---|---|---|---|---|"]
        for mname in ("eager", "compile"):
            for kind in NAMES:
                if (kind, mname, "train") not in best:
                    continue
                tr, tb = best[(kind, mname, "train")]
                inf, ib = best[(kind, mname, "infer")]
                dt = best.get(("deit", mname, "train"), (float("nan"),))[0]
                di = best.get(("deit", mname, "infer"), (float("nan"),))[0]
                lines.append(f"| {NAMES[kind]} | {mname} | {tr:.0f} ({tb}) | {tr / dt:.3f} | {inf:.0f} ({ib}) | "
                             f"{inf / di:.3f} |")
    return "\n".join(lines) + "\n", "\n".join(csv_rows) + "\n"


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batch", default="256", help="batch size, or a comma-separated list (e.g. 256,512)")
    ap.add_argument("--iters", type=int, default=20)
    ap.add_argument("--no-compile", action="store_true", help="eager rows only")
    ap.add_argument("--compile-batches", default="first",
                    help="batches that also get the torch.compile rows: first (default), all, or a list")
    ap.add_argument("--out", default=None, help="directory for table.md, results.csv, op_bench.md, profile_*.txt "
                    "(table.md and results.csv rewritten after every row)")
    ap.add_argument("--profile", action="store_true", help="torch.profiler of eager steps of DeiT-T and of "
                    "KAT-T with our op at the first batch (profile_<model>.txt in --out), and of compiled steps "
                    "when compile rows run (profile_<model>_compile.txt: also dynamo's graphs and graph breaks)")
    ap.add_argument("--no-op-bench", action="store_true", help="skip the activation-alone timings")
    a = ap.parse_args()
    batches = [int(b) for b in a.batch.split(",") if b]
    if a.no_compile:
        compile_at = set()
    elif a.compile_batches == "first":
        compile_at = {batches[0]}
    elif a.compile_batches == "all":
        compile_at = set(batches)
    else:
        compile_at = {int(b) for b in a.compile_batches.split(",") if b}
    out = a.out
    if out:
        os.makedirs(out, exist_ok=True)
    header = [f"torch {torch.__version__}, {torch.cuda.get_device_name(0)}, bf16 autocast, fused AdamW, drop_path "
              f"0.1, {a.iters} timed iterations (median); KAT-T logits, our op vs plain ops (fp32, 8 images): rel "
              f"diff {same_function_check():.2e}", ""]
    print(header[0], file=sys.stderr, flush=True)
    results = []  # (batch, kind, mode, params, train img/s, train MiB, infer img/s, infer MiB)

    def run(batch, mname, comp):
        # Compiled: our op before the plain-ops KAT-T (whose compile is the longest), so a time
        # limit cuts the row that matters least.
        for kind in ("deit", "kat_ours", "kat_torch") if comp else ("deit", "kat_torch", "kat_ours"):
            try:
                params, (tr, trm), (inf, infm) = bench(kind, batch, a.iters, comp)
            except Exception as e:  # keep the other rows (e.g. compile failing on a bare machine)
                print(f"  b{batch} {kind} {mname}: failed: {type(e).__name__}: {e}", file=sys.stderr, flush=True)
                continue
            results.append((batch, kind, mname, params, batch / (tr * 1e-3), trm, batch / (inf * 1e-3), infm))
            print(f"  b{batch} {kind:9s} {mname:7s} train {tr:8.2f} ms  infer {inf:8.2f} ms", file=sys.stderr,
                  flush=True)
            if out:  # a run cut short still leaves the rows measured so far
                text, csv_text = render(header, results, batches)
                with open(os.path.join(out, "table.md"), "w") as f:
                    f.write(text)
                with open(os.path.join(out, "results.csv"), "w") as f:
                    f.write(csv_text)

    # Eager rows, then the activations alone and the profile, then the compiled rows (the slowest
    # part: a time limit cuts them, not the rest).
    for batch in batches:
        run(batch, "eager", False)
    if not a.no_op_bench:
        ops = "\n".join(op_bench(batches[0])) + "\n"
        print(ops, file=sys.stderr, flush=True)
        if out:
            with open(os.path.join(out, "op_bench.md"), "w") as f:
                f.write(f"batch {batches[0]}, 197 tokens, CUDA events, median of 50\n\n" + ops)
    if a.profile and out:
        for kind in ("deit", "kat_ours"):
            wall, kern = profile(kind, batches[0], os.path.join(out, f"profile_{kind}.txt"))
            print(f"profile {kind}: step {wall:.2f} ms, summed kernel time {kern:.2f} ms", file=sys.stderr,
                  flush=True)
    for batch in batches:
        if batch in compile_at:
            run(batch, "compile", True)
    if a.profile and out and compile_at:
        # After the compiled rows (a time limit cuts this first): where a compiled KAT-T step's time goes
        # next to a compiled DeiT-T's (session 9: 31.0 vs 19.5 ms per step, eager 35.3 vs 33.5).
        for kind in ("deit", "kat_ours"):
            try:
                wall, kern = profile(kind, min(compile_at), os.path.join(out, f"profile_{kind}_compile.txt"),
                                     compile_=True)
            except Exception as e:
                print(f"profile {kind} compiled: failed: {type(e).__name__}: {e}", file=sys.stderr, flush=True)
                continue
            print(f"profile {kind} compiled: step {wall:.2f} ms, summed kernel time {kern:.2f} ms", file=sys.stderr,
                  flush=True)
    text, _ = render(header, results, batches)
    print(text, flush=True)
    if not a.no_op_bench:
        print(ops, flush=True)


if __name__ == "__main__":
    main()
