"""Timing helpers shared by the benchmarks: compile and run measured separately."""

from __future__ import annotations

import os
import time

# BLAS threads are capped before numpy/scipy load: numpy beside JAX in one process
# otherwise fights for the cores (a 64 x 62 SVD measured 95 ms instead of 0.2 ms).
for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import jax  # noqa: E402

jax.config.update("jax_enable_x64", True)


def timed(fn, *args, repeats: int = 5):
    """(compile_seconds, best_run_seconds, output) of a jitted ``fn(*args)``."""
    t0 = time.perf_counter()
    compiled = jax.jit(fn).lower(*args).compile()
    compile_s = time.perf_counter() - t0
    out = jax.block_until_ready(compiled(*args))
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = jax.block_until_ready(compiled(*args))
        best = min(best, time.perf_counter() - t0)
    return compile_s, best, out


def device_line() -> str:
    d = jax.devices()[0]
    return f"device: {d.platform} ({d.device_kind}), {len(jax.devices())} device(s), " \
           f"jax {jax.__version__}, float64"


def first_and_best(call, repeats: int = 3):
    """(compile_seconds, best_run_seconds, output) of a zero-argument ``call`` whose first
    run compiles: compile = first run minus the best warm run."""
    t0 = time.perf_counter()
    out = jax.block_until_ready(call())
    first = time.perf_counter() - t0
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = jax.block_until_ready(call())
        best = min(best, time.perf_counter() - t0)
    return max(first - best, 0.0), best, out
