#!/usr/bin/env python3
"""Runs the C++-exception cases of bench/py_diag.sh against each build, one child interpreter per
case, and writes what each did (exit status, last lines) to OUT/summary.md and OUT/cases/*.log.

The crash being chased (GPU machine only: Ubuntu 24.04, g++ 13.3, Python 3.12.3, torch 2.11):
the interpreter died with SIGSEGV at `kat._ops.forward(...)` raising a kat::Error for a bad
shape, after kat._ops.init_coefficients("relu") had raised its kat::Error fine in the same process.
The cases separate the steps that differ between those two calls: how the message is built (an
ostringstream, KAT_CHECK / GrkanShape::validate, vs std::string +), where the throw is (the module
vs the op's static library), how the error becomes a Python exception (a registered translator vs
a nanobind builtin exception), the GIL, keyword arguments, and what the process loaded first
(nothing, torch, a CUDA context, kat.torch after running the op on the GPU).

usage: bench/py_diag.py OUT name=SITE_DIR [name=SITE_DIR ...]   (SITE_DIR holds the package kat)
       env PY_DIAG_BUDGET_S (default 100), PY_DIAG_JOBS (default 12): stop starting cases after that many seconds
"""
import os
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

PY = sys.executable

# Code run before a case: what the process has loaded when the exception is thrown.
PREFIXES = {
    "bare": "",
    "torch": "import torch\n",
    "cuda_ctx": "import torch\ntorch.zeros(1, device='cuda')\ntorch.cuda.synchronize()\n",
    # What the pytest run had done before its crash: the op on the GPU, forward and backward.
    "op_used": ("import torch\nfrom kat.torch import GRKAN\nm = GRKAN(8, 'swish').cuda()\n"
                "x = torch.randn(4, 16, device='cuda', requires_grad=True)\nm(x).sum().backward()\n"
                "torch.cuda.synchronize()\n"),
}
# "pytest": op_used's code and the case inside a test function run by pytest (its plugins loaded,
# as in the run that crashed).
PYTEST = "pytest"

# name -> (statement raising an exception, or returning; expected exception type or None)
FWD = "rows=1, groups=8, num_rows=1, m=5, n=4"
CASES = {
    # kat._ops itself
    "ops_forward_kw": (f"from kat import _ops; _ops.forward(-1, 'f32', 0, 0, 0, 0, dim=10, {FWD})", "ValueError"),
    "ops_forward_pos": ("from kat import _ops; _ops.forward(-1, 'f32', 0, 0, 0, 0, 1, 10, 8, 1, 5, 4)", "ValueError"),
    "ops_forward_dtype": (f"from kat import _ops; _ops.forward(-1, 'i8', 0, 0, 0, 0, dim=8, {FWD})", "ValueError"),
    "ops_workspace": ("from kat import _ops; _ops.backward_workspace_bytes(-1, 1, 10, 8, 1, 5, 4)", "ValueError"),
    "ops_init": ("from kat import _ops; _ops.init_coefficients('relu')", "ValueError"),
    # the pytest run's order: init_coefficients' error first (passed there), then forward's (crashed)
    "ops_init_then_forward": ("from kat import _ops\ntry:\n    _ops.init_coefficients('relu')\n"
                              "except ValueError:\n    pass\n"
                              f"_ops.forward(-1, 'f32', 0, 0, 0, 0, dim=10, {FWD})", "ValueError"),
    # kat._diag (src/python/diag_module.cpp): one way of throwing each
    "diag_throw_string": ("from kat import _diag; _diag.throw_string()", "ValueError"),
    "diag_throw_concat": ("from kat import _diag; _diag.throw_concat(10, 8)", "ValueError"),
    "diag_throw_validate": ("from kat import _diag; _diag.throw_validate(10, 8)", "ValueError"),
    "diag_throw_in_library": ("from kat import _diag; _diag.throw_in_library('relu')", "ValueError"),
    "diag_concat_only": ("from kat import _diag; print(_diag.concat_only(3))", None),
    "diag_caught_locally": ("from kat import _diag; print(_diag.caught_locally(10, 8))", None),
    "diag_throw_runtime": ("from kat import _diag; _diag.throw_runtime()", "RuntimeError"),
    "diag_throw_nb_value_error": ("from kat import _diag; _diag.throw_nb_value_error()", "ValueError"),
    "diag_throw_without_gil": ("from kat import _diag; _diag.throw_without_gil(10, 8)", "ValueError"),
}
# The few cases worth every prefix and every build; the rest run bare and after `import torch`,
# on the builds named in FULL_BUILDS.
KEY_CASES = ["ops_forward_kw", "ops_init_then_forward", "diag_throw_concat", "diag_throw_string",
             "diag_throw_nb_value_error"]
FULL_BUILDS = ("orig", "ship")


