"""Deceptron checkpoints: weights, normaliser, model card and resumable training state.

A checkpoint is a folder::

    model.eqx        the weights (equinox.tree_serialise_leaves: a sequence of .npy blobs)
    normaliser.npz   the output normaliser (mean, scale, signal)
    card.json        config, spec, metrics, data digest, versions, SHA-256 of the files
    state.eqx        for --resume: a JSON header (epoch, config, data digest, SHA-256)
                     then the model, optimiser state and schedule flags
    state.json       a readable copy of that header
    log.jsonl        one JSON object per completed epoch

Every file is written to a temporary name and renamed into place; the card is written
last, so a folder with a card is a complete checkpoint. Nothing is ever unpickled:
arrays load with ``allow_pickle=False``, and the card's hashes catch a corrupt or
mismatched file. Every failure is a one-line :class:`~invphys.CheckpointError`.
"""

from __future__ import annotations

import dataclasses
import datetime
import hashlib
import io
import json
import platform
from pathlib import Path
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from .._data import Dataset, Normaliser
from .._errors import CheckpointError, InvphysError
from .._io import atomic_path, save_json
from ._deceptron import AbstractDeceptron, Deceptron, MLPDeceptron
from ._metrics import evaluate

FORMAT = "invphys-deceptron/1"
STATE_FORMAT = "invphys-deceptron-state/1"
MODEL_FILE, NORM_FILE, CARD_FILE = "model.eqx", "normaliser.npz", "card.json"
STATE_FILE, STATE_META, LOG_FILE = "state.eqx", "state.json", "log.jsonl"
ALL_FILES = (CARD_FILE, MODEL_FILE, NORM_FILE, STATE_META, STATE_FILE, LOG_FILE)
# [physics] keys that choose the numerics, not the physics: not compared on load.
NUMERICS_KEYS = frozenset({"fidelity", "solver", "rtol", "atol", "max_steps", "dtmax"})


@dataclasses.dataclass(frozen=True)
class Checkpoint:
    """A trained Deceptron with its normaliser and model card.

    ``model.f(x)`` maps a raw x to normalised z; ``normaliser.transform(y)`` takes a raw
    observation to z, ``normaliser.inverse(z)`` back. ``card`` is the parsed card.json.
    """

    model: AbstractDeceptron
    normaliser: Normaliser
    card: dict[str, Any]
    path: Path | None = None

    @property
    def metrics(self) -> dict[str, Any]:
        return self.card["metrics"]

    @property
    def config(self):
        from ._train import TrainConfig

        return TrainConfig.from_dict(self.card["config"])

    @property
    def problem(self) -> str:
        """The name of the spec the model was trained on."""
        return self.card["problem"]


# ------------------------------------------------------------------ serialisation
def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _read_leaf(f, x):
    """Like equinox's default deserialiser, but never unpickles."""
    if isinstance(x, jax.Array | jax.ShapeDtypeStruct):
        return jnp.asarray(np.load(f, allow_pickle=False))
    if isinstance(x, np.ndarray):
        return np.load(f, allow_pickle=False)
    if isinstance(x, bool | int | float | complex | np.generic):
        return type(x)(np.load(f, allow_pickle=False).item())
    return x


def save_tree(path: Path, tree: Any) -> None:
    """Serialise the array leaves of a pytree atomically."""
    with atomic_path(path, ".eqx") as tmp:
        eqx.tree_serialise_leaves(tmp, tree)


def load_tree(source: Path | io.BytesIO, like: Any, what: str) -> Any:
    """Load leaves saved by :func:`save_tree` (a path, or the bytes) into ``like``."""
    if isinstance(source, Path):
        if not source.is_file():
            raise CheckpointError(f"{what} file not found: {source}")
        what = f"{what} {source}"
        source = io.BytesIO(source.read_bytes())
    size = len(source.getbuffer())
    try:
        out = eqx.tree_deserialise_leaves(source, like, filter_spec=_read_leaf)
    except RuntimeError as e:  # equinox's shape/dtype/type checks
        raise CheckpointError(f"{what} does not match the model: "
                              f"{str(e).splitlines()[0]}") from None
    except (ValueError, OSError, EOFError) as e:
        raise CheckpointError(f"{what} is corrupt or truncated ({e})") from None
    if source.tell() != size:
        raise CheckpointError(f"{what} holds more data than the model "
                              f"({size - source.tell()} extra bytes): a different model?")
    return out


