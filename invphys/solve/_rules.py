"""Result codes, and :class:`Rules`: the search x termination pair every method runs under."""

from __future__ import annotations

import dataclasses
import math
import numbers

import equinox as eqx
import numpy as np

from .._errors import SpecError
from ._results import RESULTS, SUCCESS, result_names
from ._search import AbstractSearch, Backtracking, Polished, Relaxed
from ._termination import AbstractTermination, CertifiedStop, PaperStop

__all__ = ["RESULTS", "SUCCESS", "Rules", "result_names"]

# the keyword fields Rules(...) had before it became a composition (legacy adapter)
_LEGACY = dict(alpha0=1.0, max_halvings=8, rho=0.4, armijo_c=1e-4, armijo="proposal",
               stall_tol=1e-4, stall_patience=20, eps=0.30, stop_at_eps=False, gtol=0.0,
               xtol=0.0, ftol=0.0, endgame=False, rtol=0.0, atol=0.0, noise_tol=0.0,
               polish=0.0, max_rejections=12, stagnation=10)


# the range of every setting a Rules can carry: (kind, low, low inclusive, high, high incl.)
_RANGES = {
    "max_iter": ("int", 1, True, None, True),
    "max_steps": ("int", 1, True, None, True),  # least_squares' name for max_iter
    "eps": ("real", 0.0, True, math.inf, False),
    "alpha0": ("real", 0.0, False, math.inf, False),
    "max_halvings": ("int", 0, True, None, True),
    "rho": ("real", 0.0, False, 1.0, True),
    "armijo_c": ("real", 0.0, True, 1.0, False),
    "stall_tol": ("real", 0.0, True, math.inf, False),
    "stall_patience": ("int", 1, True, None, True),
    "gtol": ("real", 0.0, True, math.inf, False),
    "xtol": ("real", 0.0, True, math.inf, False),
    "ftol": ("real", 0.0, True, math.inf, False),
    "rtol": ("real", 0.0, True, math.inf, False),
    "atol": ("real", 0.0, True, math.inf, False),
    "noise_tol": ("real", 0.0, True, math.inf, False),
    "polish": ("real", 0.0, True, math.inf, False),
    "max_rejections": ("int", 1, True, None, True),
    "stagnation": ("int", 1, True, None, True),
}


def _describe(kind, low, low_in, high, high_in):
    what = "an integer" if kind == "int" else "a finite number" if high == math.inf \
        else "a number"
    lo = f"{'>=' if low_in else '>'} {low}"
    if high is None or high == math.inf:
        return f"{what} {lo}"
    return f"{what} in {'[' if low_in else '('}{low}, {high}{']' if high_in else ')'}"


def check_setting(name: str, value, where: str = "Rules") -> None:
    """Raise :class:`~invphys.SpecError` (a ``ValueError``, so ``except ValueError``
    still catches it) naming ``name`` (and ``where``) when a concrete ``value`` is out of
    the setting's range (NaN and inf included); traced values are left alone."""
    if name not in _RANGES:
        return
    kind, low, low_in, high, high_in = _RANGES[name]
    if isinstance(value, np.ndarray | np.generic) and np.ndim(value) == 0:
        value = value.item()
    if not isinstance(value, numbers.Real):
        if hasattr(value, "shape") or hasattr(value, "aval"):  # an array: traced or not
            return
        raise SpecError(f"{where}: {name} must be {_describe(*_RANGES[name])}, "
                        f"got {value!r}")
    bad = isinstance(value, bool) or (kind == "int" and not float(value).is_integer())
    v = float(value)
    if not bad:
        bad = math.isnan(v) or (v < low if low_in else v <= low)
        if high is not None:
            bad = bad or (v > high if high_in else v >= high)
    if bad:
        raise SpecError(f"{where}: {name} must be {_describe(*_RANGES[name])}, "
                        f"got {value!r}")


def _parts(obj):
    """``obj`` and the objects it wraps (``Relaxed.search``, ``Polished.search``)."""
    while obj is not None:
        yield obj
        obj = getattr(obj, "search", None)


def _override(obj, name, value):
    """``obj`` with field ``name`` set to ``value`` wherever the wrapper chain has it;
    None when no part has that field."""
    for part in _parts(obj):
        if name in {f.name for f in dataclasses.fields(part)} and name != "search":
            new = dataclasses.replace(part, **{name: value})
            return _replace_in_chain(obj, part, new)
    return None


def _replace_in_chain(obj, old, new):
    if obj is old:
        return new
    return dataclasses.replace(obj, search=_replace_in_chain(obj.search, old, new))


def _legacy(alpha0, max_halvings, rho, armijo_c, armijo, stall_tol, stall_patience, eps,
            stop_at_eps, gtol, xtol, ftol, endgame, rtol, atol, noise_tol, polish,
            max_rejections, stagnation):
    """The (search, termination) pair that the old 20-field Rules described."""
    search = Relaxed(Backtracking(alpha0=alpha0, max_halvings=max_halvings,
                                  armijo_c=armijo_c, armijo=armijo,
                                  noise_tol=noise_tol if endgame else 0.0), rho=rho)
    if endgame:
        if polish > 0:
            search = Polished(search, polish=polish)
        term = CertifiedStop(rtol=rtol, atol=atol, gtol=gtol, stagnation=stagnation,
                             max_rejections=max_rejections, noise_tol=noise_tol, eps=eps,
                             stop_at_eps=stop_at_eps)
    else:
        term = PaperStop(eps=eps, stall_tol=stall_tol, stall_patience=stall_patience,
                         stop_at_eps=stop_at_eps, gtol=gtol, xtol=xtol, ftol=ftol)
    return search, term


