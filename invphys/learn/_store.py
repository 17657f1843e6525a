"""The checkpoint store every training task uses: atomic files, hashed cards, resumable state.

A checkpoint is a folder::

    model.eqx        the weights (equinox.tree_serialise_leaves: a sequence of .npy blobs)
    <extras>         task-specific files (the Deceptron's normaliser.npz)
    card.json        format, config, spec, metrics, data digest, versions, and the
                     SHA-256 of every file above
    state.eqx        for --resume: a JSON header (epoch, config, data digest, SHA-256)
                     then the leaves of the training state
    state.json       a readable copy of that header
    log.jsonl        one JSON object per completed epoch

Every file is written to a temporary name and renamed into place; the card is written
last, so a folder with a card is a complete checkpoint. Nothing is ever unpickled:
arrays load with ``allow_pickle=False``, and the card's hashes catch a corrupt or
mismatched file. Every failure is a one-line :class:`~invphys.CheckpointError` that
names the file, or the field that does not match.
"""

from __future__ import annotations

import dataclasses
import datetime
import hashlib
import io
import json
import os
import platform
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, ClassVar

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax

from .._errors import CheckpointError, InvphysError
from .._io import atomic_path, dumps_strict, save_json, save_jsonl, sha256_file
from .._spec import spec_from_dict

STATE_FORMAT = "invphys-train-state/1"
#: Headers of states written before the store was shared (still read for --resume).
OLD_STATE_FORMATS = ("invphys-deceptron-state/1",)
MODEL_FILE, CARD_FILE = "model.eqx", "card.json"
STATE_FILE, STATE_META, LOG_FILE = "state.eqx", "state.json", "log.jsonl"
RUN_FILES = (CARD_FILE, MODEL_FILE, STATE_META, STATE_FILE, LOG_FILE)


# ------------------------------------------------------------------ files and trees
sha256 = sha256_file  # the store's name for it

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
        try:
            source = io.BytesIO(source.read_bytes())
        except OSError as e:
            raise CheckpointError(f"{what} is unreadable ({e.strerror})") from None
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


def read_json(path: Path, what: str) -> dict:
    try:
        obj = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, ValueError) as e:
        raise CheckpointError(f"{what} {path} is not readable JSON ({e})") from None
    if not isinstance(obj, dict):
        raise CheckpointError(f"{what} {path} is not a JSON object")
    return obj


def versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    try:
        ours = version("invphys")
    except PackageNotFoundError:  # pragma: no cover - running from a bare checkout
        ours = "unknown"
    return {"invphys": ours, "jax": jax.__version__,
            "jaxlib": jax.lib.__version__ if hasattr(jax.lib, "__version__") else "",
            "equinox": eqx.__version__, "optax": optax.__version__,
            "numpy": np.__version__, "python": platform.python_version()}


def machine() -> dict[str, Any]:
    """Where the timing was taken: device, CPU count and the load when training ended."""
    info: dict[str, Any] = {"device": jax.devices()[0].device_kind, "cpus": os.cpu_count(),
                            "platform": platform.platform()}
    if hasattr(os, "getloadavg"):
        info["load_avg_1min"] = round(os.getloadavg()[0], 2)
    return info


def n_parameters(model: Any) -> int:
    return sum(int(np.size(a)) for a in jax.tree_util.tree_leaves(
        eqx.filter(model, eqx.is_inexact_array)))


# ------------------------------------------------------------------ training state
def check_out_dir(out: Path, *, resume: bool, overwrite: bool,
                  extra_files: tuple[str, ...] = ()) -> None:
    """Refuse to clobber an existing run unless asked to resume or overwrite."""
    files = RUN_FILES + extra_files
    if out.exists() and not out.is_dir():
        raise CheckpointError(f"--out {out} exists and is not a folder")
    present = [f for f in files if (out / f).exists()]
    if not present:
        return
    if overwrite:
        for f in files:  # the card first: a half-cleared folder is never "complete"
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


