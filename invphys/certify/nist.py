"""The 27 NIST StRD nonlinear-regression datasets, as jax residual functions.

NIST's Statistical Reference Datasets give, for each problem, data, two starting points
and parameter values / residual sum of squares certified to 11 significant digits
(computed in 128-bit arithmetic). They are the standard way to check that a
least-squares solver is *accurate*, not merely convergent: the score of a run is the log
relative error (:func:`lre`) of its estimate against the certified values.

The data and the certified numbers are parsed from the ``.dat`` files shipped in
``data/nist_strd/`` (layout described in that folder's README). The model formulas are
written out by hand below (:data:`NIST_MODELS`); nothing in a file is ever evaluated as
code. Each formula is checked by the tests against NIST's certified residual sum of
squares, which a single wrong sign or exponent would miss by orders of magnitude.
(Lanczos1 is the one exception to checking at the certified point itself: its certified
RSS, 1.4e-25, is below what the 11-digit certified values can reproduce in any
arithmetic, so its check takes one Gauss-Newton step first; see the tests.)
"""

from __future__ import annotations

import dataclasses
import functools
import math
import re
from collections.abc import Callable, Sequence
from pathlib import Path

import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, ArrayLike, Float

from .._errors import InputFileError

__all__ = [
    "NIST_DATASETS",
    "NIST_MODELS",
    "NISTProblem",
    "load_nist",
    "lre",
]

#: The 27 datasets in NIST's order, each with its NIST level of difficulty.
NIST_DATASETS: tuple[tuple[str, str], ...] = (
    # lower difficulty
    ("Misra1a", "lower"),
    ("Chwirut2", "lower"),
    ("Chwirut1", "lower"),
    ("Lanczos3", "lower"),
    ("Gauss1", "lower"),
    ("Gauss2", "lower"),
    ("DanWood", "lower"),
    ("Misra1b", "lower"),
    # average difficulty
    ("Kirby2", "average"),
    ("Hahn1", "average"),
    ("Nelson", "average"),
    ("MGH17", "average"),
    ("Lanczos1", "average"),
    ("Lanczos2", "average"),
    ("Gauss3", "average"),
    ("Misra1c", "average"),
    ("Misra1d", "average"),
    ("Roszman1", "average"),
    ("ENSO", "average"),
    # higher difficulty
    ("MGH09", "higher"),
    ("Thurber", "higher"),
    ("BoxBOD", "higher"),
    ("Rat42", "higher"),
    ("MGH10", "higher"),
    ("Eckerle4", "higher"),
    ("Rat43", "higher"),
    ("Bennett5", "higher"),
)

_DIFFICULTY = dict(NIST_DATASETS)
_DATA_DIR = Path(__file__).resolve().parent / "data" / "nist_strd"

#: Roszman1's file states the value of pi its model uses (30 digits; the float64
#: nearest to it is math.pi). ENSO uses pi without stating it.
ROSZMAN1_PI = 3.141592653589793238462643383279

Params = Float[Array, " p"]
Predictor = Float[Array, " n"] | Float[Array, "n 2"]
Model = Callable[[Params, Predictor], Float[Array, " n"]]


# --------------------------------------------------------------------------------------
# Model formulas, transcribed by hand from the "Model:" block of each file.
# b[0] is NIST's b1, b[1] is b2, and so on.
# --------------------------------------------------------------------------------------


def _misra1a(b, x):  # y = b1*(1-exp[-b2*x])
    return b[0] * (1.0 - jnp.exp(-b[1] * x))


def _chwirut(b, x):  # y = exp[-b1*x]/(b2+b3*x)   (Chwirut1 and Chwirut2)
    return jnp.exp(-b[0] * x) / (b[1] + b[2] * x)


def _lanczos(b, x):  # y = b1*exp(-b2*x) + b3*exp(-b4*x) + b5*exp(-b6*x)
    return b[0] * jnp.exp(-b[1] * x) + b[2] * jnp.exp(-b[3] * x) + b[4] * jnp.exp(-b[5] * x)


