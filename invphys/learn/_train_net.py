"""Training DeceptronNet v0 on Deblur-2D: seeded, deterministic, resumable, with a card.

The protocol ("DeceptronNet v0"): Adam (lr 2e-3), batch 64, 12 epochs on 4000 samples
drawn with :func:`invphys.physics.deblur2d.draw` (y under each sample's true kernel),
loss :func:`~invphys.learn.deceptronnet.deceptronnet_loss` (MSE(x_hat, x) + a data
term). The spec's ``[train]`` section holds the keys of :class:`NetTrainConfig`.

Determinism and resume. The weights come from ``split(key(seed))[0]``, the shuffle of
epoch k from ``fold_in(split(key(seed))[1], k)``; the state after every epoch (weights,
Adam state, epoch, training time) is saved atomically in ``out``. A run resumed after
epoch k replays exactly the epochs an uninterrupted run would (same compiled step, same
inputs) and ends bit-identical.

One jitted *step* per minibatch, driven by a Python loop (not a ``lax.scan`` over the
epoch): on XLA:CPU convolutions inside a while loop run ~5x slower than the same
convolutions at top level (measured: 3 batches of 16, 8 channels, one core: 12.5 s in a
scan, 2.3 s as three calls). The per-batch loop also drives the progress bar. The
step compiles once per config and is cached, so a resume reuses it.

Checkpoint folder (the Deceptron's layout, :mod:`._checkpoint`): ``model.eqx`` (the
weights, no pickle), ``card.json`` (format ``invphys-deceptronnet/1``: config, spec,
operator, metrics, data digest, training time, machine, versions, SHA-256 of the
weights), ``state.eqx`` / ``state.json`` (resume) and ``log.jsonl`` (one line per
epoch). The card is written last: a folder with a card is a complete checkpoint.
"""

from __future__ import annotations

import dataclasses
import datetime
import functools
import hashlib
import io
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jaxtyping import Array, Float, Int, PyTree

from .._errors import CheckpointError, InvphysError, SpecError
from .._io import save_json
from ..physics.deblur2d import Deblur2D
from ._checkpoint import (
    CARD_FILE,
    LOG_FILE,
    MODEL_FILE,
    STATE_FILE,
    _sha256,
    check_out_dir,
    load_tree,
    machine,
    read_card,
    read_state_blob,
    save_train_state,
    save_tree,
    versions,
)
from ._train import SpecConfig
from .deceptronnet import DeceptronNet, deceptronnet_loss

FORMAT = "invphys-deceptronnet/1"
#: Spec sections a shipped checkpoint must agree on to be reused for a spec.
MATCH_SECTIONS = ("physics", "prior", "noise", "data", "train")


@dataclasses.dataclass(frozen=True)
class NetTrainConfig(SpecConfig):
    """Every DeceptronNet training hyperparameter (the keys of deblur2d's ``[train]``).

    Defaults are the protocol: Adam 2e-3, batch 64, 12 epochs, seed 0, the v0 network
    (32 channels, 6 unrolled steps, UNet depth 2), data-term weight 0.1, float32.
    """

    epochs: int = 12
    batch_size: int = 64
    lr: float = 2e-3
    seed: int = 0
    channels: int = 32
    steps: int = 6
    depth: int = 2
    data_weight: float = 0.1
    dtype: str = "float32"

    def __post_init__(self):
        for key in ("epochs", "batch_size", "channels", "steps", "depth"):
            if getattr(self, key) < 1:
                raise SpecError(f"train.{key} must be >= 1, got {getattr(self, key)}")
        if self.dtype not in ("float32", "float64"):
            raise SpecError(f"train.dtype must be float32 or float64, got {self.dtype!r}")

    @property
    def net_kwargs(self) -> dict[str, int]:
        return {"channels": self.channels, "steps": self.steps, "depth": self.depth}

    @property
    def jnp_dtype(self):
        return jnp.float64 if self.dtype == "float64" else jnp.float32