def save_state(out: Path, state: Any, history: list[dict], config: Mapping[str, Any],
               digest: str) -> None:
    """Save the state to resume from: ONE atomic file (a JSON header, then the leaves).

    The header carries the epoch, config, data digest and the SHA-256 of the leaves, so
    a state file can never disagree with its own metadata; ``state.json`` is a readable
    copy of the header. The log is written first: it may run ahead of the state by an
    epoch (trimmed on resume), never behind.
    """
    save_jsonl(out / LOG_FILE, history)
    buf = io.BytesIO()
    eqx.tree_serialise_leaves(buf, state)
    blob = buf.getvalue()
    meta = {
        "format": STATE_FORMAT, "epoch": int(state.epoch), "config": dict(config),
        "dataset_digest": digest, "elapsed_s": float(state.elapsed_s[0]),
        "sha256": hashlib.sha256(blob).hexdigest(),
    }
    with atomic_path(out / STATE_FILE, ".eqx") as tmp, open(tmp, "wb") as fh:
        np.save(fh, np.frombuffer(dumps_strict(meta).encode(), np.uint8),
                allow_pickle=False)
        fh.write(blob)
    save_json(out / STATE_META, meta)


def load_state(out: Path, like: Callable[[], Any], config: Mapping[str, Any],
               digest: str) -> tuple[Any, list[dict]] | None:
    """The saved ``(state, history)`` in ``out`` (None when there is none), after
    checking the header: format, SHA-256, the config and the data digest. ``like``
    builds a state of the right structure (it is only shape-evaluated)."""
    path = out / STATE_FILE
    if not path.is_file():
        return None
    try:
        data = path.read_bytes()
    except OSError as e:
        raise CheckpointError(f"training state {path} is unreadable ({e.strerror})") from None
    f = io.BytesIO(data)
    try:
        meta = json.loads(np.load(f, allow_pickle=False).tobytes())
        assert isinstance(meta, dict)
    except (ValueError, OSError, EOFError, AssertionError):
        raise CheckpointError(f"training state {path} is corrupt (unreadable header)") from None
    if meta.get("format") not in (STATE_FORMAT, *OLD_STATE_FORMATS):
        raise CheckpointError(f"{path} is not an invphys training state")
    blob = data[f.tell():]
    if hashlib.sha256(blob).hexdigest() != meta.get("sha256"):
        raise CheckpointError(f"training state {path} is corrupt (SHA-256 mismatch)")
    mine = dict(config)
    if meta.get("config") != mine:
        saved = meta.get("config") or {}
        diff = sorted(k for k in set(saved) | set(mine) if saved.get(k) != mine.get(k))
        raise CheckpointError(f"cannot resume {out}: the training config differs "
                              f"({', '.join(diff)}); pass --force to start afresh")
    if meta.get("dataset_digest") != digest:
        raise CheckpointError(f"cannot resume {out}: it was trained on different data "
                              "(dataset digest differs)")
    state = load_tree(io.BytesIO(blob), eqx.filter_eval_shape(like), f"training state {path}")
    history = read_log(out / LOG_FILE) if (out / LOG_FILE).is_file() else []
    return state, [h for h in history if h.get("epoch", 0) <= int(state.epoch)]


def read_log(path: str | Path) -> list[dict[str, Any]]:
    """Read a ``log.jsonl`` (one JSON object per epoch)."""
    try:
        lines = Path(path).read_text().splitlines()
        return [json.loads(line) for line in lines if line.strip()]
    except (OSError, ValueError) as e:
        raise CheckpointError(f"training log {path} is unreadable ({e})") from None


# ------------------------------------------------------------------ final checkpoint
@dataclasses.dataclass(frozen=True, kw_only=True)
class StoredModel:
    """A trained model with its parsed card (and its folder, when loaded); subclasses
    name their config class and add what else their checkpoint holds."""

    config_type: ClassVar[type]
    model: Any
    card: dict[str, Any]
    path: Path | None = None

    @property
    def metrics(self) -> dict[str, Any]:
        return self.card["metrics"]

    @property
    def config(self):
        """The training config (a key added since the card was written reads as its
        default)."""
        return self.config_type.from_dict(self.card["config"])


def card_base(fmt: str, *, spec, config: Mapping[str, Any], state, digest: str,
              sizes: Mapping[str, int], complete: bool) -> dict[str, Any]:
    """The fields every card has (the task adds ``model`` and ``metrics``)."""
    return {
        "format": fmt,
        "problem": spec.name if spec is not None else "custom",
        "physics": spec.problem if spec is not None else None,
        "spec": spec.to_dict() if spec is not None else None,
        "spec_digest": spec.digest() if spec is not None else None,
        "config": dict(config),
        "epochs_completed": int(state.epoch),
        "complete": complete,
        "training_time_s": float(state.elapsed_s[0]),
        "training_cpu_s": float(state.elapsed_s[1]),
        "machine": machine(),
        "dataset": {"digest": digest, **{k: int(v) for k, v in sizes.items()},
                    "seed": spec["data"]["seed"] if spec is not None else None},
        "versions": versions(),
        "created_utc": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
    }