def _gauss(b, x):
    # y = b1*exp( -b2*x ) + b3*exp( -(x-b4)**2 / b5**2 ) + b6*exp( -(x-b7)**2 / b8**2 )
    return (
        b[0] * jnp.exp(-b[1] * x)
        + b[2] * jnp.exp(-((x - b[3]) ** 2) / b[4] ** 2)
        + b[5] * jnp.exp(-((x - b[6]) ** 2) / b[7] ** 2)
    )


def _danwood(b, x):  # y = b1*x**b2
    return b[0] * x ** b[1]


def _misra1b(b, x):  # y = b1 * (1-(1+b2*x/2)**(-2))
    return b[0] * (1.0 - (1.0 + b[1] * x / 2.0) ** (-2))


def _kirby2(b, x):  # y = (b1 + b2*x + b3*x**2) / (1 + b4*x + b5*x**2)
    return (b[0] + b[1] * x + b[2] * x**2) / (1.0 + b[3] * x + b[4] * x**2)


def _cubic_over_cubic(b, x):
    # y = (b1 + b2*x + b3*x**2 + b4*x**3) / (1 + b5*x + b6*x**2 + b7*x**3)  (Hahn1, Thurber)
    return (b[0] + b[1] * x + b[2] * x**2 + b[3] * x**3) / (
        1.0 + b[4] * x + b[5] * x**2 + b[6] * x**3
    )


def _nelson(b, x):  # log[y] = b1 - b2*x1 * exp[-b3*x2]   (x[:, 0] = x1, x[:, 1] = x2)
    return b[0] - b[1] * x[:, 0] * jnp.exp(-b[2] * x[:, 1])


def _mgh17(b, x):  # y = b1 + b2*exp[-x*b4] + b3*exp[-x*b5]
    return b[0] + b[1] * jnp.exp(-x * b[3]) + b[2] * jnp.exp(-x * b[4])


def _misra1c(b, x):  # y = b1 * (1-(1+2*b2*x)**(-.5))
    return b[0] * (1.0 - (1.0 + 2.0 * b[1] * x) ** (-0.5))


def _misra1d(b, x):  # y = b1*b2*x*((1+b2*x)**(-1))
    return b[0] * b[1] * x * ((1.0 + b[1] * x) ** (-1))


def _roszman1(b, x):  # y = b1 - b2*x - arctan[b3/(x-b4)]/pi
    return b[0] - b[1] * x - jnp.arctan(b[2] / (x - b[3])) / ROSZMAN1_PI


def _enso(b, x):
    # y = b1 + b2*cos( 2*pi*x/12 ) + b3*sin( 2*pi*x/12 )
    #        + b5*cos( 2*pi*x/b4 ) + b6*sin( 2*pi*x/b4 )
    #        + b8*cos( 2*pi*x/b7 ) + b9*sin( 2*pi*x/b7 )
    w0 = 2.0 * math.pi * x / 12.0
    w1 = 2.0 * math.pi * x / b[3]
    w2 = 2.0 * math.pi * x / b[6]
    return (
        b[0]
        + b[1] * jnp.cos(w0)
        + b[2] * jnp.sin(w0)
        + b[4] * jnp.cos(w1)
        + b[5] * jnp.sin(w1)
        + b[7] * jnp.cos(w2)
        + b[8] * jnp.sin(w2)
    )


def _mgh09(b, x):  # y = b1*(x**2+x*b2) / (x**2+x*b3+b4)
    return b[0] * (x**2 + x * b[1]) / (x**2 + x * b[2] + b[3])


def _boxbod(b, x):  # y = b1*(1-exp[-b2*x])
    return b[0] * (1.0 - jnp.exp(-b[1] * x))


def _rat42(b, x):  # y = b1 / (1+exp[b2-b3*x])
    return b[0] / (1.0 + jnp.exp(b[1] - b[2] * x))


def _mgh10(b, x):  # y = b1 * exp[b2/(x+b3)]
    return b[0] * jnp.exp(b[1] / (x + b[2]))


def _eckerle4(b, x):  # y = (b1/b2) * exp[-0.5*((x-b3)/b2)**2]
    return (b[0] / b[1]) * jnp.exp(-0.5 * ((x - b[2]) / b[1]) ** 2)