class NetTrainState(eqx.Module):
    """What a run carries between epochs: ``epoch`` counts completed epochs;
    ``elapsed_s`` is (wall, process CPU) training seconds so far (bookkeeping only;
    float32 whatever the x64 setting, so a state saved in one loads in the other)."""

    model: DeceptronNet
    opt_state: PyTree
    epoch: Int[Array, ""]
    elapsed_s: Float[Array, "2"]


@dataclasses.dataclass(frozen=True)
class NetCheckpoint:
    """A trained DeceptronNet with its parsed card (and its folder, when loaded)."""

    model: DeceptronNet
    card: dict[str, Any]
    path: Path | None = None

    @property
    def metrics(self) -> dict[str, Any]:
        return self.card["metrics"]

    @property
    def config(self) -> NetTrainConfig:
        return NetTrainConfig.from_dict(self.card["config"])


# --------------------------------------------------------------------------- data
@dataclasses.dataclass(frozen=True)
class DeblurData:
    """Protocol data for one spec: per split, x ``(N, n*n)``, sigma ``(N,)`` and the
    noisy y ``(N, m*m)`` (NumPy, the default float), all under each sample's A_true."""

    x_train: np.ndarray
    s_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    s_val: np.ndarray
    y_val: np.ndarray
    x_test: np.ndarray
    s_test: np.ndarray
    y_test: np.ndarray

    def digest(self) -> str:
        """SHA-256 of every array (float64 bytes, shapes included)."""
        h = hashlib.sha256()
        for f in dataclasses.fields(self):
            a = np.ascontiguousarray(getattr(self, f.name), np.float64)
            h.update(f"{f.name}{a.shape}".encode())
            h.update(a.tobytes())
        return h.hexdigest()


def split_keys(seed: int) -> tuple[Array, Array, Array]:
    """The (train, validation, test) data keys of ``[data] seed``."""
    k = jax.random.split(jax.random.key(seed), 3)
    return k[0], k[1], k[2]


def deblur_data(spec, *, splits: tuple[str, ...] = ("train", "val", "test")) -> DeblurData:
    """Draw the spec's train / validation / test sets (sizes and seed from ``[data]``).

    Each split has its own key (:func:`split_keys`), so the sets are independent and
    each is prefix-stable in its size. Splits not in ``splits`` are left empty.
    """
    from .. import load_problem
    from ..physics import deblur2d

    problem = load_problem(spec)
    d = spec["data"]
    keys = dict(zip(("train", "val", "test"), split_keys(d["seed"]), strict=True))
    sizes = {"train": d["n_train"], "val": d["n_val"], "test": d["n_test"]}
    out: dict[str, np.ndarray] = {}
    for name in ("train", "val", "test"):
        if name in splits:
            x, s, _, y = deblur2d.draw(problem, keys[name], sizes[name])
        else:
            x, s, y = np.zeros((0, 0)), np.zeros((0,)), np.zeros((0, 0))
        out.update({f"x_{name}": np.asarray(x), f"s_{name}": np.asarray(s),
                    f"y_{name}": np.asarray(y)})
    return DeblurData(**out)


# --------------------------------------------------------------------------- model
def _cast(tree: PyTree, dtype) -> PyTree:
    return jax.tree.map(lambda a: a.astype(dtype) if eqx.is_inexact_array(a) else a, tree)


def init_net(cfg: NetTrainConfig, operator: Deblur2D) -> DeceptronNet:
    """The seeded initial network, in the config's dtype."""
    k_init = jax.random.split(jax.random.key(cfg.seed))[0]
    return _cast(DeceptronNet(k_init, operator=operator, **cfg.net_kwargs), cfg.jnp_dtype)


def _skeleton(cfg: NetTrainConfig, operator: Deblur2D) -> DeceptronNet:
    return _cast(DeceptronNet(jax.random.key(0), operator=operator, **cfg.net_kwargs),
                 cfg.jnp_dtype)


