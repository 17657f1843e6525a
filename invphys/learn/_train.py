"""Training a Deceptron: the paper's protocol, seeded, deterministic and resumable.

One epoch is one jitted function (a ``lax.scan`` over shuffled minibatches). Everything
that changes from epoch to epoch (the epoch number, the JCP trigger flag, the last
validation MSE, the optimiser state) is carried as arrays in a :class:`TrainState`, so
the epoch compiles once. The randomness of epoch ``k`` (shuffle, JCP probes, RJCP probes)
is drawn from ``fold_in(key, k)``, ``key`` fixed by the seed: a run resumed after epoch
k replays exactly the epochs an uninterrupted run would, and ends bit-identical.

JCP schedule (protocol): w_JCP = 0 until epoch >= round(jcp_start * epochs) and the
validation MSE (of the weights entering the epoch) is below ``jcp_trigger``; from then on
(the trigger is sticky) w_JCP = jcp_weight (0.2 + 0.8 t), t = (epoch - start) /
(ramp_end - start) clipped to [0, 1], ramp_end = round(jcp_ramp_end * epochs).
"""

from __future__ import annotations

import dataclasses
import functools
import json
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jaxtyping import Array, Bool, Float, Int, PyTree

from .._data import Dataset
from .._errors import CheckpointError, SpecError
from ._checkpoint import check_out_dir, finalise, load_train_state, save_train_state
from ._deceptron import ACTIVATIONS, MLP_ACTIVATIONS, AbstractDeceptron, Deceptron, MLPDeceptron
from ._losses import PROBES, TERMS, LossWeights, as_probes, jcp_from_probes, loss_terms, total_loss


class SpecConfig:
    """Shared plumbing of a frozen dataclass whose fields are the keys of a spec's
    ``[train]`` section (TrainConfig, NetTrainConfig): unknown keys are a SpecError."""

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]):
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise SpecError(f"unknown train key(s) for {cls.__name__}: {', '.join(unknown)}")
        return cls(**dict(d))

    @classmethod
    def from_spec(cls, spec):
        """The ``[train]`` section of a validated :class:`invphys.Spec`."""
        return cls.from_dict(spec["train"])

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def replace(self, **changes: Any):
        return dataclasses.replace(self, **changes)


