"""The one training harness: a task (what to learn) x an optimizer (how) x this loop.

A *task* (:class:`AbstractTask`) says how to initialise a model, how to split an epoch
into minibatch steps (:meth:`~AbstractTask.plan`), what the model outputs on a batch
(:meth:`~AbstractTask.outputs`), the loss as a function of those outputs
(:meth:`~AbstractTask.loss`), and what to measure at the end of an epoch. The Deceptron,
the MLP Deceptron and DeceptronNet are tasks; so is anything a user writes.

The *optimizer* is any ``optax.GradientTransformation`` (wrapped to accept extra
arguments). Every step calls it with the extra arguments of the contract documented
in :mod:`invphys.optim` (``model_fn``: the model on this batch as a function of
``params``; ``loss_fn``: the loss as a function of the outputs; ``value``, ``grad``,
``value_fn``, ``key``), so a curvature-aware optimizer (the Gauss-Newton family, which
forms J^T H_loss J products from ``model_fn`` and ``loss_fn``) plugs in with no change
to the loop. ``params`` is the trainable part of the model (``eqx.partition(model,
eqx.is_inexact_array)``). Optax's own line searches reject keywords their ``value_fn``
does not take: pass ``optax.lbfgs()`` wrapped in :func:`invphys.optim.with_contract`.

The loop: one progress bar, the training state saved atomically after every epoch
(:mod:`._store`), and bit-identical resume: an epoch's randomness comes from the task's
seed folded with the epoch number, so a run resumed after epoch k replays exactly the
epochs an uninterrupted run would. An epoch is one jitted call (a ``lax.scan`` over its
steps) unless the task sets ``steps_per_call`` (XLA:CPU runs convolutions inside loop
constructs several times slower, so DeceptronNet steps one jitted batch at a time).
"""

from __future__ import annotations

import abc
import functools
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, ClassVar

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jaxtyping import Array, Float, Int, PRNGKeyArray, PyTree

from .._errors import NonFiniteError
from ._store import check_out_dir, load_state, save_state

#: Folded into the task's seed for the optimizer's per-step keys.
_OPT_STREAM = 0x6F7074


class TrainState(eqx.Module):
    """Everything a run carries from one epoch to the next.

    ``epoch`` counts completed epochs; ``extra`` is what the task carries (the
    Deceptron's JCP trigger and last validation MSE); ``elapsed_s`` is the training time
    so far, (wall, process CPU) seconds (bookkeeping only; float32 whatever the x64
    setting, so a state saved in one loads in the other).
    """

    model: PyTree
    opt_state: PyTree
    epoch: Int[Array, ""]
    extra: PyTree
    elapsed_s: Float[Array, "2"]


class AbstractTask(abc.ABC):
    """What to learn. Subclasses are frozen, hashable dataclasses (the compiled epoch is
    cached on the task and the optimizer); data arrays are passed to the methods.

    Every method but :meth:`init_model`, :meth:`skeleton` and :meth:`end_epoch` is
    traced; :meth:`end_epoch` is traced too when ``steps_per_call`` is None.
    """

    #: None: one jitted call per epoch; k: a Python loop over jitted calls of k steps.
    steps_per_call: ClassVar[int | None] = None
    #: What the progress bar counts: "epoch", or "batch" (with ``steps_per_call``).
    unit: ClassVar[str] = "epoch"
    seed: int

    @abc.abstractmethod
    def init_model(self, data: Mapping[str, Array]) -> PyTree:
        """The seeded initial model."""

    @abc.abstractmethod
    def skeleton(self) -> PyTree:
        """A model of the right structure, shapes and dtypes (for loading weights)."""

    def init_extra(self, model: PyTree, data: Mapping[str, Array]) -> PyTree:
        """What the task carries between epochs (default: nothing)."""
        return None

    def skeleton_extra(self) -> PyTree:
        """:meth:`init_extra`'s structure, without data (for loading a state)."""
        return None

    @abc.abstractmethod
    def plan(self, epoch: Int[Array, ""], extra: PyTree,
             data: Mapping[str, Array]) -> tuple[PyTree, PyTree]:
        """``(steps, ctx)``: per-step inputs with a leading steps axis (batch indices,
        probes) and the epoch's constants, drawn from the seed and ``epoch`` alone."""

    @abc.abstractmethod
    def batch(self, data: Mapping[str, Array], step: PyTree) -> PyTree:
        """The batch of one step (gathered from ``data``)."""

    @abc.abstractmethod
    def outputs(self, model: PyTree, batch: PyTree, ctx: PyTree) -> PyTree:
        """The model's outputs on a batch: the ``model_fn`` a Gauss-Newton step
        linearises. Everything the loss needs from the parameters goes here."""

    @abc.abstractmethod
    def loss(self, outputs: PyTree, batch: PyTree,
             ctx: PyTree) -> tuple[Float[Array, ""], dict[str, Array]]:
        """``(loss, terms)`` from the outputs (the ``loss_fn``; convex in the outputs
        for the Gauss-Newton matrix to be positive semidefinite)."""

    @abc.abstractmethod
    def end_epoch(self, model: PyTree, extra: PyTree, ctx: PyTree, aux: PyTree,
                  data: Mapping[str, Array]) -> tuple[PyTree, dict[str, Any]]:
        """``(extra, metrics)`` after an epoch; ``aux`` stacks each step's
        ``{"loss": ..., **terms}``."""

    def describe(self) -> str:
        """The progress bar's label."""
        return type(self).__name__

    def postfix(self, metrics: Mapping[str, Any]) -> dict[str, str]:
        """What the progress bar shows after an epoch."""
        return {k: f"{v:.3g}" for k, v in metrics.items() if isinstance(v, float)}


