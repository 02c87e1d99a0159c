#!/usr/bin/env python3
"""img/s of a `kat train` run from its metrics.jsonl, warm-up excluded.

The per-step lines carry img_per_s = s * batch / elapsed(s) since the epoch began, so
elapsed(s) = s * batch / img_per_s, and the rate between two logged steps a < z is
(z - a) * batch / (elapsed(z) - elapsed(a)). `a` is the first logged step >= --from-step.

usage: python3 bench/train_rate.py RUN/metrics.jsonl --batch 256 [--from-step 20]
prints the rate rounded to an integer (img/s); exits 1 with a message when there are fewer than two
logged steps past --from-step (the run stopped early: see its log).
"""
import argparse
import json
import sys


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("metrics")
    ap.add_argument("--batch", type=int, required=True, help="images per optimizer step (batch x accumulation)")
    ap.add_argument("--from-step", type=int, default=1, help="first step counted (excludes warm-up)")
    a = ap.parse_args()
    try:
        with open(a.metrics) as f:
            lines = [json.loads(l) for l in f if '"img_per_s"' in l]
    except OSError as e:
        print(f"train_rate: {e}", file=sys.stderr)
        return 1
    lines = [l for l in lines if l["step"] >= a.from_step]
    if len(lines) < 2:
        print(f"train_rate: {a.metrics}: fewer than two logged steps from step {a.from_step}", file=sys.stderr)
        return 1
    first, last = lines[0], lines[-1]
    t0 = first["step"] * a.batch / first["img_per_s"]
    t1 = last["step"] * a.batch / last["img_per_s"]
    print(f"{(last['step'] - first['step']) * a.batch / (t1 - t0):.0f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