@dataclasses.dataclass(frozen=True)
class TrainConfig(SpecConfig):
    """Every training hyperparameter; the field names are the keys of a spec's ``[train]``.

    Defaults are the paper's protocol for the affine Deceptron (Adam 5e-4, batch 128,
    60 epochs, clip 0.5, seed 0, ridge lambda 1e-4, the protocol's loss weights, JCP
    1e-3 with the 20%/80% trigger-and-ramp schedule, 2 Gaussian probes).

    ``jcp_trigger=None`` means the protocol's threshold: 0.07 for the linear-activation
    affine model, 0.6 for a nonlinear one (LeakyReLU or MLP). ``lr_schedule="cosine"``
    decays the learning rate to ``lr * lr_final`` over the run. ``w_sup`` weights an
    optional supervised inverse term MSE(g(z), x) (0 in the protocol).
    """

    model: str = "linear"
    epochs: int = 60
    batch_size: int = 128
    lr: float = 5e-4
    lr_schedule: str = "constant"
    lr_final: float = 0.0
    clip_norm: float = 0.5
    seed: int = 0
    dtype: str = "float64"
    # affine Deceptron
    activation: str = "identity"
    leaky_slope: float = 0.1
    tie_v: bool = False
    ridge_lambda: float = 1e-4
    # MLP Deceptron
    width: int = 256
    depth: int = 3
    mlp_activation: str = "silu"
    # loss weights
    w_fit: float = 1.0
    w_rec: float = 0.1
    w_cyc: float = 0.05
    w_spectral: float = 1e-6
    w_bias: float = 1e-4
    w_comp: float = 1e-3
    w_sup: float = 0.0
    # Jacobian Composition Penalty
    jcp: bool = True
    jcp_weight: float = 1e-3
    jcp_trigger: float | None = None
    jcp_start: float = 0.2
    jcp_ramp_end: float = 0.8
    jcp_probes: int = 2
    probe: str = "gaussian"
    rjcp_probes: int = 1

    def __post_init__(self):
        choices = {
            "model": ("linear", "mlp"), "lr_schedule": ("constant", "cosine"),
            "dtype": ("float64", "float32"), "activation": ACTIVATIONS,
            "mlp_activation": tuple(MLP_ACTIVATIONS), "probe": PROBES,
        }
        for key, allowed in choices.items():
            if getattr(self, key) not in allowed:
                raise SpecError(
                    f"train.{key} must be one of {allowed}, got {getattr(self, key)!r}"
                )
        for key in ("epochs", "batch_size", "width", "depth", "jcp_probes", "rjcp_probes"):
            if getattr(self, key) < 1:
                raise SpecError(f"train.{key} must be >= 1, got {getattr(self, key)}")
        if not 0.0 <= self.jcp_start <= self.jcp_ramp_end <= 1.0:
            raise SpecError("train: need 0 <= jcp_start <= jcp_ramp_end <= 1")

    @property
    def trigger(self) -> float:
        """The validation-MSE threshold that switches JCP on."""
        if self.jcp_trigger is not None:
            return self.jcp_trigger
        return 0.07 if self.model == "linear" and self.activation == "identity" else 0.6

    @property
    def start_epoch(self) -> int:
        return int(round(self.jcp_start * self.epochs))

    @property
    def ramp_end_epoch(self) -> int:
        return int(round(self.jcp_ramp_end * self.epochs))

    @property
    def weights(self) -> LossWeights:
        return LossWeights(fit=self.w_fit, rec=self.w_rec, cyc=self.w_cyc,
                           spectral=self.w_spectral, bias=self.w_bias, comp=self.w_comp,
                           sup=self.w_sup)

    @property
    def jnp_dtype(self):
        return jnp.float64 if self.dtype == "float64" else jnp.float32

    def jcp_weight_at(self, epoch, on):
        """The scheduled JCP weight at ``epoch`` given the (sticky) trigger flag ``on``."""
        start, end = self.start_epoch, self.ramp_end_epoch
        epoch = jnp.asarray(epoch).astype(float)  # the default float: float64 with x64
        t = jnp.clip((epoch - start) / max(end - start, 1), 0.0, 1.0)
        return jnp.where(on, self.jcp_weight * (0.2 + 0.8 * t), 0.0)


def jcp_gate(cfg: TrainConfig, epoch, was_on, last_val_mse):
    """Whether JCP is on in ``epoch``: it was on already (sticky), or epoch >= the start
    epoch and the validation MSE of the weights entering the epoch is below the trigger.
    Never with ``cfg.jcp`` false."""
    if not cfg.jcp:
        return jnp.asarray(False)
    return jnp.asarray(was_on) | (
        (jnp.asarray(epoch) >= cfg.start_epoch) & (jnp.asarray(last_val_mse) < cfg.trigger)
    )


class TrainState(eqx.Module):
    """Everything a training run carries from one epoch to the next.

    ``epoch`` counts completed epochs; ``val_mse`` is the validation MSE of ``model``;
    ``jcp_on`` is the sticky JCP trigger; ``elapsed_s`` the training time so far, (wall,
    process CPU) seconds (bookkeeping only, never used by the computation).
    """

    model: AbstractDeceptron
    opt_state: PyTree
    epoch: Int[Array, ""]
    jcp_on: Bool[Array, ""]
    val_mse: Float[Array, ""]
    elapsed_s: Float[Array, "2"]


