"""Deceptron checkpoints in the shared store (:mod:`._store`): the weights, the output
normaliser (``normaliser.npz``) and a card (format ``invphys-deceptron/1``)."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import ClassVar

import equinox as eqx
import jax.numpy as jnp
import numpy as np

from .._configs import TrainConfig
from .._data import Dataset, Normaliser
from .._errors import CheckpointError, InvphysError
from .._io import atomic_path
from .._problem import Problem
from .._spec import Spec, load_spec
from ..physics import REGISTRY, load_problem
from ._deceptron import AbstractDeceptron, skeleton_model
from ._metrics import evaluate
from ._store import (
    CARD_FILE,
    MODEL_FILE,
    StoredModel,
    card_base,
    card_spec,
    check_sections,
    load_tree,
    n_parameters,
    read_card,
    save_tree,
    write_checkpoint,
)

FORMAT = "invphys-deceptron/1"
NORM_FILE = "normaliser.npz"
EXTRA_FILES = (NORM_FILE,)
# [physics] keys that choose the numerics, not the physics: not compared on load.
NUMERICS_KEYS = frozenset({"fidelity", "solver", "rtol", "atol", "max_steps", "dtmax"})


@dataclasses.dataclass(frozen=True, kw_only=True)
class Checkpoint(StoredModel):
    """A trained Deceptron with its normaliser and model card.

    ``model.f(x)`` maps a raw x to normalised z; ``normaliser.transform(y)`` takes a raw
    observation to z, ``normaliser.inverse(z)`` back. ``card`` is the parsed card.json.
    """

    config_type: ClassVar[type] = TrainConfig
    model: AbstractDeceptron
    normaliser: Normaliser

    @property
    def problem(self) -> str:
        """The name of the spec the model was trained on."""
        return self.card["problem"]


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


def finalise(state, cfg: TrainConfig, dataset: Dataset, *, spec, history, out, complete,
             digest) -> Checkpoint:
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
        sim = REGISTRY.get(spec.problem) if spec is not None else None
        identifiable = sim.identifiable if sim is not None else None
        metrics = evaluate(model, dataset, seed=cfg.seed, probe=cfg.probe,
                           identifiable=identifiable, pinned=pinned)
    else:  # an interrupted run: the last epoch's log (no separate evaluation)
        metrics = {"val_mse": last.get("val_mse"), "rjcp": last.get("rjcp")}
    on_epochs = [h["epoch"] for h in history if h.get("jcp_on")]
    metrics.update(
        jcp_on=bool(state.extra.jcp_on),
        jcp_trigger_epoch=(on_epochs[0] - 1) if on_epochs else None,
        w_jcp_final=last.get("w_jcp", 0.0),
        train_loss=last.get("loss"),
    )
    sizes = {f"n_{s}": getattr(dataset, f"x_{s}").shape[0] for s in ("train", "val", "test")}
    card = card_base(FORMAT, spec=spec, config=cfg.to_dict(), state=state, digest=digest,
                     sizes=sizes, complete=complete)
    card["model"] = {**model.info(), "dtype": cfg.dtype, "parameters": n_parameters(model)}
    card["metrics"] = metrics
    path = None
    if out is not None:
        path = Path(out)
        write_checkpoint(path, card, {
            MODEL_FILE: lambda p: save_tree(p, model),
            NORM_FILE: lambda p: save_normaliser(p, dataset.normaliser),
        })
    return Checkpoint(model=model, normaliser=dataset.normaliser, card=card, path=path)


def load_checkpoint(path: str | Path, problem=None, *, strict: bool = True) -> Checkpoint:
    """Load a checkpoint folder (or a file inside it) written by ``invphys train``.

    With ``problem`` (a :class:`invphys.Problem`, a :class:`invphys.Spec` or a spec
    name) the checkpoint must match it: same physics, same x and y sizes, and, when
    ``strict``, the same [physics] values (numerics keys such as ``fidelity`` and
    tolerances excepted). Raises :class:`invphys.CheckpointError` otherwise, or when a
    file is missing, corrupt or does not match the card.
    """
    folder, card = read_card(path, FORMAT, "an invphys Deceptron", (MODEL_FILE, NORM_FILE))
    try:
        cfg = TrainConfig.from_dict(card["config"])
        info = card["model"]
        n, m = int(info["x_size"]), int(info["y_size"])
    except (KeyError, TypeError, ValueError, InvphysError) as e:
        raise CheckpointError(f"{folder / CARD_FILE} is incomplete or invalid ({e})") from None
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
    card = ckpt.card
    where = f"checkpoint {ckpt.path or card.get('problem')}"
    if isinstance(problem, Problem):
        spec, n = problem.spec, problem.x_size
        m = problem.y_shape()[0] if n is not None else None
    else:
        spec = problem if isinstance(problem, Spec) else load_spec(problem)
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
        try:
            check_sections(where, spec.to_dict(), card_spec(card, where), ("physics",),
                           NUMERICS_KEYS)
        except CheckpointError as e:
            raise CheckpointError(f"{e} (strict=False to allow)") from None


def matches(ckpt: Checkpoint, config: TrainConfig, digest: str) -> bool:
    """Whether ``ckpt`` was trained with ``config`` on data with ``digest`` (a card written
    before a config field existed reads as that field's default)."""
    return ckpt.card["dataset"]["digest"] == digest and ckpt.config == config