def _rat43(b, x):  # y = b1 / ((1+exp[b2-b3*x])**(1/b4))
    return b[0] / ((1.0 + jnp.exp(b[1] - b[2] * x)) ** (1.0 / b[3]))


def _bennett5(b, x):  # y = b1 * (b2+x)**(-1/b3)
    return b[0] * (b[1] + x) ** (-1.0 / b[2])


#: name -> model function ``f(b, x)``; the regression model is ``y = f(b, x) + e``
#: (for Nelson, ``log(y) = f(b, x) + e``).
NIST_MODELS: dict[str, Model] = {
    "Misra1a": _misra1a,
    "Chwirut2": _chwirut,
    "Chwirut1": _chwirut,
    "Lanczos3": _lanczos,
    "Gauss1": _gauss,
    "Gauss2": _gauss,
    "DanWood": _danwood,
    "Misra1b": _misra1b,
    "Kirby2": _kirby2,
    "Hahn1": _cubic_over_cubic,
    "Nelson": _nelson,
    "MGH17": _mgh17,
    "Lanczos1": _lanczos,
    "Lanczos2": _lanczos,
    "Gauss3": _gauss,
    "Misra1c": _misra1c,
    "Misra1d": _misra1d,
    "Roszman1": _roszman1,
    "ENSO": _enso,
    "MGH09": _mgh09,
    "Thurber": _cubic_over_cubic,
    "BoxBOD": _boxbod,
    "Rat42": _rat42,
    "MGH10": _mgh10,
    "Eckerle4": _eckerle4,
    "Rat43": _rat43,
    "Bennett5": _bennett5,
}

#: Number of parameters of each model (cross-checked against the file when loading).
_N_PARAMS: dict[str, int] = {
    "Misra1a": 2, "Chwirut2": 3, "Chwirut1": 3, "Lanczos3": 6, "Gauss1": 8, "Gauss2": 8,
    "DanWood": 2, "Misra1b": 2, "Kirby2": 5, "Hahn1": 7, "Nelson": 3, "MGH17": 5,
    "Lanczos1": 6, "Lanczos2": 6, "Gauss3": 8, "Misra1c": 2, "Misra1d": 2, "Roszman1": 4,
    "ENSO": 9, "MGH09": 4, "Thurber": 7, "BoxBOD": 2, "Rat42": 3, "MGH10": 3,
    "Eckerle4": 3, "Rat43": 4, "Bennett5": 3,
}  # fmt: skip


@dataclasses.dataclass(frozen=True, eq=False)
class NISTProblem:
    """One NIST StRD nonlinear-regression problem with its certified solution.

    Attributes:
        name: the dataset name, e.g. ``"Misra1a"``.
        difficulty: NIST's level of difficulty: ``"lower"``, ``"average"`` or ``"higher"``.
        x: the predictor, shape ``(n,)`` (``(n, 2)`` for Nelson: columns x1, x2).
        y: the response, shape ``(n,)``.
        starts: NIST's two starting points, shape ``(2, p)`` (row 0 far, row 1 near).
        certified: certified parameter values, shape ``(p,)``.
        certified_sd: certified standard deviations of the parameters, shape ``(p,)``.
        certified_rss: certified residual sum of squares at ``certified``.

    The arrays are read-only, so a problem can be shared (``load_nist`` caches them).
    Equality and hashing are by identity (arrays make value equality ambiguous).
    """

    name: str
    difficulty: str
    x: np.ndarray
    y: np.ndarray
    starts: np.ndarray
    certified: np.ndarray
    certified_sd: np.ndarray
    certified_rss: float

    @property
    def n(self) -> int:
        """Number of observations."""
        return int(self.y.shape[0])

    @property
    def p(self) -> int:
        """Number of parameters."""
        return int(self.certified.shape[0])

    def model(self, b: ArrayLike) -> Float[Array, " n"]:
        """The model prediction ``f(b, x)`` (for Nelson: of ``log(y)``)."""
        b = _as_float(b)
        if b.shape != (self.p,):
            raise ValueError(f"{self.name}: expected b of shape ({self.p},), got {b.shape}")
        return NIST_MODELS[self.name](b, jnp.asarray(self.x, dtype=b.dtype))

    def residual(self, b: ArrayLike) -> Float[Array, " n"]:
        """Residual ``y - f(b, x)``, shape ``(n,)``; Nelson: ``log(y) - f(b, x)``.

        Pure jax.numpy: traceable under ``jit``/``vmap`` and differentiable with
        ``jacfwd``/``jacrev``; it computes in the dtype of ``b`` (float64 when x64 is on).
        """
        b = _as_float(b)
        y = jnp.asarray(self.y, dtype=b.dtype)
        if self.name == "Nelson":
            y = jnp.log(y)
        return y - self.model(b)

    def rss(self, b: ArrayLike) -> Float[Array, ""]:
        """Residual sum of squares ``sum(residual(b)**2)``, the quantity NIST certifies."""
        r = self.residual(b)
        return jnp.sum(r * r)


