#!/usr/bin/env bash
# Session 11, #12 on the GPU (<= 590 s): bench/py_diag.sh (the C++-exception crash of the GPU image),
# pip install with CUDA, pytest on CUDA, bench/torch_grkan_train.py at batch 256 with profiles of
# eager and compiled steps (where compiled KAT-T's 31.0 ms vs DeiT-T's 19.5 ms go).
#   run(command="bash bench/records/2026-12-08-s11-h100/call2.sh")
set -u
DIAG=1 BATCHES=256 PYTEST_TIMEOUT=150 BENCH_TIMEOUT=300 timeout -k 5 585 bash bench/py_gpu.sh
# At most 8 files come back: one archive of everything, and the summaries beside it.
cd "$OUT" && tar czf all.tgz py_diag py_gpu 2>/dev/null
cp py_diag/summary.md diag_summary.md 2>/dev/null; cp py_gpu/steps.txt py_steps.txt 2>/dev/null
cp py_gpu/pytest_gpu.txt pytest_gpu.txt 2>/dev/null
rm -rf py_diag py_gpu
cat diag_summary.md 2>/dev/null | head -40