def make_optimizer(cfg: TrainConfig, steps_per_epoch: int) -> optax.GradientTransformation:
    """Gradient clipping by global norm, then Adam (constant or cosine learning rate)."""
    lr = cfg.lr
    if cfg.lr_schedule == "cosine":
        lr = optax.cosine_decay_schedule(cfg.lr, cfg.epochs * steps_per_epoch,
                                         alpha=cfg.lr_final)
    return optax.chain(optax.clip_by_global_norm(cfg.clip_norm), optax.adam(lr))


def _keys(cfg: TrainConfig):
    k_init, k_train = jax.random.split(jax.random.key(cfg.seed))
    return k_init, k_train


def init_model(cfg: TrainConfig, x_train: Array, z_train: Array) -> AbstractDeceptron:
    """The protocol's initial model: ridge for the affine Deceptron, seeded init for the MLP."""
    n, m = x_train.shape[1], z_train.shape[1]
    if cfg.model == "linear":
        return Deceptron.ridge(x_train, z_train, cfg.ridge_lambda, activation=cfg.activation,
                               slope=cfg.leaky_slope, tie_v=cfg.tie_v, dtype=cfg.jnp_dtype)
    mean, scale = MLPDeceptron.x_stats(x_train)
    return MLPDeceptron(n, m, cfg.width, cfg.depth, cfg.mlp_activation, key=_keys(cfg)[0],
                        x_mean=mean, x_scale=scale, dtype=cfg.jnp_dtype)


def skeleton_model(cfg: TrainConfig, x_size: int, y_size: int) -> AbstractDeceptron:
    """A model of the right structure, shapes and dtypes (no data; for loading weights).

    Wrap in ``eqx.filter_eval_shape`` to get the structure without allocating."""
    if cfg.model == "linear":
        return Deceptron.zeros(x_size, y_size, activation=cfg.activation,
                               slope=cfg.leaky_slope, tie_v=cfg.tie_v, dtype=cfg.jnp_dtype)
    return MLPDeceptron(x_size, y_size, cfg.width, cfg.depth, cfg.mlp_activation,
                        key=jax.random.key(0), dtype=cfg.jnp_dtype)


def val_mse(model: AbstractDeceptron, x: Array, z: Array) -> Array:
    """MSE(f(x), z) over every sample and output dimension."""
    return jnp.mean((jax.vmap(model.f)(x) - z) ** 2)


_val_mse_jit = eqx.filter_jit(val_mse)


def init_state(model: AbstractDeceptron, optimizer, x_val: Array, z_val: Array) -> TrainState:
    """The state before epoch 0. Every scalar has an explicit dtype (not weakly typed), so
    a state loaded from disk hits the same compiled epoch."""
    opt_state = optimizer.init(eqx.filter(model, eqx.is_inexact_array))
    return TrainState(
        model=model, opt_state=opt_state, epoch=jnp.zeros((), jnp.int32),
        jcp_on=jnp.zeros((), bool), val_mse=_val_mse_jit(model, x_val, z_val),
        elapsed_s=jnp.zeros((2,), float),
    )


def steps_per_epoch(cfg: TrainConfig, n_train: int) -> tuple[int, int]:
    """(batch size, batches per epoch); the remainder of each shuffle is dropped."""
    batch = min(cfg.batch_size, n_train)
    return batch, n_train // batch


@functools.lru_cache(maxsize=8)
def compiled_epoch(cfg: TrainConfig, n_train: int):
    """``(optimizer, epoch_fn)`` for a config, cached so that repeated runs (a resume, a
    rerun with the same seed) reuse one compiled epoch."""
    optimizer = make_optimizer(cfg, steps_per_epoch(cfg, n_train)[1])
    return optimizer, make_epoch(cfg, n_train, optimizer)