def operator_info(op: Deblur2D) -> dict[str, Any]:
    return {"sigma": float(op.sigma), "n": op.n, "pool": op.pool, "gain": op.gain,
            "radius": op.radius}


def operator_from_info(info: Mapping[str, Any]) -> Deblur2D:
    return Deblur2D(sigma=float(info["sigma"]), n=int(info["n"]), pool=int(info["pool"]),
                    gain=float(info["gain"]), radius=int(info["radius"]))


# --------------------------------------------------------------------------- metrics
@eqx.filter_jit
def _predict_chunk(model: DeceptronNet, y: Float[Array, "b mm"]) -> Float[Array, "b nn"]:
    return jax.vmap(model)(y)


def predict(model: DeceptronNet, y: Float[Array, "N mm"], chunk: int = 50) -> np.ndarray:
    """The network's reconstructions of a batch, in chunks (memory stays flat).

    A Python loop over jitted chunks rather than ``lax.map``: XLA:CPU convolutions are
    much slower inside a loop construct (see the module docstring)."""
    dtype = model.gains.dtype
    y = jnp.asarray(y, dtype)
    n = y.shape[0]
    if n == 0:
        return np.zeros((0, model.operator.n ** 2), dtype)
    pad = (-n) % min(chunk, n)
    size = min(chunk, n)
    if pad:
        y = jnp.concatenate([y, jnp.repeat(y[-1:], pad, 0)])
    out = [np.asarray(_predict_chunk(model, y[i:i + size])) for i in range(0, n + pad, size)]
    return np.concatenate(out)[:n]


def x_rmse(x_hat: Float[Array, "N nn"], x: Float[Array, "N nn"]) -> float:
    """Mean over images of the per-image RMSE(x_hat - x)."""
    diff = np.asarray(x_hat, np.float64) - np.asarray(x, np.float64)
    return float(np.mean(np.sqrt(np.mean(diff**2, axis=-1))))


# --------------------------------------------------------------------------- training
def batches(cfg: NetTrainConfig, n_train: int) -> tuple[int, int]:
    """(batch size, batches per epoch); the remainder of each shuffle is dropped."""
    batch = min(cfg.batch_size, n_train)
    return batch, n_train // batch


def compiled_step(cfg: NetTrainConfig):
    """``(optimizer, step, shuffle)`` for a config, cached on what they depend on (lr,
    seed, data weight), so that a resume, a rerun or a run with other epochs or batch
    size reuses the compiled step (it retraces only for a new network shape)."""
    return _compiled_step(cfg.lr, cfg.seed, cfg.data_weight)


@functools.lru_cache(maxsize=8)
def _compiled_step(lr: float, seed: int, data_weight: float):
    optimizer = optax.adam(lr)
    k_train = jax.random.split(jax.random.key(seed))[1]

    @eqx.filter_jit
    def step(model, opt_state, x, y, sigma):
        params, static = eqx.partition(model, eqx.is_inexact_array)

        def loss_fn(p):
            return deceptronnet_loss(eqx.combine(p, static), x, y, sigma,
                                     data_weight=data_weight)

        loss, grads = jax.value_and_grad(loss_fn)(params)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return eqx.combine(eqx.apply_updates(params, updates), static), opt_state, loss

    @functools.partial(jax.jit, static_argnums=(1, 2))
    def shuffle(epoch, n_train, batch):
        nb = n_train // batch
        perm = jax.random.permutation(jax.random.fold_in(k_train, epoch), n_train)
        return perm[: nb * batch].reshape(nb, batch)

    return optimizer, step, shuffle


