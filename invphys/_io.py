"""File input/output with clear errors and atomic writes.

Everything invphys writes (arrays, JSON reports, checkpoints, figures) goes to a
temporary file in the destination folder and is renamed into place, so an interrupted
run never leaves a half-written file where a good one was. Loading never executes
code: arrays via NumPy (``allow_pickle=False``), metadata via JSON.

Paths are checked before any work (:func:`check_output_dir`, :func:`check_input_file`,
:func:`check_input_dir`), and an operating-system error while writing becomes an
:class:`OutputError` naming the path: the CLI prints either as one line, exit status 2.

JSON is strict (RFC 8259): no ``NaN`` or ``Infinity``. :func:`save_json` and
:func:`json_line` write a non-finite float as ``null`` and list where and why in a
top-level ``"nonfinite"`` field (``{"fields": ["final_rmse[2]", ...], "reason":
...}``) of a JSON object, so a reader never mistakes a null for a missing value.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from ._errors import InputFileError, InvphysError, NonFiniteError, ShapeError


class OutputError(InvphysError, OSError):
    """An output path cannot be written (a file where a folder is needed, a read-only
    folder, a full disk). Raised before any work where it can be seen in advance."""


def _why(e: OSError) -> str:
    return e.strerror or type(e).__name__


# ------------------------------------------------------------------ path checks
def check_output_dir(path: str | Path, *, what: str = "--out") -> Path:
    """Check, without creating anything, that ``path`` is (or can become) a writable
    folder: not an existing file, not below a file, its nearest existing folder
    writable. Raises :class:`OutputError` naming ``what``."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise OutputError(f"{what} {path} exists and is not a folder")
    anc = path
    while not anc.exists():
        if anc.is_symlink():
            raise OutputError(f"{what} {path}: {anc} is a broken symbolic link")
        if anc.parent == anc:
            break
        anc = anc.parent
    if anc.exists() and not anc.is_dir():
        raise OutputError(f"{what} {path}: {anc} is a file, not a folder")
    if not os.access(anc, os.W_OK | os.X_OK):
        raise OutputError(f"{what} {path}: folder {anc} is not writable")
    return path


def check_output_file(path: str | Path, *, what: str) -> Path:
    """Check that the file ``path`` can be written (its folder, and the file itself when
    it exists). Raises :class:`OutputError` naming ``what``."""
    path = Path(path)
    if path.is_dir():
        raise OutputError(f"{what} {path} is a folder, not a file")
    check_output_dir(path.parent, what=f"{what} {path}: folder")
    if path.exists() and not os.access(path, os.W_OK):
        raise OutputError(f"{what} {path} is not writable")
    return path


def check_input_file(path: str | Path, *, what: str) -> Path:
    """Check that ``path`` is an existing, readable file (:class:`InputFileError`)."""
    path = Path(path)
    if not path.exists():
        raise InputFileError(f"{what} file not found: {path}")
    if not path.is_file():
        raise InputFileError(f"{what} {path} is not a file")
    try:
        with open(path, "rb") as fh:
            fh.read(1)
    except OSError as e:
        raise InputFileError(f"{what} file {path} is unreadable ({_why(e)})") from None
    return path


def check_input_dir(path: str | Path, *, what: str) -> Path:
    """Check that ``path`` is an existing folder whose files are all readable (a
    checkpoint); a path to a file inside one is checked as its folder."""
    path = Path(path)
    if not path.exists():
        raise InputFileError(f"{what} not found: {path}")
    folder = path if path.is_dir() else path.parent
    try:
        entries = list(folder.iterdir())
    except OSError as e:
        raise InputFileError(f"{what} folder {folder} is unreadable ({_why(e)})") from None
    for f in entries:
        if f.is_file():
            check_input_file(f, what=what)
    return path


# ------------------------------------------------------------------ writing
@contextlib.contextmanager
def atomic_path(path: str | Path, suffix: str = ""):
    """Yield a temporary path beside ``path``; rename it onto ``path`` on success.
    An :class:`OSError` (from here or from the body) becomes an :class:`OutputError`."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix or path.suffix,
                                   dir=path.parent)
        os.close(fd)
    except OSError as e:
        raise OutputError(f"cannot write {path} ({_why(e)}: {e.filename or path.parent})"
                          ) from None
    try:
        try:
            yield Path(tmp)
            # mkstemp creates 0600 files; give the result the permissions open() would
            umask = os.umask(0)
            os.umask(umask)
            os.chmod(tmp, 0o666 & ~umask)
            os.replace(tmp, path)
        except OSError as e:
            if isinstance(e, InvphysError):
                raise
            raise OutputError(f"cannot write {path} ({_why(e)})") from None
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def sha256_file(path: str | Path) -> str:
    """The SHA-256 of a file, read in 1 MiB blocks (cards and run manifests)."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def save_npy(path: str | Path, array: Any) -> None:
    with atomic_path(path, ".npy") as tmp:
        np.save(tmp, np.asarray(array), allow_pickle=False)