def make_epoch(cfg: TrainConfig, n_train: int, optimizer):
    """The jitted epoch: ``(state, x_train, z_train, x_val, z_val) -> (state, metrics)``."""
    batch, nb = steps_per_epoch(cfg, n_train)
    weights = cfg.weights
    k_train = _keys(cfg)[1]

    @eqx.filter_jit
    def epoch_fn(state: TrainState, x_tr, z_tr, x_val, z_val):
        ep = state.epoch
        on = jcp_gate(cfg, ep, state.jcp_on, state.val_mse)
        w_jcp = cfg.jcp_weight_at(ep, on).astype(x_tr.dtype)
        # All of the epoch's randomness in ONE draw (each PRNG call site costs compile
        # time): the shuffle (argsort of N normals), the JCP probes of every step, and
        # the RJCP probes. Memory: (1 + P) x the training x, plus the RJCP probes.
        nv, n = x_val.shape
        sizes = (n_train, nb * batch * cfg.jcp_probes * n, nv * cfg.rjcp_probes * n)
        u = jax.random.normal(jax.random.fold_in(k_train, ep), (sum(sizes),), x_tr.dtype)
        u_perm, u_jcp, u_rjcp = jnp.split(u, np.cumsum(sizes)[:-1].tolist())
        idx = jnp.argsort(u_perm)[: nb * batch].reshape(nb, batch)
        xi = as_probes(u_jcp.reshape(nb, batch, cfg.jcp_probes, n), cfg.probe)
        xi_val = as_probes(u_rjcp.reshape(nv, cfg.rjcp_probes, n), cfg.probe)
        params, static = eqx.partition(state.model, eqx.is_inexact_array)

        def step(carry, inp):
            params, opt_state = carry
            ib, xib = inp
            xb, zb = x_tr[ib], z_tr[ib]

            def loss_fn(p):
                terms = loss_terms(eqx.combine(p, static), xb, zb, xib, with_jcp=on)
                return total_loss(terms, weights, w_jcp), terms

            (loss, terms), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
            updates, opt_state = optimizer.update(grads, opt_state, params)
            return (eqx.apply_updates(params, updates), opt_state), (loss, terms)

        (params, opt_state), (losses, terms) = jax.lax.scan(
            step, (params, state.opt_state), (idx, xi)
        )
        model = eqx.combine(params, static)
        v = val_mse(model, x_val, z_val)
        metrics = {
            "loss": jnp.mean(losses),
            **{k: jnp.mean(terms[k]) for k in TERMS},
            "val_mse": v,
            "rjcp": jcp_from_probes(model, x_val, xi_val),
            "w_jcp": w_jcp,
            "jcp_on": on,
        }
        new = TrainState(model=model, opt_state=opt_state, epoch=ep + 1, jcp_on=on,
                         val_mse=v, elapsed_s=state.elapsed_s)
        return new, metrics

    return epoch_fn


def _as_data(dataset: Dataset, dtype) -> dict[str, Array]:
    norm = dataset.normaliser
    return {
        "x_train": jnp.asarray(dataset.x_train, dtype),
        "z_train": jnp.asarray(norm.transform(dataset.y_train), dtype),
        "x_val": jnp.asarray(dataset.x_val, dtype),
        "z_val": jnp.asarray(norm.transform(dataset.y_val), dtype),
    }