def _run_epoch(cfg, state: NetTrainState, data: dict[str, Array], bar=None):
    """One epoch of minibatch steps; returns the new state and the mean training loss."""
    _, step, shuffle = compiled_step(cfg)
    n_train = data["x_train"].shape[0]
    batch, _ = batches(cfg, n_train)
    idx = np.asarray(shuffle(state.epoch, n_train, batch))
    model, opt_state = state.model, state.opt_state
    losses = []
    for ib in idx:
        model, opt_state, loss = step(model, opt_state, data["x_train"][ib],
                                      data["y_train"][ib], data["s_train"][ib])
        losses.append(loss)
        if bar is not None:
            bar.update(1)
    mean_loss = float(np.mean(jax.device_get(losses)))
    new = NetTrainState(model=model, opt_state=opt_state, epoch=state.epoch + 1,
                        elapsed_s=state.elapsed_s)
    return new, mean_loss


def _device_data(data: DeblurData, dtype) -> dict[str, Array]:
    return {k: jnp.asarray(getattr(data, k), dtype)
            for k in ("x_train", "s_train", "y_train", "x_val", "y_val")}


def train_deceptronnet(
    data: DeblurData,
    operator: Deblur2D,
    config: NetTrainConfig | Mapping[str, Any] | None = None,
    *,
    spec=None,
    out: str | Path | None = None,
    resume: bool = False,
    overwrite: bool = False,
    progress: bool = False,
    stop_after: int | None = None,
) -> NetCheckpoint:
    """Train DeceptronNet v0 on protocol data and return a :class:`NetCheckpoint`.

    Arguments:
        data: from :func:`deblur_data` (y under each sample's true kernel).
        operator: the nominal forward A_nom the network corrects against.
        config: a :class:`NetTrainConfig` (or mapping); default: the spec's ``[train]``.
        spec: the deblur2d :class:`invphys.Spec` (recorded in the card).
        out: checkpoint folder; the training state is saved after every epoch, the
            weights and card at the end. Every file is atomic.
        resume: continue the run saved in ``out`` (same config and data required).
        overwrite: start afresh even if ``out`` holds a run.
        progress: a tqdm bar over the run's minibatches (loss, validation x-RMSE).
        stop_after: stop after this many completed epochs without finalising (as if
            interrupted); resume later with ``resume=True``.
    """
    if config is None:
        config = NetTrainConfig.from_spec(spec) if spec is not None else NetTrainConfig()
    elif not isinstance(config, NetTrainConfig):
        config = NetTrainConfig.from_dict(config)
    cfg = config
    arrays = _device_data(data, cfg.jnp_dtype)
    n_train = arrays["x_train"].shape[0]
    if n_train == 0:
        raise SpecError("DeceptronNet training needs training data (data.n_train >= 1)")
    batch, nb = batches(cfg, n_train)
    optimizer = compiled_step(cfg)[0]
    digest = data.digest()
    out = Path(out) if out is not None else None

    state, history = None, []
    if out is not None:
        check_out_dir(out, resume=resume, overwrite=overwrite)
        if resume:
            loaded = _load_state(out, cfg, digest, operator, optimizer)
            if loaded is not None:
                state, history = loaded
    if state is None:
        model = init_net(cfg, operator)
        state = NetTrainState(
            model=model, opt_state=optimizer.init(eqx.filter(model, eqx.is_inexact_array)),
            epoch=jnp.zeros((), jnp.int32), elapsed_s=jnp.zeros((2,), jnp.float32),
        )

    start = int(state.epoch)
    last = cfg.epochs if stop_after is None else min(cfg.epochs, stop_after)
    bar = None
    if progress:
        from tqdm.auto import tqdm

        name = spec.name if spec is not None else "deblur2d"
        bar = tqdm(total=cfg.epochs * nb, initial=start * nb, unit="batch",
                   desc=f"train {name} [DeceptronNet c{cfg.channels} s{cfg.steps}]",
                   dynamic_ncols=True)
    try:
        for _ in range(start, last):
            t0, c0 = time.perf_counter(), time.process_time()
            state, loss = _run_epoch(cfg, state, arrays, bar)
            val = x_rmse(predict(state.model, arrays["y_val"]), arrays["x_val"]) \
                if arrays["x_val"].shape[0] else float("nan")
            dt, dc = time.perf_counter() - t0, time.process_time() - c0
            state = eqx.tree_at(lambda s: s.elapsed_s, state,
                                state.elapsed_s + jnp.asarray([dt, dc], state.elapsed_s.dtype))
            ep = int(state.epoch)
            history.append({"epoch": ep, "loss": loss, "val_x_rmse": val, "time_s": dt})
            if out is not None:
                save_train_state(out, state, history, cfg, digest)
            if bar is not None:
                bar.set_postfix(epoch=ep, loss=f"{loss:.3g}", val_x_rmse=f"{val:.4f}")
    finally:
        if bar is not None:
            bar.close()
    complete = int(state.epoch) >= cfg.epochs
    return finalise_net(state, cfg, data, operator, spec=spec, history=history,
                        out=out if complete else None, complete=complete, digest=digest)