def write_checkpoint(folder: Path, card: dict[str, Any],
                     writers: Mapping[str, Callable[[Path], None]]) -> None:
    """Write each file with its writer, hash it into the card, and write the card last."""
    for name, write in writers.items():
        write(folder / name)
    card["files"] = {name: sha256(folder / name) for name in writers}
    save_json(folder / CARD_FILE, card)


def resolve_folder(path: str | Path) -> Path:
    """A checkpoint folder from the folder or a file inside it."""
    p = Path(path)
    if p.is_file() or (not p.exists() and p.suffix in (".json", ".eqx", ".npz")):
        p = p.parent
    return p


def read_card(path: str | Path, fmt: str, what: str,
              files: tuple[str, ...] = (MODEL_FILE,)) -> tuple[Path, dict]:
    """``(folder, card)`` of a checkpoint, checked: the folder exists, the card is there
    (else a hint to resume an unfinished run), it has format ``fmt``, and each of
    ``files`` is present with the SHA-256 the card records."""
    folder = resolve_folder(path)
    card_path = folder / CARD_FILE
    if not folder.is_dir():
        raise CheckpointError(f"checkpoint not found: {path}")
    if not card_path.is_file():
        hint = (" (training did not finish: resume it with --resume)"
                if (folder / STATE_FILE).is_file() else "")
        raise CheckpointError(f"no checkpoint in {folder}: {CARD_FILE} not found{hint}")
    card = read_json(card_path, "model card")
    if card.get("format") != fmt:
        raise CheckpointError(f"{card_path} is not {what} card "
                              f"(format {card.get('format')!r})")
    recorded = card.get("files")
    if not isinstance(recorded, dict):
        raise CheckpointError(f"{card_path} is incomplete or invalid (no 'files')")
    for name in files:
        p = folder / name
        if not p.is_file():
            raise CheckpointError(f"checkpoint {folder} is missing {name}")
        try:
            digest = sha256(p)
        except OSError as e:
            raise CheckpointError(f"checkpoint {folder}: {name} is unreadable "
                                  f"({e.strerror})") from None
        if digest != recorded.get(name):
            raise CheckpointError(f"checkpoint {folder}: {name} is corrupt or does not "
                                  f"belong to this card (SHA-256 mismatch)")
    return folder, card


def first_mismatch(mine: Mapping[str, Any], theirs: Mapping[str, Any],
                   ignore: frozenset[str] = frozenset()) -> str | None:
    """The first key (sorted) whose values differ, or None."""
    diff = sorted(k for k in set(mine) | set(theirs)
                  if k not in ignore and mine.get(k) != theirs.get(k))
    return diff[0] if diff else None


def card_spec(card: Mapping[str, Any], where: str) -> dict[str, Any]:
    """The spec a card was trained with, read against today's schema: a key the card
    lacks (written before the key existed) reads as its default, as config fields do.
    CheckpointError if the card's spec is not valid today."""
    try:
        raw = {sec: ({k: v for k, v in keys.items() if v is not None}
                     if isinstance(keys, dict) else keys)
               for sec, keys in (card.get("spec") or {}).items()}
        return spec_from_dict(raw, source=str(where)).to_dict()
    except InvphysError as e:
        raise CheckpointError(f"{where}: its card's spec is not valid today ({e})") from None


def check_sections(where: str, mine: Mapping[str, Any], theirs: Mapping[str, Any],
                   sections: tuple[str, ...], ignore: frozenset[str] = frozenset()) -> None:
    """CheckpointError naming the first ``section.key`` where two spec dicts differ."""
    for sec in sections:
        a, b = mine.get(sec, {}) or {}, theirs.get(sec, {}) or {}
        k = first_mismatch(a, b, ignore)
        if k is not None:
            raise CheckpointError(f"{where} was trained with {sec}.{k}={b.get(k)!r}, "
                                  f"the spec has {a.get(k)!r}")
