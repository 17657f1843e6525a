"""What every benchmark entry point does first: BLAS threads capped, float64 on (the
benchmarks are entry points, so they may set JAX's global config), the device line.
Timing: :func:`invphys.experiments.timing.time_call` (compile and run apart)."""

from __future__ import annotations

import os

# BLAS threads are capped before numpy/scipy load: numpy beside JAX in one process
# otherwise fights for the cores (a 64 x 62 SVD measured 95 ms instead of 0.2 ms).
for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import jax  # noqa: E402

jax.config.update("jax_enable_x64", True)


def device_line() -> str:
    d = jax.devices()[0]
    return f"device: {d.platform} ({d.device_kind}), {len(jax.devices())} device(s), " \
           f"jax {jax.__version__}, float64"



def peak_rss_mib() -> float:
    """The process's peak resident set size so far, in MiB (``resource.getrusage``;
    Linux reports KiB, macOS bytes)."""
    import resource
    import sys

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1024.0**2 if sys.platform == "darwin" else 1024.0)