def _load_state(out: Path, cfg, digest, operator, optimizer):
    from ._train import history_from_log

    blob = read_state_blob(out, cfg, digest)
    if blob is None:
        return None

    def build():
        model = _skeleton(cfg, operator)
        return NetTrainState(
            model=model, opt_state=optimizer.init(eqx.filter(model, eqx.is_inexact_array)),
            epoch=jnp.zeros((), jnp.int32),
            elapsed_s=jnp.zeros((2,), jnp.float32),
        )

    state = load_tree(io.BytesIO(blob), eqx.filter_eval_shape(build),
                      f"training state {out / STATE_FILE}")
    history = history_from_log(out / LOG_FILE) if (out / LOG_FILE).is_file() else []
    history = [h for h in history if h.get("epoch", 0) <= int(state.epoch)]
    return state, history


def finalise_net(state: NetTrainState, cfg: NetTrainConfig, data: DeblurData,
                 operator: Deblur2D, *, spec, history, out, complete, digest) -> NetCheckpoint:
    """Evaluate (validation and test x-RMSE, and those of the common start), build the
    card and, with ``out``, write ``model.eqx`` then ``card.json``."""
    from ..physics.deblur2d import start

    model = state.model
    last = dict(history[-1]) if history else {}
    metrics: dict[str, Any] = {"train_loss": last.get("loss")}
    if complete:
        for split in ("val", "test"):
            x, y = getattr(data, f"x_{split}"), getattr(data, f"y_{split}")
            if x.shape[0]:
                metrics[f"{split}_x_rmse"] = x_rmse(predict(model, y), x)
                metrics[f"{split}_start_x_rmse"] = x_rmse(
                    np.asarray(jax.vmap(start)(jnp.asarray(y))), x)
    else:
        metrics["val_x_rmse"] = last.get("val_x_rmse")
    n_params = sum(int(np.size(a)) for a in jax.tree_util.tree_leaves(
        eqx.filter(model, eqx.is_inexact_array)))
    card: dict[str, Any] = {
        "format": FORMAT,
        "problem": spec.name if spec is not None else "deblur2d",
        "physics": spec.problem if spec is not None else "deblur2d",
        "spec": spec.to_dict() if spec is not None else None,
        "spec_digest": spec.digest() if spec is not None else None,
        "model": {"class": "DeceptronNet", **cfg.net_kwargs, "parameters": n_params,
                  "dtype": cfg.dtype},
        "operator": operator_info(operator),
        "config": cfg.to_dict(),
        "metrics": metrics,
        "epochs_completed": int(state.epoch),
        "complete": complete,
        "training_time_s": float(state.elapsed_s[0]),
        "training_cpu_s": float(state.elapsed_s[1]),
        "machine": machine(),
        "dataset": {"digest": digest, "n_train": int(data.x_train.shape[0]),
                    "n_val": int(data.x_val.shape[0]), "n_test": int(data.x_test.shape[0]),
                    "seed": spec["data"]["seed"] if spec is not None else None},
        "versions": versions(),
        "created_utc": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
    }
    path = None
    if out is not None:
        path = Path(out)
        save_tree(path / MODEL_FILE, model)
        card["files"] = {MODEL_FILE: _sha256(path / MODEL_FILE)}
        save_json(path / CARD_FILE, card)
    return NetCheckpoint(model=model, card=card, path=path)