def save_normaliser(path: Path, norm: Normaliser) -> None:
    with atomic_path(path, ".npz") as tmp:
        np.savez(tmp, mean=np.asarray(norm.mean), scale=np.asarray(norm.scale),
                 signal=np.asarray(norm.signal))


def load_normaliser(path: Path, m: int) -> Normaliser:
    if not path.is_file():
        raise CheckpointError(f"normaliser file not found: {path}")
    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in ("mean", "scale", "signal")}
    except (KeyError, ValueError, OSError, EOFError) as e:
        raise CheckpointError(f"normaliser {path} is corrupt ({e})") from None
    for k, a in arrays.items():
        if a.shape != (m,):
            raise CheckpointError(f"normaliser {path}: '{k}' has shape {a.shape}, "
                                  f"expected ({m},)")
    if not (np.all(np.isfinite(arrays["mean"])) and np.all(arrays["scale"] > 0)):
        raise CheckpointError(f"normaliser {path} holds non-finite or non-positive values")
    return Normaliser(mean=jnp.asarray(arrays["mean"]), scale=jnp.asarray(arrays["scale"]),
                      signal=jnp.asarray(arrays["signal"], bool))


def versions() -> dict[str, str]:
    import optax

    from .. import __version__

    return {"invphys": __version__, "jax": jax.__version__,
            "jaxlib": jax.lib.__version__ if hasattr(jax.lib, "__version__") else "",
            "equinox": eqx.__version__, "optax": optax.__version__,
            "numpy": np.__version__, "python": platform.python_version()}


def machine() -> dict[str, Any]:
    """Where the timing was taken: device, CPU count and the load when training ended."""
    import os

    info: dict[str, Any] = {"device": jax.devices()[0].device_kind, "cpus": os.cpu_count(),
                            "platform": platform.platform()}
    if hasattr(os, "getloadavg"):
        info["load_avg_1min"] = round(os.getloadavg()[0], 2)
    return info


def model_info(model: AbstractDeceptron, cfg) -> dict[str, Any]:
    info: dict[str, Any] = {"class": type(model).__name__, "x_size": model.x_size,
                            "y_size": model.y_size, "dtype": cfg.dtype}
    if isinstance(model, Deceptron):
        info.update(activation=model.activation, slope=model.slope, tie_v=model.tie_v)
    elif isinstance(model, MLPDeceptron):
        info.update(width=model.width, depth=model.depth, activation=model.activation)
    n_params = sum(int(np.size(x)) for x in jax.tree_util.tree_leaves(
        eqx.filter(model, eqx.is_inexact_array)))
    info["parameters"] = n_params
    return info


# ------------------------------------------------------------------ training state
def check_out_dir(out: Path, *, resume: bool, overwrite: bool) -> None:
    """Refuse to clobber an existing run unless asked to resume or overwrite."""
    present = [f for f in ALL_FILES if (out / f).exists()]
    if not present:
        return
    if overwrite:
        for f in ALL_FILES:  # the card first: a half-cleared folder is never "complete"
            (out / f).unlink(missing_ok=True)
        return
    if not resume:
        raise CheckpointError(
            f"{out} already holds a run ({', '.join(present)}); pass --resume to continue "
            "it or --force to start afresh"
        )
    if not (out / STATE_FILE).is_file():
        raise CheckpointError(f"nothing to resume in {out}: no {STATE_FILE} (but "
                              f"{', '.join(present)}); pass --force to start afresh")