def _as_float(b: ArrayLike) -> Array:
    """``b`` as a jax array of a floating dtype (integers become the default float)."""
    b = jnp.asarray(b)
    if not jnp.issubdtype(b.dtype, jnp.floating):
        b = b.astype(jnp.result_type(float))
    return b


# --------------------------------------------------------------------------------------
# Parsing
# --------------------------------------------------------------------------------------

_RANGE = re.compile(r"^\s*(Starting|Certified)\s+Values\s*\(lines\s+(\d+)\s+to\s+(\d+)\)")
_DATA_RANGE = re.compile(r"^\s*Data\s*\(lines\s+(\d+)\s+to\s+(\d+)\)")
_PARAM = re.compile(r"^\s*b(\d+)\s*=\s*(.*)$")
_LEVEL = re.compile(r"^\s*(Lower|Average|Higher)\s+Level\s+of\s+Difficulty", re.IGNORECASE)


def _corrupt(path: Path, what: str) -> ValueError:
    return ValueError(f"{path.name}: corrupt NIST StRD file ({what}) [{path}]")


def _floats(path: Path, lineno: int, text: str, count: int) -> list[float]:
    fields = text.split()
    if len(fields) != count:
        raise _corrupt(path, f"line {lineno}: expected {count} numbers, got {len(fields)}")
    try:
        values = [float(f) for f in fields]
    except ValueError:
        raise _corrupt(path, f"line {lineno}: not a number in {text.strip()!r}") from None
    if not all(math.isfinite(v) for v in values):
        raise _corrupt(path, f"line {lineno}: non-finite number")
    return values


def _labelled_number(path: Path, lines: list[str], label: str) -> float:
    for i, line in enumerate(lines):
        if line.strip().startswith(label):
            _, _, rest = line.partition(":")
            return _floats(path, i + 1, rest, 1)[0]
    raise _corrupt(path, f"no {label!r} line")


