"""File input/output with clear errors and atomic writes.

Everything invphys writes (arrays, JSON reports, checkpoints, figures) goes to a
temporary file in the destination folder and is renamed into place, so an interrupted
run never leaves a half-written file where a good one was. Loading never executes
code: arrays via NumPy (``allow_pickle=False``), metadata via JSON.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from ._errors import InputFileError, NonFiniteError, ShapeError


@contextlib.contextmanager
def atomic_path(path: str | Path, suffix: str = ""):
    """Yield a temporary path beside ``path``; rename it onto ``path`` on success."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix or path.suffix,
                               dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        # mkstemp creates 0600 files; give the result the permissions a plain open() would
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def save_npy(path: str | Path, array: Any) -> None:
    with atomic_path(path, ".npy") as tmp:
        np.save(tmp, np.asarray(array), allow_pickle=False)


def save_json(path: str | Path, obj: Any) -> None:
    with atomic_path(path, ".json") as tmp:
        tmp.write_text(json.dumps(obj, indent=2, default=_json_default) + "\n")


def save_figure(path: str | Path, fig: Any, **kwargs: Any) -> None:
    with atomic_path(path, Path(path).suffix) as tmp:
        fig.savefig(tmp, **{"dpi": 120, "bbox_inches": "tight", **kwargs})


def _json_default(o: Any) -> Any:
    if isinstance(o, np.generic):
        return o.item()
    if hasattr(o, "tolist"):
        return np.asarray(o).tolist()
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def load_npy(path: str | Path, *, what: str = "array", shape: tuple | None = None,
             finite: bool = True) -> np.ndarray:
    """Load a .npy array (no pickle) with one-line errors for every way it can be bad.

    ``shape`` may use ``None`` for a free axis; a trailing-shape match also accepts a
    leading batch axis when ``shape`` starts with ``...``.
    """
    path = Path(path)
    if not path.is_file():
        raise InputFileError(f"{what} file not found: {path}")
    try:
        arr = np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError) as e:
        raise InputFileError(f"{what} file {path} is not a readable .npy array ({e})") from None
    if not np.issubdtype(arr.dtype, np.number):
        raise ShapeError(f"{what} file {path} holds {arr.dtype} values, expected numbers")
    if shape is not None and not _shape_ok(arr.shape, shape):
        raise ShapeError(f"{what} file {path} has shape {arr.shape}, expected {_fmt(shape)}")
    if finite and not np.all(np.isfinite(arr)):
        raise NonFiniteError(f"{what} file {path} contains NaN or inf")
    return arr


def _shape_ok(got: tuple, want: tuple) -> bool:
    if want and want[0] is Ellipsis:
        tail = want[1:]
        return len(got) >= len(tail) and _shape_ok(got[len(got) - len(tail):], tail)
    return len(got) == len(want) and all(
        w is None or g == w for g, w in zip(got, want, strict=True)
    )


def _fmt(shape: tuple) -> str:
    return "(" + ", ".join("..." if s is Ellipsis else "any" if s is None else str(s)
                           for s in shape) + ")"