def train_net_from_spec(spec, *, out: str | Path | None = None, resume: bool = False,
                        overwrite: bool = False, progress: bool = False,
                        stop_after: int | None = None) -> NetCheckpoint:
    """Draw the spec's protocol data and train DeceptronNet (the ``invphys train`` path
    for a deblur2d spec)."""
    from .._spec import load_spec
    from ..physics.deblur2d import nominal_operator

    spec = load_spec(spec)
    if spec.problem != "deblur2d":
        raise SpecError(f"DeceptronNet trains on deblur2d specs, not {spec.problem!r}")
    data = deblur_data(spec)
    return train_deceptronnet(data, nominal_operator(spec), spec=spec, out=out,
                              resume=resume, overwrite=overwrite, progress=progress,
                              stop_after=stop_after)


# --------------------------------------------------------------------------- loading
def load_net_checkpoint(path: str | Path, spec=None) -> NetCheckpoint:
    """Load a DeceptronNet checkpoint folder (or a file in it) written by training.

    With ``spec`` (a deblur2d :class:`invphys.Spec`, a name or a path) the checkpoint
    must have been trained for it: same ``[physics]``, ``[prior]``, ``[noise]``,
    ``[data]`` and ``[train]`` sections. Raises :class:`invphys.CheckpointError` when a
    file is missing, corrupt, or does not belong to the card, or on a mismatch.
    """
    folder = Path(path)
    if folder.is_file():
        folder = folder.parent
    card_path = folder / CARD_FILE
    card = read_card(folder, path, FORMAT, "a DeceptronNet")
    try:
        cfg = NetTrainConfig.from_dict(card["config"])
        operator = operator_from_info(card["operator"])
        files = card["files"]
    except (KeyError, TypeError, ValueError, InvphysError) as e:
        raise CheckpointError(f"{card_path} is incomplete or invalid ({e})") from None
    weights = folder / MODEL_FILE
    if not weights.is_file():
        raise CheckpointError(f"checkpoint {folder} is missing {MODEL_FILE}")
    if _sha256(weights) != files.get(MODEL_FILE):
        raise CheckpointError(f"checkpoint {folder}: {MODEL_FILE} is corrupt or does not "
                              "belong to this card (SHA-256 mismatch)")
    like = eqx.filter_eval_shape(_skeleton, cfg, operator)
    model = load_tree(weights, like, "weights")
    ckpt = NetCheckpoint(model=model, card=card, path=folder)
    if spec is not None:
        check_net_compatible(ckpt, spec)
    return ckpt


def check_net_compatible(ckpt: NetCheckpoint, spec) -> None:
    """Raise CheckpointError unless ``ckpt`` was trained for ``spec`` (see
    :data:`MATCH_SECTIONS`)."""
    from .._spec import load_spec

    spec = load_spec(spec)
    card = ckpt.card
    where = f"checkpoint {ckpt.path or card.get('problem')}"
    if card.get("physics") != spec.problem:
        raise CheckpointError(f"{where} was trained on {card.get('physics')!r}, "
                              f"not {spec.problem!r}")
    theirs = card.get("spec") or {}
    mine = spec.to_dict()
    for sec in MATCH_SECTIONS:
        a, b = mine.get(sec, {}), theirs.get(sec, {})
        diff = sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k))
        if diff:
            k = diff[0]
            raise CheckpointError(f"{where} was trained with {sec}.{k}={b.get(k)!r}, "
                                  f"the spec has {a.get(k)!r}")


def load_deceptronnet(path: str | Path, spec=None) -> DeceptronNet:
    """The trained DeceptronNet of a checkpoint (see :func:`load_net_checkpoint`)."""
    return load_net_checkpoint(path, spec).model