NONFINITE_REASON = ("strict JSON has no NaN or Infinity: these fields held a non-finite "
                    "number (NaN, inf or -inf) and are written as null")


def to_strict(obj: Any) -> tuple[Any, list[str]]:
    """``obj`` as strict JSON data (NumPy and JAX values as Python, non-finite floats as
    None) and the paths (``"a.b[2]"``) of the floats that became None. Complex numbers
    and other values JSON cannot hold raise :class:`TypeError`."""
    where: list[str] = []

    def conv(o: Any, at: str) -> Any:
        if isinstance(o, Mapping):
            return {str(k): conv(v, f"{at}.{k}" if at else str(k)) for k, v in o.items()}
        if isinstance(o, list | tuple):
            return [conv(v, f"{at}[{i}]") for i, v in enumerate(o)]
        if isinstance(o, np.generic):
            return conv(o.item(), at)
        if hasattr(o, "__array__") and not isinstance(o, str | bytes):
            a = np.asarray(o)
            return conv(a.item() if a.ndim == 0 else a.tolist(), at)
        if isinstance(o, bool | int | str) or o is None:
            return o
        if isinstance(o, float):
            if math.isfinite(o):
                return o
            where.append(at or "<value>")
            return None
        raise TypeError(f"not JSON serialisable: {type(o).__name__} at {at or '<value>'}")

    return conv(obj, ""), where


def dumps_strict(obj: Any, **kwargs: Any) -> str:
    """Strict JSON text of ``obj`` (see the module docstring: NaN/inf -> null, listed in a
    top-level ``"nonfinite"`` field when ``obj`` is a mapping)."""
    data, where = to_strict(obj)
    if where and isinstance(data, dict):
        data["nonfinite"] = {"fields": where, "reason": NONFINITE_REASON}
    return json.dumps(data, allow_nan=False, **kwargs)


def json_line(obj: Any) -> str:
    """One strict JSON line (a ``.jsonl`` record), newline included."""
    return dumps_strict(obj) + "\n"


def save_json(path: str | Path, obj: Any) -> None:
    """Write ``obj`` as strict JSON, atomically (see :func:`dumps_strict`)."""
    text = dumps_strict(obj, indent=2) + "\n"
    with atomic_path(path, ".json") as tmp:
        tmp.write_text(text)


def save_jsonl(path: str | Path, records: Any) -> None:
    """Write one strict JSON line per record, atomically."""
    text = "".join(json_line(r) for r in records)
    with atomic_path(path, ".jsonl") as tmp:
        tmp.write_text(text)


def load_json_strict(path: str | Path) -> Any:
    """Parse a JSON file, refusing NaN/Infinity (for readers and tests)."""
    def bad(token: str) -> Any:
        raise ValueError(f"{path}: non-strict JSON token {token}")

    return json.loads(Path(path).read_text(), parse_constant=bad)


def save_figure(path: str | Path, fig: Any, **kwargs: Any) -> None:
    with atomic_path(path, Path(path).suffix) as tmp:
        fig.savefig(tmp, **{"dpi": 120, "bbox_inches": "tight", **kwargs})


def load_npy(path: str | Path, *, what: str = "array", shape: tuple | None = None,
             finite: bool = True) -> np.ndarray:
    """Load a .npy array (no pickle) with one-line errors for every way it can be bad.

    ``shape`` may use ``None`` for a free axis; a trailing-shape match also accepts a
    leading batch axis when ``shape`` starts with ``...``.
    """
    path = check_input_file(path, what=what)
    try:
        arr = np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError) as e:
        raise InputFileError(f"{what} file {path} is not a readable .npy array ({e})") from None
    if not isinstance(arr, np.ndarray):  # an .npz archive
        arr.close()
        raise InputFileError(f"{what} file {path} is an .npz archive, expected one .npy array")
    if np.issubdtype(arr.dtype, np.complexfloating):
        raise ShapeError(f"{what} file {path} holds complex values ({arr.dtype}), expected "
                         "real numbers")
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