def train_deceptron(
    dataset: Dataset,
    config: TrainConfig | Mapping[str, Any] | None = None,
    *,
    spec=None,
    out: str | Path | None = None,
    resume: bool = False,
    overwrite: bool = False,
    progress: bool = False,
    stop_after: int | None = None,
):
    """Train a Deceptron on ``dataset`` (raw x, normalised y) and return a :class:`Checkpoint`.

    Arguments:
        dataset: from :func:`invphys.make_dataset`; the model maps raw x to
            ``dataset.normaliser.transform(y)``.
        config: a :class:`TrainConfig` (or a mapping of its fields); default: the spec's
            ``[train]`` section, else the protocol defaults.
        spec: the problem's :class:`invphys.Spec` (recorded in the card; used to name
            the problem and find pinned components).
        out: checkpoint folder. After every epoch the training state is saved there
            (``state.eqx``, ``state.json``, ``log.jsonl``); at the end the weights
            (``model.eqx``), ``normaliser.npz`` and ``card.json``. Every file is atomic.
        resume: continue from the state saved in ``out`` (same config and data required).
        overwrite: start afresh even if ``out`` already holds a run.
        progress: show a tqdm bar (epoch, losses, validation MSE, RJCP, JCP weight).
        stop_after: stop after this many completed epochs without finalising (as if
            interrupted); resume later with ``resume=True``.
    """

    if config is None:
        config = TrainConfig.from_spec(spec) if spec is not None else TrainConfig()
    elif not isinstance(config, TrainConfig):
        config = TrainConfig.from_dict(config)
    cfg = config
    data = _as_data(dataset, cfg.jnp_dtype)
    n_train, n = data["x_train"].shape
    m = data["z_train"].shape[1]
    optimizer, epoch_fn = compiled_epoch(cfg, n_train)
    digest = dataset.digest()
    out = Path(out) if out is not None else None

    state, history = None, []
    if out is not None:
        check_out_dir(out, resume=resume, overwrite=overwrite)
        if resume:
            loaded = load_train_state(out, cfg, digest, n, m, optimizer)
            if loaded is not None:
                state, history = loaded
    if state is None:
        model = init_model(cfg, data["x_train"], data["z_train"])
        state = init_state(model, optimizer, data["x_val"], data["z_val"])

    start = int(state.epoch)
    last = cfg.epochs if stop_after is None else min(cfg.epochs, stop_after)
    bar = None
    if progress:
        from tqdm.auto import tqdm

        name = spec.name if spec is not None else "custom"
        bar = tqdm(total=cfg.epochs, initial=start, desc=f"train {name} [{cfg.model}]",
                   unit="epoch", dynamic_ncols=True)
    try:
        for _ in range(start, last):
            t0, c0 = time.perf_counter(), time.process_time()
            state, metrics = epoch_fn(state, data["x_train"], data["z_train"],
                                      data["x_val"], data["z_val"])
            metrics = {k: v.item() for k, v in jax.device_get(metrics).items()}
            dt, dc = time.perf_counter() - t0, time.process_time() - c0
            state = eqx.tree_at(lambda s: s.elapsed_s, state,
                                state.elapsed_s + jnp.asarray([dt, dc], float))
            ep = int(state.epoch)
            history.append({"epoch": ep, **metrics, "time_s": dt})
            if out is not None:
                save_train_state(out, state, history, cfg, digest)
            if bar is not None:
                bar.update(1)
                bar.set_postfix(loss=f"{metrics['loss']:.3g}", fit=f"{metrics['fit']:.3g}",
                                val=f"{metrics['val_mse']:.3g}", rjcp=f"{metrics['rjcp']:.3g}",
                                w_jcp=f"{metrics['w_jcp']:.2g}")
    finally:
        if bar is not None:
            bar.close()
    complete = int(state.epoch) >= cfg.epochs
    return finalise(
        state, cfg, dataset, spec=spec, history=history, out=out if complete else None,
        complete=complete, digest=digest,
    )


def train_from_spec(
    spec,
    *,
    out: str | Path | None = None,
    resume: bool = False,
    overwrite: bool = False,
    progress: bool = False,
):
    """Build the spec's problem, simulate its dataset, and train (the ``invphys train`` path)."""
    from .. import load_problem, make_dataset
    from .._spec import load_spec

    spec = load_spec(spec)
    problem = load_problem(spec)
    dataset = make_dataset(problem, progress=progress)
    return train_deceptron(dataset, spec=spec, out=out, resume=resume, overwrite=overwrite,
                           progress=progress)


def history_from_log(path: str | Path) -> list[dict[str, Any]]:
    """Read a ``log.jsonl`` (one JSON object per epoch)."""
    try:
        lines = Path(path).read_text().splitlines()
        return [json.loads(line) for line in lines if line.strip()]
    except (OSError, ValueError) as e:
        raise CheckpointError(f"training log {path} is unreadable ({e})") from None