def save_train_state(out: Path, state, history: list[dict], cfg, digest: str) -> None:
    """Save the state to resume from: ONE atomic file (a JSON header, then the leaves).

    The header carries the epoch, config, data digest and the SHA-256 of the leaves, so
    a state file can never disagree with its own metadata; ``state.json`` is a readable
    copy of the header. The log is written first: it may run ahead of the state by an
    epoch (trimmed on resume), never behind.
    """
    with atomic_path(out / LOG_FILE, ".jsonl") as tmp:
        tmp.write_text("".join(json.dumps(h) + "\n" for h in history))
    buf = io.BytesIO()
    eqx.tree_serialise_leaves(buf, state)
    blob = buf.getvalue()
    meta = {
        "format": STATE_FORMAT, "epoch": int(state.epoch), "config": cfg.to_dict(),
        "dataset_digest": digest, "elapsed_s": float(state.elapsed_s[0]),
        "sha256": hashlib.sha256(blob).hexdigest(),
    }
    with atomic_path(out / STATE_FILE, ".eqx") as tmp, open(tmp, "wb") as fh:
        np.save(fh, np.frombuffer(json.dumps(meta).encode(), np.uint8), allow_pickle=False)
        fh.write(blob)
    save_json(out / STATE_META, meta)


def load_train_state(out: Path, cfg, digest: str, n: int, m: int, optimizer):
    """The saved (state, history) to resume from, or None when ``out`` holds none."""
    from ._train import TrainState, history_from_log, skeleton_model

    blob = read_state_blob(out, cfg, digest)
    if blob is None:
        return None
    path = out / STATE_FILE

    def build():
        model = skeleton_model(cfg, n, m)
        return TrainState(
            model=model, opt_state=optimizer.init(eqx.filter(model, eqx.is_inexact_array)),
            epoch=jnp.zeros((), jnp.int32), jcp_on=jnp.zeros((), bool),
            val_mse=jnp.zeros((), cfg.jnp_dtype), elapsed_s=jnp.zeros((2,), float),
        )

    state = load_tree(io.BytesIO(blob), eqx.filter_eval_shape(build), f"training state {path}")
    epoch = int(state.epoch)
    history = history_from_log(out / LOG_FILE) if (out / LOG_FILE).is_file() else []
    history = [h for h in history if h.get("epoch", 0) <= epoch]
    return state, history


def read_state_blob(out: Path, cfg, digest: str) -> bytes | None:
    """The leaves of the training state saved in ``out`` (None when there is none),
    after checking its header: format, SHA-256, the config (``cfg.to_dict()``) and the
    data digest. Shared by every trainer that saves with :func:`save_train_state`."""
    path = out / STATE_FILE
    if not path.is_file():
        return None
    data = path.read_bytes()
    f = io.BytesIO(data)
    try:
        meta = json.loads(np.load(f, allow_pickle=False).tobytes())
        assert isinstance(meta, dict)
    except (ValueError, OSError, EOFError, AssertionError):
        raise CheckpointError(f"training state {path} is corrupt (unreadable header)") from None
    if meta.get("format") != STATE_FORMAT:
        raise CheckpointError(f"{path} is not an invphys training state")
    blob = data[f.tell():]
    if hashlib.sha256(blob).hexdigest() != meta.get("sha256"):
        raise CheckpointError(f"training state {path} is corrupt (SHA-256 mismatch)")
    if meta.get("config") != cfg.to_dict():
        saved = meta.get("config") or {}
        diff = sorted(k for k in set(saved) | set(cfg.to_dict())
                      if saved.get(k) != cfg.to_dict().get(k))
        raise CheckpointError(f"cannot resume {out}: the training config differs "
                              f"({', '.join(diff)}); pass --force to start afresh")
    if meta.get("dataset_digest") != digest:
        raise CheckpointError(f"cannot resume {out}: it was trained on different data "
                              "(dataset digest differs)")
    return blob