class Rules(eqx.Module):
    """The protocol every method runs under: a search (backtracking, relaxation,
    polishing) and a termination (stopping rules), plus the iteration limit.

    Compose it (``Rules(search=Relaxed(Backtracking(), rho=0.4), termination=PaperStop())``)
    or take a preset: :meth:`Rules.paper` (the Deceptron paper's protocol, the default)
    and :meth:`Rules.certified` (what :func:`invphys.least_squares` runs).

    The old keyword fields still work as an adapter (``Rules(eps=0.3, max_iter=50)``,
    ``Rules(rho=1.0, armijo="step", xtol=1e-14)``, ``Rules(endgame=True, rtol=...)``):
    with no parts given they build the pair the old 20-field class described; with parts
    given they override the part that has that field (``dataclasses.replace(rules,
    stop_at_eps=True)`` keeps working). They read back as attributes (``rules.eps``).
    """

    search: AbstractSearch
    termination: AbstractTermination
    max_iter: int = eqx.field(static=True)

    def __init__(self, search: AbstractSearch | None = None,
                 termination: AbstractTermination | None = None, *, max_iter: int = 200,
                 **legacy):
        unknown = set(legacy) - set(_LEGACY)
        if unknown:
            raise TypeError(f"Rules got unexpected keyword(s) {sorted(unknown)}")
        check_setting("max_iter", max_iter)
        for name, value in legacy.items():  # before the parts are built from them
            check_setting(name, value)
        if search is None and termination is None:
            search, termination = _legacy(**{**_LEGACY, **legacy})
        else:
            if search is None:
                search = Relaxed(Backtracking(), rho=0.4)
            if termination is None:
                termination = PaperStop()
            for name, value in legacy.items():
                if name == "endgame":
                    if bool(value) != isinstance(termination, CertifiedStop):
                        raise TypeError("endgame= cannot switch a composed Rules' "
                                        "termination: pass termination=CertifiedStop(...)")
                    continue
                if name == "rho" and not any(isinstance(p, Relaxed) for p in _parts(search)):
                    search = Relaxed(search, rho=value) if value != 1.0 else search
                    continue
                hits = [_override(part, name, value) for part in (search, termination)]
                if hits[0] is None and hits[1] is None:
                    raise TypeError(f"Rules: neither {type(search).__name__} nor "
                                    f"{type(termination).__name__} has a field {name!r}")
                search = search if hits[0] is None else hits[0]
                termination = termination if hits[1] is None else hits[1]
        self.search = search
        self.termination = termination
        self.max_iter = int(max_iter)

    def __check_init__(self):
        check_setting("max_iter", self.max_iter)
        if not isinstance(self.search, AbstractSearch):
            raise TypeError(f"search must be an AbstractSearch, got {type(self.search)}")
        if not isinstance(self.termination, AbstractTermination):
            raise TypeError("termination must be an AbstractTermination, got "
                            f"{type(self.termination)}")
        for obj in (self.search, self.termination):  # composed parts too
            for part in _parts(obj):
                for field in dataclasses.fields(part):
                    check_setting(field.name, getattr(part, field.name))

    @classmethod
    def paper(cls, *, eps: float = 0.30, max_iter: int = 200, rho: float = 0.4,
              stop_at_eps: bool = False, stall_tol: float = 1e-4,
              stall_patience: int = 20) -> Rules:
        """The Deceptron paper's protocol (the default): alpha0 = 1 halved up to 8 times,
        relaxation rho = 0.4, Armijo c = 1e-4 on the proposal, the eps/stall stop."""
        return cls(Relaxed(Backtracking(), rho=rho),
                   PaperStop(eps=eps, stall_tol=stall_tol, stall_patience=stall_patience,
                             stop_at_eps=stop_at_eps), max_iter=max_iter)

    @classmethod
    def certified(cls, *, rtol: float = 1e-10, atol: float = 0.0, gtol: float = 0.0,
                  max_iter: int = 1000, polish: float = 1e-6) -> Rules:
        """The production protocol of :func:`invphys.least_squares`: no relaxation,
        Armijo along the projection arc tolerating 16 ulps of Phi, Gauss-Newton
        polishing below ``polish`` |x|, and the certified stopping rules."""
        check_setting("polish", polish)  # (0 turns polishing off; negative is an error)
        search = Backtracking(armijo="step", noise_tol=16.0)
        if polish > 0:
            search = Polished(search, polish=polish)
        return cls(search, CertifiedStop(rtol=rtol, atol=atol, gtol=gtol),
                   max_iter=max_iter)

    # ----------------------------------------------------- legacy attribute reads
    def _get(self, name):
        if name == "endgame":
            return isinstance(self.termination, CertifiedStop)
        if name == "rho":
            relaxed = [p for p in _parts(self.search) if isinstance(p, Relaxed)]
            return relaxed[0].rho if relaxed else 1.0
        for obj in (self.search, self.termination):
            for part in _parts(obj):
                if any(f.name == name for f in dataclasses.fields(part)):
                    return getattr(part, name)
        return _LEGACY[name]


def _legacy_property(name):
    return property(lambda self: self._get(name), doc=f"The legacy field ``{name}``.")


for _name in _LEGACY:
    setattr(Rules, _name, _legacy_property(_name))
del _name