def _one_step(task, optimizer, static, data, ctx, opt_key, epoch, params, opt_state, inp):
    step, i = inp
    batch = task.batch(data, step)

    def model_fn(p):
        return task.outputs(eqx.combine(p, static), batch, ctx)

    def loss_fn(out):
        return task.loss(out, batch, ctx)[0]

    def value_fn(p):
        return loss_fn(model_fn(p))

    (loss, terms), grads = jax.value_and_grad(
        lambda p: task.loss(model_fn(p), batch, ctx), has_aux=True)(params)
    key = jax.random.fold_in(jax.random.fold_in(opt_key, epoch), i)
    updates, opt_state = optimizer.update(
        grads, opt_state, params, model_fn=model_fn, loss_fn=loss_fn, value=loss,
        grad=grads, value_fn=value_fn, key=key)
    return eqx.apply_updates(params, updates), opt_state, {"loss": loss, **terms}


@functools.lru_cache(maxsize=16)
def compiled(task: AbstractTask, optimizer: optax.GradientTransformationExtraArgs):
    """``(epoch_fn, plan_fn, steps_fn, end_fn)`` for a task and optimizer, cached so that a
    resume or a rerun reuses the compiled code. ``epoch_fn`` fuses a whole epoch."""
    opt_key = jax.random.fold_in(jax.random.key(task.seed), _OPT_STREAM)

    def run_steps(params, opt_state, static, data, ctx, epoch, steps, first):
        def body(carry, inp):
            p, s, aux = _one_step(task, optimizer, static, data, ctx, opt_key, epoch,
                                  *carry, inp)
            return (p, s), aux

        n = jax.tree_util.tree_leaves(steps)[0].shape[0]
        return jax.lax.scan(body, (params, opt_state), (steps, first + jnp.arange(n)))

    @eqx.filter_jit
    def epoch_fn(state: TrainState, data):
        steps, ctx = task.plan(state.epoch, state.extra, data)
        params, static = eqx.partition(state.model, eqx.is_inexact_array)
        (params, opt_state), aux = run_steps(params, state.opt_state, static, data, ctx,
                                             state.epoch, steps, 0)
        model = eqx.combine(params, static)
        extra, metrics = task.end_epoch(model, state.extra, ctx, aux, data)
        return TrainState(model=model, opt_state=opt_state, epoch=state.epoch + 1,
                          extra=extra, elapsed_s=state.elapsed_s), metrics

    plan_fn = eqx.filter_jit(task.plan)

    @eqx.filter_jit
    def steps_fn(model, opt_state, data, ctx, epoch, steps, first):
        params, static = eqx.partition(model, eqx.is_inexact_array)
        (params, opt_state), aux = run_steps(params, opt_state, static, data, ctx, epoch,
                                             steps, first)
        return eqx.combine(params, static), opt_state, aux

    return epoch_fn, plan_fn, steps_fn


def init_state(task: AbstractTask, optimizer, model: PyTree,
               data: Mapping[str, Array] | None) -> TrainState:
    """The state before epoch 0 (with ``data=None``: the skeleton's, for loading)."""
    extra = task.init_extra(model, data) if data is not None else task.skeleton_extra()
    return TrainState(
        model=model, opt_state=optimizer.init(eqx.filter(model, eqx.is_inexact_array)),
        epoch=jnp.zeros((), jnp.int32), extra=extra, elapsed_s=jnp.zeros((2,), jnp.float32))


def _stepwise_epoch(task, optimizer, state: TrainState, data, bar):
    _, plan_fn, steps_fn = compiled(task, optimizer)
    steps, ctx = plan_fn(state.epoch, state.extra, data)
    n = jax.tree_util.tree_leaves(steps)[0].shape[0]
    k = task.steps_per_call
    model, opt_state, auxes = state.model, state.opt_state, []
    for first in range(0, n, k):
        chunk = jax.tree.map(lambda a, f=first: a[f:f + k], steps)
        model, opt_state, aux = steps_fn(model, opt_state, data, ctx, state.epoch, chunk,
                                         first)
        auxes.append(aux)
        if bar is not None:
            bar.update(jax.tree_util.tree_leaves(chunk)[0].shape[0])
    aux = jax.tree.map(lambda *a: np.concatenate(a), *jax.device_get(auxes))
    extra, metrics = task.end_epoch(model, state.extra, ctx, aux, data)
    return TrainState(model=model, opt_state=opt_state, epoch=state.epoch + 1, extra=extra,
                      elapsed_s=state.elapsed_s), metrics


