"""Training optimizers by name: what ``[train] optimizer`` and ``invphys train --optimizer``
select. Every entry is an optax transformation that accepts the trainer's extra
arguments (:mod:`._trainer`); the Gauss-Newton family comes from :mod:`invphys.optim`.

The factory is cached on its arguments, so the same settings give the same optimizer
object and a rerun or resume reuses the compiled epoch.
"""

from __future__ import annotations

import functools

import optax

from .._configs import OPTIMIZER_NAMES
from .._errors import SpecError
from ..optim import gauss_newton, sgn_lm


def _first_order(name: str, lr: float | optax.Schedule) -> optax.GradientTransformation:
    return optax.adam(lr) if name == "adam" else optax.sgd(lr)


def _gauss_newton(name: str) -> optax.GradientTransformation:
    if name == "gn":
        return gauss_newton()
    if name == "gn-layerwise":
        return gauss_newton(mode="layerwise")
    return sgn_lm()


@functools.lru_cache(maxsize=32)
def make_optimizer(
    name: str = "adam",
    *,
    lr: float = 1e-3,
    clip_norm: float | None = None,
    schedule: str = "constant",
    lr_final: float = 0.0,
    total_steps: int = 1,
) -> optax.GradientTransformationExtraArgs:
    """The named optimizer: ``adam`` / ``sgd`` (after gradient clipping by global norm
    when ``clip_norm`` is given, with a constant or cosine learning rate), or a
    Gauss-Newton optimizer (``gn``, ``gn-layerwise``, ``sgn``: damping and line search
    set the step, so ``lr``, the clip and the schedule do not apply)."""
    if name not in OPTIMIZER_NAMES:
        raise SpecError(f"unknown optimizer {name!r} (known: {', '.join(OPTIMIZER_NAMES)})")
    if name not in ("adam", "sgd"):
        return optax.with_extra_args_support(_gauss_newton(name))
    rate: float | optax.Schedule = lr
    if schedule == "cosine":
        rate = optax.cosine_decay_schedule(lr, total_steps, alpha=lr_final)
    opt = _first_order(name, rate)
    if clip_norm is not None:
        opt = optax.chain(optax.clip_by_global_norm(clip_norm), opt)
    return optax.with_extra_args_support(opt)
