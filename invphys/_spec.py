"""Experiment specifications: TOML files in ``problems/``, loaded by name or path, validated.

A spec names a physics problem (``problem = "heat1d"``) and holds the protocol in
sections: ``[physics]`` (the simulator), ``[prior]`` (how ground-truth x are drawn),
``[noise]``, ``[bounds]``, ``[data]`` (splits and seed) and ``[solve]`` (start and
tolerance). Every key is checked against a schema: an unknown key, a wrong type or
an impossible value is a :class:`~invphys.SpecError` whose one-line message names
the file and the key, so a typo never silently falls back to a default.
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib.resources
import math
import tomllib
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from ._configs import TrainConfig, field_kind, nonnegative, positive
from ._errors import SpecError

_REQUIRED = object()


@dataclasses.dataclass(frozen=True)
class Key:
    """Schema of one spec key: its type, default, allowed values and a value check.

    ``kind`` is one of ``int``, ``float``, ``str``, ``bool``, ``"floats"`` (a number or
    a list of numbers) or ``"ints"`` (a list of integers). ``check`` returns an error
    message for an impossible value, or None.
    """

    kind: Any
    default: Any = _REQUIRED
    choices: tuple | None = None
    check: Callable[[Any], str | None] | None = None
    doc: str = ""


def config_schema(config: type) -> dict[str, Key]:
    """The spec keys of a training config dataclass (``invphys._configs``): each field's
    type, default, allowed values, check and documentation, so they live in one place."""
    return {
        f.name: Key(field_kind(f), default=f.default, choices=f.metadata.get("choices"),
                    check=f.metadata.get("check"), doc=f.metadata.get("doc", ""))
        for f in dataclasses.fields(config)
    }


def _coerce(kind: Any, value: Any) -> Any:
    """Return ``value`` as ``kind`` or raise TypeError (ints are accepted as floats)."""
    if kind is bool:
        if isinstance(value, bool):
            return value
    elif kind is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif kind is float:
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
    elif kind is str:
        if isinstance(value, str):
            return value
    elif kind == "floats":
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, list) and all(
            isinstance(x, int | float) and not isinstance(x, bool) for x in value
        ):
            return tuple(float(x) for x in value)
    elif kind == "ints":
        if isinstance(value, list) and all(
            isinstance(x, int) and not isinstance(x, bool) for x in value
        ):
            return tuple(value)
    raise TypeError


_KIND_NAMES = {bool: "a boolean", int: "an integer", float: "a number", str: "a string",
               "floats": "a number or a list of numbers", "ints": "a list of integers"}


def _finite(v: Any) -> str | None:
    vals = v if isinstance(v, tuple) else (v,)
    if all(not isinstance(x, float) or math.isfinite(x) for x in vals):
        return None
    return "must be finite"


# Sections shared by every problem. Physics modules add [physics] and [prior].
COMMON_SCHEMA: dict[str, dict[str, Key]] = {
    "noise": {
        "std": Key(float, check=nonnegative, doc="std of additive Gaussian noise on y"),
    },
    "bounds": {
        "lower": Key("floats", default=None, doc="lower bound (scalar or per component)"),
        "upper": Key("floats", default=None, doc="upper bound (scalar or per component)"),
        "pin": Key("ints", default=(), doc="indices of x pinned to pin_value"),
        "pin_value": Key(float, default=0.0),
    },
    "data": {
        "n_train": Key(int, default=5000, check=positive),
        "n_val": Key(int, default=500, check=positive),
        "n_test": Key(int, default=500, check=positive),
        "seed": Key(int, default=0, check=nonnegative),
    },
    "solve": {
        "x0": Key(str, default="zeros", choices=("zeros", "midpoint"),
                  doc="the paper's fixed start"),
        "eps": Key(float, default=0.30, check=positive,
                   doc="target normalised residual RMSE"),
        "max_iter": Key(int, default=200, check=positive),
        "n_eval": Key(int, default=20, check=positive,
                      doc="test problems per seed in the paper protocol"),
        "eval_seeds": Key("ints", default=(0, 1)),
    },
    # Surrogate / learned-inverse training: the Deceptron protocol. The keys and defaults
    # are the fields of invphys._configs.TrainConfig (one place).
    "train": config_schema(TrainConfig),
}


@dataclasses.dataclass(frozen=True)
class Spec:
    """A validated, immutable (hashable) experiment specification.

    ``spec["physics"]["n"]`` reads a value; :meth:`replace` returns a re-validated
    copy with dotted-key overrides (``spec.replace({"physics.steps": 100})``).
    """

    name: str
    problem: str
    sections: tuple[tuple[str, tuple[tuple[str, Any], ...]], ...]
    source: str = "<dict>"

    def __getitem__(self, section: str) -> Mapping[str, Any]:
        for sec, items in self.sections:
            if sec == section:
                return dict(items)
        raise KeyError(section)

    def to_dict(self) -> dict[str, Any]:
        """A plain dict (lists for tuples), the inverse of :func:`spec_from_dict`."""
        out: dict[str, Any] = {"name": self.name, "problem": self.problem}
        for sec, items in self.sections:
            out[sec] = {k: list(v) if isinstance(v, tuple) else v for k, v in items}
        return out

    def replace(self, overrides: Mapping[str, Any]) -> Spec:
        """A copy with ``{"section.key": value}`` overrides applied and validated."""
        d = self.to_dict()
        for dotted, value in overrides.items():
            if "." not in dotted:
                raise SpecError(f"{self.source}: override {dotted!r} must be 'section.key'")
            sec, key = dotted.split(".", 1)
            d.setdefault(sec, {})[key] = list(value) if isinstance(value, tuple) else value
        # drop None values so that defaults apply
        for sec in list(d):
            if isinstance(d[sec], dict):
                d[sec] = {k: v for k, v in d[sec].items() if v is not None}
        return spec_from_dict(d, source=self.source)

    def digest(self) -> str:
        """A short hash of the validated content (for model cards and caches)."""
        return hashlib.sha256(repr((self.problem, self.sections)).encode()).hexdigest()[:16]


Schema = Mapping[str, Mapping[str, Key]]

# Each problem's own sections ([physics], [prior], and any it replaces), by problem name.
# The schema layer never imports physics: the physics registry hands each simulator's
# schema over when the simulator registers (invphys.physics.register).
_PROBLEM_SCHEMAS: dict[str, Schema] = {}


def register_schema(problem: str, schema: Schema) -> None:
    """Make ``problem`` a valid ``problem = ...`` value, validated with ``schema``.

    Called by :func:`invphys.physics.register`; ``schema``'s sections are added to (or
    replace) :data:`COMMON_SCHEMA`'s.
    """
    _PROBLEM_SCHEMAS[problem] = schema


def _schema_for(problem: str, source: str) -> dict[str, Mapping[str, Key]]:
    if problem not in _PROBLEM_SCHEMAS:
        raise SpecError(
            f"{source}: key 'problem': unknown problem {problem!r} "
            f"(known: {', '.join(sorted(_PROBLEM_SCHEMAS))})"
        )
    return {**COMMON_SCHEMA, **_PROBLEM_SCHEMAS[problem]}


def spec_from_dict(raw: Mapping[str, Any], source: str = "<dict>") -> Spec:
    """Validate a parsed spec (a dict as TOML gives it) and return a :class:`Spec`."""
    if not isinstance(raw, Mapping):
        raise SpecError(f"{source}: a spec must be a table")
    problem = raw.get("problem")
    if not isinstance(problem, str):
        raise SpecError(f"{source}: key 'problem' is required and must be a string")
    name = raw.get("name", problem)
    if not isinstance(name, str):
        raise SpecError(f"{source}: key 'name' must be a string")
    schema = _schema_for(problem, source)
    for key in raw:
        if key not in ("problem", "name") and key not in schema:
            raise SpecError(
                f"{source}: unknown section [{key}] (known: {', '.join(schema)})"
            )
    sections = []
    for sec, keys in schema.items():
        given = raw.get(sec, {})
        if not isinstance(given, Mapping):
            raise SpecError(f"{source}: [{sec}] must be a table")
        for key in given:
            if key not in keys:
                raise SpecError(
                    f"{source}: unknown key '{sec}.{key}' (known: {', '.join(keys)})"
                )
        items = []
        for key, k in keys.items():
            where = f"{source}: key '{sec}.{key}'"
            if key not in given:
                if k.default is _REQUIRED:
                    raise SpecError(f"{where} is required")
                items.append((key, k.default))
                continue
            try:
                value = _coerce(k.kind, given[key])
            except TypeError:
                raise SpecError(
                    f"{where} must be {_KIND_NAMES[k.kind]}, got {given[key]!r}"
                ) from None
            if k.choices is not None and value not in k.choices:
                raise SpecError(f"{where} must be one of {k.choices}, got {value!r}")
            for check in (_finite, k.check):
                msg = check(value) if check is not None else None
                if msg:
                    raise SpecError(f"{where} {msg}, got {value!r}")
            items.append((key, value))
        sections.append((sec, tuple(items)))
    spec = Spec(name=name, problem=problem, sections=tuple(sections), source=source)
    _check_bounds(spec)
    return spec


def _check_bounds(spec: Spec) -> None:
    b = spec["bounds"]
    lo, hi = b["lower"], b["upper"]
    if lo is None or hi is None:
        return
    los = lo if isinstance(lo, tuple) else (lo,)
    his = hi if isinstance(hi, tuple) else (hi,)
    if len(los) > 1 and len(his) > 1 and len(los) != len(his):
        raise SpecError(
            f"{spec.source}: keys 'bounds.lower' and 'bounds.upper' differ in length "
            f"({len(los)} vs {len(his)})"
        )
    n = max(len(los), len(his))
    for i in range(n):
        a = los[i if len(los) > 1 else 0]
        c = his[i if len(his) > 1 else 0]
        if a > c:
            raise SpecError(
                f"{spec.source}: key 'bounds.lower' exceeds 'bounds.upper' at index {i} "
                f"({a} > {c})"
            )


def bundled_specs() -> dict[str, Path]:
    """The specs shipped with invphys, by name (``problems/*.toml``)."""
    found: dict[str, Path] = {}
    candidates = [Path(__file__).resolve().parent.parent / "problems"]
    try:
        candidates.append(Path(str(importlib.resources.files("invphys") / "_specs")))
    except (ModuleNotFoundError, TypeError):  # pragma: no cover
        pass
    for d in candidates:
        if d.is_dir():
            for p in sorted(d.glob("*.toml")):
                found.setdefault(p.stem, p)
    return found


def load_spec(name_or_path: str | Path | Spec) -> Spec:
    """Load and validate a spec given by bundled name (``"heat1d"``) or by path."""
    if isinstance(name_or_path, Spec):
        return name_or_path
    path = Path(name_or_path)
    if not path.is_file():
        bundled = bundled_specs()
        if str(name_or_path) in bundled:
            path = bundled[str(name_or_path)]
        elif path.suffix == ".toml" or "/" in str(name_or_path):
            raise SpecError(f"spec file not found: {name_or_path}")
        else:
            raise SpecError(
                f"unknown spec {str(name_or_path)!r}: not a file and not a bundled spec "
                f"(bundled: {', '.join(bundled) or 'none'})"
            )
    try:
        raw = tomllib.loads(path.read_text())
    except (OSError, UnicodeDecodeError) as e:
        raise SpecError(f"{path}: cannot read spec ({e})") from None
    except tomllib.TOMLDecodeError as e:
        raise SpecError(f"{path}: not valid TOML ({e})") from None
    return spec_from_dict(raw, source=path.name)