def _read_json(path: Path, what: str) -> dict:
    try:
        obj = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, ValueError) as e:
        raise CheckpointError(f"{what} {path} is not readable JSON ({e})") from None
    if not isinstance(obj, dict):
        raise CheckpointError(f"{what} {path} is not a JSON object")
    return obj


# ------------------------------------------------------------------ final checkpoint
def finalise(state, cfg, dataset: Dataset, *, spec, history, out, complete, digest):
    """Compute the final metrics, build the card, and (with ``out``) write the checkpoint.

    ``jcp_trigger_epoch`` is the 0-based epoch in which JCP first applied (the log's
    ``epoch`` counts completed epochs, so it is the first logged epoch with ``jcp_on``,
    minus one); ``training_time_s`` / ``training_cpu_s`` sum the epochs' wall and process
    CPU time (compilation included, data simulation excluded) over every resumed session.
    """
    model = state.model
    pinned = tuple(spec["bounds"]["pin"]) if spec is not None else ()
    last = dict(history[-1]) if history else {}
    if complete:
        metrics = evaluate(model, dataset, seed=cfg.seed, probe=cfg.probe,
                           kind=spec.problem if spec is not None else None, pinned=pinned)
    else:  # an interrupted run: the last epoch's log (no separate evaluation)
        metrics = {"val_mse": last.get("val_mse"), "rjcp": last.get("rjcp")}
    on_epochs = [h["epoch"] for h in history if h.get("jcp_on")]
    metrics.update(
        jcp_on=bool(state.jcp_on),
        jcp_trigger_epoch=(on_epochs[0] - 1) if on_epochs else None,
        w_jcp_final=last.get("w_jcp", 0.0),
        train_loss=last.get("loss"),
    )
    card: dict[str, Any] = {
        "format": FORMAT,
        "problem": spec.name if spec is not None else "custom",
        "physics": spec.problem if spec is not None else None,
        "spec": spec.to_dict() if spec is not None else None,
        "spec_digest": spec.digest() if spec is not None else None,
        "model": model_info(model, cfg),
        "config": cfg.to_dict(),
        "metrics": metrics,
        "epochs_completed": int(state.epoch),
        "complete": complete,
        "training_time_s": float(state.elapsed_s[0]),
        "training_cpu_s": float(state.elapsed_s[1]),
        "machine": machine(),
        "dataset": {"digest": digest, "n_train": int(dataset.x_train.shape[0]),
                    "n_val": int(dataset.x_val.shape[0]),
                    "n_test": int(dataset.x_test.shape[0]),
                    "seed": spec["data"]["seed"] if spec is not None else None},
        "versions": versions(),
        "created_utc": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
    }
    path = None
    if out is not None:
        path = Path(out)
        save_tree(path / MODEL_FILE, model)
        save_normaliser(path / NORM_FILE, dataset.normaliser)
        card["files"] = {f: _sha256(path / f) for f in (MODEL_FILE, NORM_FILE)}
        save_json(path / CARD_FILE, card)
    return Checkpoint(model=model, normaliser=dataset.normaliser, card=card, path=path)


def read_card(folder: Path, path: str | Path, fmt: str, what: str) -> dict:
    """A checkpoint folder's card, checked: the folder exists, the card is there (else
    a hint to resume an unfinished run) and has format ``fmt`` (CheckpointError)."""
    card_path = folder / CARD_FILE
    if not folder.is_dir():
        raise CheckpointError(f"checkpoint not found: {path}")
    if not card_path.is_file():
        hint = (" (training did not finish: resume it with --resume)"
                if (folder / STATE_FILE).is_file() else "")
        raise CheckpointError(f"no checkpoint in {folder}: {CARD_FILE} not found{hint}")
    card = _read_json(card_path, "model card")
    if card.get("format") != fmt:
        raise CheckpointError(f"{card_path} is not {what} card "
                              f"(format {card.get('format')!r})")
    return card


def _resolve(path: str | Path) -> Path:
    p = Path(path)
    if p.is_file() or (not p.exists() and p.suffix in (".json", ".eqx", ".npz")):
        p = p.parent
    return p


