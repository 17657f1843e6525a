"""The one timing helper of experiments and benchmarks: compile and run measured apart.

    t = time_call(fn, *args, repeats=5)        # first call compiles, then best of 5
    t.compile_s, t.run_s, t.median_s, t.output

* ``aot=False`` (default): the first call compiles and runs (``first_s``); ``compile_s``
  is that call minus the best warm run. Works for anything that returns JAX arrays (or
  NumPy, or a SciPy result): the output is ``jax.block_until_ready``-ed after each call.
* ``aot=True``: ``jax.jit(fn).lower(*args).compile()`` is timed on its own as
  ``compile_s`` (exact), then the compiled function is called once untimed and timed
  ``repeats`` times; ``Timing.compiled`` holds it for reuse on new arguments.
* ``warmup=False``: no first call (``fn`` is already compiled); ``compile_s = 0``.
* ``budget_s``: stop repeating once the timed calls add up to more than this (one call
  when a single one is longer): a shared machine's clock is noisy, a long call is not.

``run_s`` is the best (fastest) of the timed calls, the default statistic everywhere;
``median_s`` is there for tables that report medians (the NIST benchmark).
This module changes no global JAX configuration.
"""

from __future__ import annotations

import dataclasses
import statistics
import time
from collections.abc import Callable
from typing import Any

import jax


@dataclasses.dataclass(frozen=True)
class Timing:
    """Wall-clock seconds of one timed function: ``compile_s`` (compilation alone),
    ``runs`` (each timed call), the last ``output`` and, with ``aot``, ``compiled``."""

    compile_s: float
    runs: tuple[float, ...]
    output: Any
    first_s: float | None = None
    compiled: Callable | None = None

    @property
    def run_s(self) -> float:
        """The fastest timed call."""
        return min(self.runs)

    @property
    def median_s(self) -> float:
        return statistics.median(self.runs)


def _call(fn: Callable, args: tuple) -> tuple[float, Any]:
    t0 = time.perf_counter()
    out = jax.block_until_ready(fn(*args))
    return time.perf_counter() - t0, out


def compile_ahead(fn: Callable, *args) -> tuple[Callable, float]:
    """``(compiled, seconds)``: ``fn`` (jitted here if it is not) lowered and compiled
    for ``args`` ahead of time."""
    jitted = fn if hasattr(fn, "lower") else jax.jit(fn)
    t0 = time.perf_counter()
    compiled = jitted.lower(*args).compile()
    return compiled, time.perf_counter() - t0


def time_call(fn: Callable, *args, repeats: int = 3, budget_s: float | None = None,
              aot: bool = False, warmup: bool = True) -> Timing:
    """Time ``fn(*args)``: compilation apart, then the best of ``repeats`` calls (see the
    module docstring for ``aot``, ``warmup`` and ``budget_s``)."""
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}")
    compiled, compile_s, first_s, out = None, 0.0, None, None
    if aot:
        compiled, compile_s = compile_ahead(fn, *args)
        fn = compiled
        if warmup:
            _, out = _call(fn, args)
    elif warmup:
        first_s, out = _call(fn, args)
    runs: list[float] = []
    for _ in range(repeats):
        dt, out = _call(fn, args)
        runs.append(dt)
        if budget_s is not None and sum(runs) > budget_s:
            break
    if first_s is not None:
        compile_s = max(first_s - min(runs), 0.0)
    return Timing(compile_s=compile_s, runs=tuple(runs), output=out, first_s=first_s,
                  compiled=compiled)