def _parse(name: str, path: Path) -> NISTProblem:
    try:
        text = path.read_text(encoding="ascii")
    except FileNotFoundError:
        raise InputFileError(f"{path.name}: NIST StRD file not found [{path}]") from None
    except (OSError, UnicodeDecodeError) as e:
        raise _corrupt(path, f"unreadable: {e}") from None
    lines = text.splitlines()

    # Header: line ranges of the parameter block and of the data.
    head = lines[:40]
    ranges = {m.group(1): (int(m.group(2)), int(m.group(3))) for ln in head
              if (m := _RANGE.match(ln))}
    data_range = next((m for ln in head if (m := _DATA_RANGE.match(ln))), None)
    if "Starting" not in ranges or data_range is None:
        raise _corrupt(path, "header without 'Starting Values' / 'Data' line ranges")
    first, last = ranges["Starting"]
    p = last - first + 1
    if p != _N_PARAMS[name]:
        raise _corrupt(path, f"{p} parameters in the header, the {name} model has "
                             f"{_N_PARAMS[name]}")
    level = next((m.group(1).lower() for ln in head if (m := _LEVEL.match(ln))), None)
    if level != _DIFFICULTY[name]:
        raise _corrupt(path, f"level of difficulty {level!r}, expected {_DIFFICULTY[name]!r}")

    # Parameter lines: "bk = start1 start2 certified sd".
    params = []
    for k in range(p):
        lineno = first + k
        m = _PARAM.match(lines[lineno - 1]) if lineno <= len(lines) else None
        if m is None or int(m.group(1)) != k + 1:
            raise _corrupt(path, f"line {lineno}: expected 'b{k + 1} = ...'")
        params.append(_floats(path, lineno, m.group(2), 4))
    table = np.array(params, dtype=np.float64)

    rss = _labelled_number(path, lines, "Residual Sum of Squares")
    n_obs = int(_labelled_number(path, lines, "Number of Observations"))

    # Data block: "y x" (or "y x1 x2" for Nelson), one observation per line.
    d0, d1 = int(data_range.group(1)), int(data_range.group(2))
    if d1 - d0 + 1 != n_obs or d1 > len(lines):
        raise _corrupt(path, f"data lines {d0}-{d1} do not hold {n_obs} observations")
    ncol = 3 if name == "Nelson" else 2
    data = np.array(
        [_floats(path, i, lines[i - 1], ncol) for i in range(d0, d1 + 1)], dtype=np.float64
    )
    if any(ln.strip() for ln in lines[d1:]):
        raise _corrupt(path, f"text after the last data line {d1}")

    y = data[:, 0]
    x = data[:, 1:] if name == "Nelson" else data[:, 1]
    arrays = {
        "x": np.ascontiguousarray(x),
        "y": np.ascontiguousarray(y),
        "starts": np.ascontiguousarray(table[:, :2].T),
        "certified": np.ascontiguousarray(table[:, 2]),
        "certified_sd": np.ascontiguousarray(table[:, 3]),
    }
    for a in arrays.values():
        a.setflags(write=False)
    return NISTProblem(name=name, difficulty=level, certified_rss=rss, **arrays)


def load_nist(name: str, data_dir: str | Path | None = None) -> NISTProblem:
    """Load one NIST StRD problem by name (case-insensitive), e.g. ``load_nist("Misra1a")``.

    Reads ``<data_dir>/<name>.dat`` (default: the copy shipped in this package) and checks
    it: the header's line ranges, parameter count, level of difficulty and number of
    observations must agree with the data. Results from the shipped copy are cached.

    Raises:
        ValueError: unknown dataset name, or a corrupt file (the message names the file).
        FileNotFoundError: the file is missing (an ``InputFileError``, naming the file).
    """
    canonical = {k.lower(): k for k in _DIFFICULTY}.get(str(name).lower())
    if canonical is None:
        raise ValueError(
            f"unknown NIST StRD dataset {name!r}; known: {', '.join(_DIFFICULTY)}"
        )
    if data_dir is None:
        return _load_shipped(canonical)
    return _parse(canonical, Path(data_dir) / f"{canonical}.dat")


@functools.cache
def _load_shipped(name: str) -> NISTProblem:
    return _parse(name, _DATA_DIR / f"{name}.dat")


def lre(estimate: ArrayLike | Sequence[float], certified: ArrayLike | Sequence[float]) -> float:
    """Log relative error of an estimate against certified values: NIST's accuracy score.

    Per parameter ``-log10(|b - c| / |c|)`` (``-log10|b|`` where ``c == 0``), i.e. the
    number of correct significant digits; the score is the minimum over parameters,
    clipped to ``[0, 11]`` (NIST certifies 11 digits, so more cannot be claimed; a
    negative value means no correct digit). Exact agreement scores 11; any non-finite
    estimate scores 0.
    """
    b = np.asarray(estimate, dtype=np.float64).ravel()
    c = np.asarray(certified, dtype=np.float64).ravel()
    if b.shape != c.shape:
        raise ValueError(f"estimate has {b.size} values, certified has {c.size}")
    if b.size == 0:
        raise ValueError("lre of an empty parameter vector")
    if not np.all(np.isfinite(b)):
        return 0.0
    if not np.all(np.isfinite(c)):
        raise ValueError("certified values must be finite")
    err = np.abs(b - c)
    scale = np.where(c == 0.0, 1.0, np.abs(c))
    with np.errstate(divide="ignore"):
        digits = -np.log10(err / scale)  # +inf where exact
    return float(np.clip(np.min(digits), 0.0, 11.0))