def load_checkpoint(path: str | Path, problem=None, *, strict: bool = True) -> Checkpoint:
    """Load a checkpoint folder (or a file inside it) written by ``invphys train``.

    With ``problem`` (a :class:`invphys.Problem`, a :class:`invphys.Spec` or a spec
    name) the checkpoint must match it: same physics, same x and y sizes, and, when
    ``strict``, the same [physics] values (numerics keys such as ``fidelity`` and
    tolerances excepted). Raises :class:`invphys.CheckpointError` otherwise, or when a
    file is missing, corrupt or does not match the card.
    """
    from ._train import TrainConfig, skeleton_model

    folder = _resolve(path)
    card_path = folder / CARD_FILE
    card = read_card(folder, path, FORMAT, "an invphys Deceptron")
    try:
        cfg = TrainConfig.from_dict(card["config"])
        info = card["model"]
        n, m = int(info["x_size"]), int(info["y_size"])
        files = card["files"]
    except (KeyError, TypeError, ValueError, InvphysError) as e:
        raise CheckpointError(f"{card_path} is incomplete or invalid ({e})") from None
    for name in (MODEL_FILE, NORM_FILE):
        p = folder / name
        if not p.is_file():
            raise CheckpointError(f"checkpoint {folder} is missing {name}")
        if _sha256(p) != files.get(name):
            raise CheckpointError(f"checkpoint {folder}: {name} is corrupt or does not "
                                  f"belong to this card (SHA-256 mismatch)")
    like = eqx.filter_eval_shape(skeleton_model, cfg, n, m)
    model = load_tree(folder / MODEL_FILE, like, "weights")
    normaliser = load_normaliser(folder / NORM_FILE, m)
    ckpt = Checkpoint(model=model, normaliser=normaliser, card=card, path=folder)
    if problem is not None:
        check_compatible(ckpt, problem, strict=strict)
    return ckpt


def load_deceptron(path: str | Path, problem=None, *, strict: bool = True) -> AbstractDeceptron:
    """The trained module of a checkpoint: ``f(x)`` and ``g(z)`` on one sample, z normalised.

    See :func:`load_checkpoint` (which also returns the normaliser and card).
    """
    return load_checkpoint(path, problem, strict=strict).model


def check_compatible(ckpt: Checkpoint, problem, *, strict: bool = True) -> None:
    """Raise CheckpointError unless ``problem`` is the one ``ckpt`` was trained for."""
    from .._problem import Problem
    from .._spec import Spec, load_spec

    card = ckpt.card
    where = f"checkpoint {ckpt.path or card.get('problem')}"
    if isinstance(problem, Problem):
        spec, n = problem.spec, problem.x_size
        m = problem.y_shape()[0] if n is not None else None
    else:
        spec = problem if isinstance(problem, Spec) else load_spec(problem)
        from .. import load_problem

        p = load_problem(spec)
        n, m = p.x_size, p.y_shape()[0]
    if spec is not None and card.get("physics") is not None and card["physics"] != spec.problem:
        raise CheckpointError(f"{where} was trained on {card['physics']!r}, "
                              f"not {spec.problem!r}")
    info = card["model"]
    if (n is not None and n != info["x_size"]) or (m is not None and m != info["y_size"]):
        raise CheckpointError(f"{where} maps x of size {info['x_size']} to y of size "
                              f"{info['y_size']}; the problem has {n} and {m}")
    if strict and spec is not None and card.get("spec") is not None:
        mine, theirs = spec.to_dict().get("physics", {}), card["spec"].get("physics", {})
        diff = sorted(k for k in set(mine) | set(theirs)
                      if k not in NUMERICS_KEYS and mine.get(k) != theirs.get(k))
        if diff:
            k = diff[0]
            raise CheckpointError(f"{where} was trained with physics.{k}={theirs.get(k)!r}, "
                                  f"the problem has {mine.get(k)!r} (strict=False to allow)")