def snippet(prefix, stmt, expect):
    body = "\n".join("    " + line for line in stmt.splitlines())
    if expect is None:
        return f"{PREFIXES[prefix]}{stmt}\nprint('DIAG-OK returned')\n"
    return (f"{PREFIXES[prefix]}try:\n{body}\nexcept {expect} as e:\n"
            f"    print('DIAG-OK', type(e).__name__, str(e)[:120])\nelse:\n    print('DIAG-NO-ERROR')\n")


def describe(rc, out):
    if rc is None:
        return "TIMEOUT"
    if rc < 0:
        try:
            return f"CRASH {signal.Signals(-rc).name}"
        except ValueError:
            return f"CRASH signal {-rc}"
    if "DIAG-OK" in out and rc == 0:  # (pytest -s passes the case's print through)
        return "ok"
    if "DIAG-NO-ERROR" in out:
        return "no error raised"
    return f"exit {rc}"


def run_case(build, site, prefix, case, logdir):
    stmt, expect = CASES[case]
    env = dict(os.environ, PYTHONPATH=site, PYTHONUNBUFFERED="1", PYTHONFAULTHANDLER="1")
    if prefix == PYTEST:
        body = snippet("op_used", stmt, expect)
        code = "def test_case():\n" + "".join("    " + line + "\n" for line in body.splitlines())
        path = os.path.join(logdir, f"test_{build}__{case}.py")
        with open(path, "w") as f:
            f.write(code)
        cmd = [PY, "-X", "faulthandler", "-m", "pytest", "-q", "-s", "-p", "no:cacheprovider", path]
    else:
        code = snippet(prefix, stmt, expect)
        cmd = [PY, "-X", "faulthandler", "-c", code]
    t0 = time.time()
    try:
        r = subprocess.run(cmd, env=env, cwd="/tmp", capture_output=True, text=True, timeout=90)
        rc, out, err = r.returncode, r.stdout, r.stderr
    except subprocess.TimeoutExpired as e:
        rc, out, err = None, str(e.stdout or ""), str(e.stderr or "")
    what = describe(rc, out)
    with open(os.path.join(logdir, f"{build}__{prefix}__{case}.log"), "w") as f:
        f.write(f"# build {build} ({site}), prefix {prefix}, case {case}: {what} ({time.time() - t0:.1f} s)\n")
        f.write(f"# code:\n{code}\n# stdout:\n{out}\n# stderr:\n{err}\n")
    last = (err.strip().splitlines() or out.strip().splitlines() or [""])
    return build, prefix, case, what, code, last[-1][:160]


def main():
    out = sys.argv[1]
    builds = dict(a.split("=", 1) for a in sys.argv[2:])
    logdir = os.path.join(out, "cases")
    os.makedirs(logdir, exist_ok=True)
    budget = float(os.environ.get("PY_DIAG_BUDGET_S", "100"))
    jobs = []
    for prefix in list(PREFIXES) + [PYTEST]:  # bare and torch first on every build (a budget cut
        for build in builds:                     # falls on the tail)
            for case in CASES:
                full = build in FULL_BUILDS and prefix in ("bare", "torch")
                if full or case in KEY_CASES:
                    jobs.append((build, prefix, case))
    t0 = time.time()
    results = []

    def go(job):
        if time.time() - t0 > budget:
            return job + ("not run (time budget)", "", "")
        b, p, c = job
        return run_case(b, builds[b], p, c, logdir)

    workers = int(os.environ.get("PY_DIAG_JOBS", "12"))
    with ThreadPoolExecutor(max_workers=max(1, min(workers, os.cpu_count() or 2))) as ex:
        results = list(ex.map(go, jobs))
    lines = [f"# py_diag: {len(results)} cases, {time.time() - t0:.0f} s, python {sys.version.split()[0]} ({PY})", "",
             "| build | prefix | case | outcome | last line |", "|---|---|---|---|---|"]
    for b, p, c, what, _, last in results:
        lines.append(f"| {b} | {p} | {c} | {what} | {last.replace('|', '/')} |")
    crashes = [r for r in results if r[3].startswith(("CRASH", "TIMEOUT"))]
    lines += ["", f"crashed or hung: {len(crashes)} of {len(results)}"]
    text = "\n".join(lines) + "\n"
    open(os.path.join(out, "summary.md"), "w").write(text)
    print(text)
    # The case to put under a debugger: the first crash, preferring the debug build and the fewest
    # things loaded (written for py_diag.sh).
    order = {name: i for i, name in enumerate(["bare", "torch", "cuda_ctx", "op_used", PYTEST])}
    crashes.sort(key=lambda r: (r[0] != "dbg", order.get(r[1], 9)))
    if crashes:  # first_crash.env: site folder, case name, how to run first_crash.py (script/pytest)
        b, p, c, _, code, _ = crashes[0]
        with open(os.path.join(out, "first_crash.env"), "w") as f:
            f.write(f"{builds[b]}\n{b}__{p}__{c}\n{'pytest' if p == PYTEST else 'script'}\n")
        with open(os.path.join(out, "first_crash.py"), "w") as f:
            f.write(code)


if __name__ == "__main__":
    main()