def fit(
    task: AbstractTask,
    data: Mapping[str, Array],
    optimizer: optax.GradientTransformation,
    *,
    epochs: int,
    config: Mapping[str, Any],
    digest: str,
    out: str | Path | None = None,
    resume: bool = False,
    overwrite: bool = False,
    progress: bool = False,
    stop_after: int | None = None,
    steps_per_epoch: int | None = None,
    extra_files: tuple[str, ...] = (),
    on_epoch: Callable[[TrainState, dict], None] | None = None,
) -> tuple[TrainState, list[dict[str, Any]]]:
    """Train ``task`` on ``data`` with ``optimizer`` for ``epochs`` and return
    ``(state, history)`` (one dict per completed epoch).

    Arguments:
        config: the run's configuration (recorded in the saved state; a resume must
            match it).
        digest: the data's digest (a resume must match it).
        out: folder for the resumable state (``state.eqx``, ``state.json``,
            ``log.jsonl``), saved atomically after every epoch.
        resume: continue from the state in ``out``; ``overwrite``: start afresh.
        progress: a tqdm bar (epochs, or batches for a stepwise task).
        stop_after: stop after this many completed epochs (as if interrupted).
        steps_per_epoch: the number of steps (for a batch-counting bar).
        extra_files: the task's own checkpoint files (cleared with ``overwrite``).
        on_epoch: called with the state and the history entry after every epoch.
    """
    optimizer = as_extra_args(optimizer)
    out = Path(out) if out is not None else None
    state, history = None, []
    if out is not None:
        check_out_dir(out, resume=resume, overwrite=overwrite, extra_files=extra_files)
        if resume:
            like = lambda: init_state(task, optimizer, task.skeleton(), None)  # noqa: E731
            loaded = load_state(out, like, config, digest)
            if loaded is not None:
                state, history = loaded
    if state is None:
        state = init_state(task, optimizer, task.init_model(data), data)

    start = int(state.epoch)
    last = epochs if stop_after is None else min(epochs, stop_after)
    per = steps_per_epoch if task.unit == "batch" and steps_per_epoch else 1
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=epochs * per, initial=start * per, desc=task.describe(),
                   unit=task.unit, dynamic_ncols=True)
    epoch_fn = compiled(task, optimizer)[0]
    try:
        for _ in range(start, last):
            t0, c0 = time.perf_counter(), time.process_time()
            if task.steps_per_call is None:
                state, metrics = epoch_fn(state, data)
                if bar is not None:
                    bar.update(per)
            else:
                state, metrics = _stepwise_epoch(task, optimizer, state, data,
                                                 bar if per > 1 else None)
                if bar is not None and per == 1:
                    bar.update(1)
            metrics = {k: np.asarray(v).item() for k, v in jax.device_get(metrics).items()}
            bad = [k for k, v in metrics.items()
                   if isinstance(v, float) and not np.isfinite(v)]
            if bad:
                raise NonFiniteError(
                    f"training diverged in epoch {int(state.epoch)} ({bad[0]} = "
                    f"{metrics[bad[0]]}); the state saved after the previous epoch is kept: "
                    "rerun with --force and a lower learning rate or another optimizer")
            dt, dc = time.perf_counter() - t0, time.process_time() - c0
            state = eqx.tree_at(lambda s: s.elapsed_s, state,
                                state.elapsed_s + jnp.asarray([dt, dc], jnp.float32))
            entry = {"epoch": int(state.epoch), **metrics, "time_s": dt}
            history.append(entry)
            if out is not None:
                save_state(out, state, history, config, digest)
            if on_epoch is not None:
                on_epoch(state, entry)
            if bar is not None:
                bar.set_postfix(task.postfix(metrics))
    finally:
        if bar is not None:
            bar.close()
    return state, history


def as_extra_args(optimizer) -> optax.GradientTransformationExtraArgs:
    """An optimizer that accepts (and ignores, if it does not use them) the loop's extra
    arguments. Idempotent, and cached on the optimizer so compiled epochs are reused."""
    if isinstance(optimizer, optax.GradientTransformationExtraArgs):
        return optimizer
    return _wrap(optimizer)


@functools.lru_cache(maxsize=32)
def _wrap(optimizer):
    return optax.with_extra_args_support(optimizer)


def step_key(seed: int, epoch: int, step: int) -> PRNGKeyArray:
    """The optimizer's key for ``step`` of ``epoch`` (what the loop passes as ``key``)."""
    k = jax.random.fold_in(jax.random.key(seed), _OPT_STREAM)
    return jax.random.fold_in(jax.random.fold_in(k, epoch), step)
