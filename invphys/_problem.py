"""The problem abstraction every layer uses: a forward map x -> y with a constraint set.

A :class:`Problem` bundles

* a jax-traceable forward map (one x -> one clean y; jit, vmap, JVP and VJP all work),
* the constraint set: optional box bounds plus pinned components, with its projection,
* optionally a prior sampler of ground-truth x and a noise model (for data generation).

Problems built from a spec (:func:`invphys.load_problem`) and problems a user writes
(``invphys.Problem(forward=F, lower=lo, upper=hi)``) are the same class, so the solver,
training and reproduction layers never care where a problem came from.
"""

from __future__ import annotations

import abc
import dataclasses
from collections.abc import Callable, Sequence
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, ArrayLike, Bool, Float, PRNGKeyArray

from ._errors import BoundsError, NonFiniteError, ShapeError


class AbstractNoise(eqx.Module):
    """A noise model: how an observation is drawn from a clean output."""

    @abc.abstractmethod
    def __call__(self, key: PRNGKeyArray, y: Float[Array, "..."]) -> Float[Array, "..."]:
        """Return a noisy copy of ``y``."""

    @abc.abstractmethod
    def std(self, y: Float[Array, "..."]) -> Float[Array, "..."]:
        """The per-output noise standard deviation at clean output ``y``."""


class GaussianNoise(AbstractNoise):
    """Additive i.i.d. Gaussian noise with a fixed standard deviation."""

    sigma: float = eqx.field(static=True)

    def __call__(self, key, y):
        return y + self.sigma * jax.random.normal(key, jnp.shape(y), jnp.result_type(y))

    def std(self, y):
        return jnp.full(jnp.shape(y), self.sigma, jnp.result_type(y))


def project_box(x: Float[Array, "... n"], lower: Array | None, upper: Array | None,
                pinned: Array | None, pin_value: float | Array) -> Float[Array, "... n"]:
    """Euclidean projection onto ``lower <= x <= upper`` with the pinned components set
    to ``pin_value`` (None: no bound / no pins); what every constraint set shares."""
    if lower is not None:
        x = jnp.maximum(x, lower.astype(x.dtype))
    if upper is not None:
        x = jnp.minimum(x, upper.astype(x.dtype))
    if pinned is not None:
        x = jnp.where(pinned, jnp.asarray(pin_value, x.dtype), x)
    return x


def is_concrete(x: Any) -> bool:
    """True when ``x`` holds values now (not a tracer inside jit/vmap/grad)."""
    return not isinstance(x, jax.core.Tracer)


def check_finite(name: str, x: ArrayLike) -> None:
    """Raise :class:`NonFiniteError` if a concrete array contains NaN or inf."""
    if is_concrete(x) and not bool(np.all(np.isfinite(np.asarray(x)))):
        bad = int(np.sum(~np.isfinite(np.asarray(x))))
        raise NonFiniteError(f"{name} contains {bad} non-finite value(s) (NaN or inf)")


def _as_bound(name: str, b: ArrayLike | None, n: int | None) -> Array | None:
    if b is None:
        return None
    arr = jnp.asarray(b, dtype=float)
    if arr.ndim > 1:
        raise ShapeError(f"{name} must be a scalar or a vector, got shape {arr.shape}")
    if arr.ndim == 0 and n is not None:
        arr = jnp.full((n,), arr)
    elif n is not None and arr.shape != (n,):
        raise ShapeError(f"{name} has shape {arr.shape}, expected ({n},)")
    if is_concrete(arr) and bool(jnp.any(jnp.isnan(arr))):
        raise BoundsError(f"{name} contains NaN")
    return arr


class Problem(eqx.Module):
    """An inverse problem: forward map, constraint set, and (optionally) prior and noise.

    Arguments:
        forward: jax-traceable map from one x (shape ``(n,)``) to one clean y.
        lower, upper: box bounds (scalars or ``(n,)`` arrays; ``None`` = unbounded,
            ``-inf``/``inf`` entries allowed).
        x_size: the length n of x (inferred from array bounds when omitted).
        pinned: indices of x held at ``pin_value`` (e.g. Dirichlet endpoints).
        sampler: ``(key, count) -> (count, n)`` ground-truth x's, for data generation.
        noise: the observation noise model.
        x0: the protocol's fixed start, ``"zeros"``, ``"midpoint"`` or an array.
        name: a label; ``spec`` the validated spec the problem was built from.
        identifiable: ``x (K, n) -> (values (K, q), names)``, the combinations of x the
            observation determines (e.g. the oscillator's c/m, k/m, x0, v0): what a
            recovered x is scored on. None (the default): the problem declares none.
    """

    fn: Callable[[Array], Array]
    lower: Float[Array, " n"] | None
    upper: Float[Array, " n"] | None
    pinned: Bool[Array, " n"] | None
    pin_value: float = eqx.field(static=True)
    sampler: Callable | None
    noise: AbstractNoise | None
    x_size: int | None = eqx.field(static=True)
    x0_rule: str = eqx.field(static=True)
    name: str = eqx.field(static=True)
    spec: Any = eqx.field(static=True)
    identifiable: Callable[[Any], tuple[Any, tuple[str, ...]]] | None = eqx.field(static=True)

    def __init__(
        self,
        forward: Callable[[Array], Array],
        lower: ArrayLike | Sequence[float] | None = None,
        upper: ArrayLike | Sequence[float] | None = None,
        *,
        x_size: int | None = None,
        pinned: ArrayLike | Sequence[int] | None = None,
        pin_value: float = 0.0,
        sampler: Callable | None = None,
        noise: AbstractNoise | float | None = None,
        x0: str = "midpoint",
        name: str = "custom",
        spec: Any = None,
        identifiable: Callable[[Any], tuple[Any, tuple[str, ...]]] | None = None,
    ):
        if not callable(forward):
            raise TypeError("forward must be callable (x -> y)")
        for b in (lower, upper):
            if x_size is None and b is not None and jnp.ndim(b) == 1:
                x_size = int(jnp.shape(b)[0])
        self.fn = forward
        self.x_size = x_size
        self.lower = _as_bound("lower", lower, x_size)
        self.upper = _as_bound("upper", upper, x_size)
        if self.lower is not None and self.upper is not None:
            lo, hi = jnp.broadcast_arrays(self.lower, self.upper)
            if is_concrete(lo) and bool(jnp.any(lo > hi)):
                i = int(jnp.argmax(lo > hi))
                raise BoundsError(
                    f"lower > upper at index {i} ({float(lo.ravel()[i])} > "
                    f"{float(hi.ravel()[i])})"
                )
        if pinned is not None and x_size is None:
            raise ShapeError("pinned components need x_size (or array bounds)")
        if pinned is None or len(np.atleast_1d(pinned)) == 0:
            self.pinned = None
        else:
            idx = np.atleast_1d(np.asarray(pinned, dtype=int))
            if np.any(idx < -x_size) or np.any(idx >= x_size):
                raise ShapeError(f"pinned indices {idx.tolist()} out of range for n={x_size}")
            self.pinned = jnp.zeros((x_size,), bool).at[idx].set(True)
        self.pin_value = float(pin_value)
        self.sampler = sampler
        self.noise = GaussianNoise(float(noise)) if isinstance(noise, int | float) else noise
        if x0 not in ("zeros", "midpoint"):
            raise ValueError(f"x0 must be 'zeros' or 'midpoint', got {x0!r}")
        self.x0_rule = x0
        self.name = name
        self.spec = spec
        self.identifiable = identifiable

    # ------------------------------------------------------------------ forward map
    def forward(self, x: Float[Array, " n"]) -> Float[Array, " m"]:
        """One x -> one clean y. Checks the shape (always) and finiteness (when concrete)."""
        x = jnp.asarray(x)
        if self.x_size is not None and x.shape != (self.x_size,):
            raise ShapeError(
                f"{self.name}: x has shape {x.shape}, expected ({self.x_size},); "
                "use jax.vmap(problem.forward) for a batch"
            )
        check_finite(f"{self.name}: x", x)
        return self.fn(x)

    def __call__(self, x: Float[Array, " n"]) -> Float[Array, " m"]:
        return self.forward(x)

    def y_shape(self) -> tuple[int, ...]:
        """The shape of one output (by abstract evaluation: no simulation is run)."""
        if self.x_size is None:
            raise ShapeError(f"{self.name}: x_size unknown; pass x_size= or array bounds")
        dtype = jnp.result_type(float)
        return jax.eval_shape(self.fn, jax.ShapeDtypeStruct((self.x_size,), dtype)).shape

    # ------------------------------------------------------------ constraint set
    @property
    def has_constraints(self) -> bool:
        return self.lower is not None or self.upper is not None or self.pinned is not None

    def project(self, x: Float[Array, "... n"]) -> Float[Array, "... n"]:
        """Euclidean projection onto the constraint set (box, then pins). Batched ok."""
        return project_box(x, self.lower, self.upper, self.pinned, self.pin_value)

    def is_feasible(self, x: Float[Array, "... n"], atol: float = 0.0) -> Bool[Array, "..."]:
        """Whether ``x`` lies in the constraint set (to ``atol``)."""
        return jnp.all(jnp.abs(self.project(x) - x) <= atol, axis=-1)

    def start(self, dtype: Any = None) -> Float[Array, " n"]:
        """The protocol's fixed start: zeros or the box midpoint (projected)."""
        if self.x_size is None:
            raise ShapeError(f"{self.name}: x_size unknown, cannot build a start")
        dtype = dtype or jnp.result_type(float)
        x = jnp.zeros((self.x_size,), dtype)
        if self.x0_rule == "midpoint" and self.lower is not None and self.upper is not None:
            lo, hi = self.lower.astype(dtype), self.upper.astype(dtype)
            x = jnp.where(jnp.isfinite(lo) & jnp.isfinite(hi), 0.5 * (lo + hi), x)
        return self.project(x)

    # -------------------------------------------------------- prior and noise
    def sample(self, key: PRNGKeyArray, count: int) -> Float[Array, "count n"]:
        """``count`` ground-truth x's from the prior (projected onto the constraints)."""
        if self.sampler is None:
            raise ValueError(f"{self.name}: this problem has no prior sampler")
        return self.project(self.sampler(key, count))

    def observe(self, key: PRNGKeyArray, x: Float[Array, "count n"]) -> tuple[Array, Array]:
        """Clean and noisy observations of a batch of x's: ``(y_clean, y_noisy)``."""
        y = jax.vmap(self.fn)(x)
        if self.noise is None:
            return y, y
        return y, self.noise(key, y)

    def with_forward(self, forward: Callable[[Array], Array], name: str | None = None):
        """The same constraint set with another forward map (a surrogate, a normalised map)."""
        new = object.__new__(type(self))
        for f in dataclasses.fields(self):
            object.__setattr__(new, f.name, getattr(self, f.name))
        object.__setattr__(new, "fn", forward)
        object.__setattr__(new, "name", name or self.name)
        return new


# ------------------------------------------------------------ input validation
def as_real_array(name: str, a: Any) -> Any:
    """``a`` (a list, NumPy or JAX array, integers allowed) as a real floating array,
    checked on concrete values only: a complex, boolean, non-numeric or ragged input is
    a :class:`ShapeError` naming ``name``. Tracers pass through unchanged."""
    if not is_concrete(a):
        return a
    try:
        arr = np.asarray(a)
    except (ValueError, TypeError) as e:
        raise ShapeError(f"{name} is not an array of numbers ({e})") from None
    if arr.dtype == object:
        raise ShapeError(f"{name} is not a rectangular array of numbers")
    if np.issubdtype(arr.dtype, np.complexfloating):
        raise ShapeError(f"{name} holds complex values ({arr.dtype}); invphys solves real "
                         "problems: pass the real part explicitly if that is what you mean")
    if arr.dtype == bool or not np.issubdtype(arr.dtype, np.number):
        raise ShapeError(f"{name} holds {arr.dtype} values, expected real numbers")
    if not np.issubdtype(arr.dtype, np.floating):
        arr = arr.astype(jnp.result_type(float))
    return arr


def validate_solve_inputs(problem: Problem, y_obs: Any, x0: Any = None, *,
                          inverse: Callable | None = None) -> tuple[Any, Any]:
    """Check a solve's inputs while they are concrete, before any tracing; return them as
    real floating arrays ``(y_obs, x0)`` (``x0`` None stays None).

    Every failure is a typed error naming the argument: :class:`ShapeError` for a
    complex, boolean or non-numeric array, a wrong rank or length, an empty batch,
    ``x0``/``y_obs`` batches of different sizes, or an ``inverse`` (D-IPG's learned g:
    one y -> one x) of the wrong shape; :class:`NonFiniteError` for NaN or inf. This is
    what the CLI calls, and what the public ``invphys.solve`` / ``least_squares``
    wrappers should call first (they hold concrete values; the jitted core never does).
    """
    y = as_real_array("y_obs", y_obs)
    if np.ndim(y) == 0:
        raise ShapeError("y_obs must be an array of observations (m,) or (batch, m), "
                         "got a scalar")
    if np.ndim(y) > 2:
        raise ShapeError(f"y_obs has shape {np.shape(y)}, expected (m,) or (batch, m)")
    x = None if x0 is None else as_real_array("x0", x0)
    n = problem.x_size
    if n is None and x is not None and np.ndim(x) >= 1:
        n = int(np.shape(x)[-1])
    if n is not None:
        dtype = jnp.result_type(float)
        try:
            out = jax.eval_shape(problem.fn, jax.ShapeDtypeStruct((n,), dtype))
        except Exception as e:  # noqa: BLE001 -- a user forward map can fail any way
            raise ShapeError(f"{problem.name}: forward fails on one x of shape ({n},): "
                             f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
                             ) from None
        if not hasattr(out, "shape") or len(out.shape) != 1:
            raise ShapeError(f"{problem.name}: forward must return a vector, got "
                             f"{getattr(out, 'shape', type(out).__name__)}")
        m = out.shape[0]
        if np.shape(y)[-1] != m:
            raise ShapeError(f"y_obs has shape {np.shape(y)}, expected ({m},) or (batch, {m})")
    if np.ndim(y) == 2 and np.shape(y)[0] == 0:
        raise ShapeError(f"y_obs is an empty batch (shape {np.shape(y)}): "
                         "give at least one observation")
    if np.size(y) == 0:
        raise ShapeError(f"y_obs is empty (shape {np.shape(y)})")
    check_finite("y_obs", y)
    if x is not None:
        if np.ndim(x) not in (1, 2) or (n is not None and np.shape(x)[-1] != n):
            raise ShapeError(f"x0 has shape {np.shape(x)}, expected ({n},) or (batch, {n})")
        if np.ndim(x) == 2:
            if np.ndim(y) != 2:
                raise ShapeError(f"x0 has a batch axis (shape {np.shape(x)}) but y_obs "
                                 f"does not (shape {np.shape(y)})")
            if np.shape(x)[0] != np.shape(y)[0]:
                raise ShapeError(f"x0 and y_obs batches differ in size: x0 has "
                                 f"{np.shape(x)[0]} starts, y_obs {np.shape(y)[0]} "
                                 "observations")
        check_finite("x0", x)
    if inverse is not None:
        if not callable(inverse):
            raise ShapeError(f"inverse must be callable (one y -> one x), got "
                             f"{type(inverse).__name__}")
        m = np.shape(y)[-1]
        dtype = jnp.result_type(float)
        try:
            got = jax.eval_shape(inverse, jax.ShapeDtypeStruct((m,), dtype))
        except Exception as e:  # noqa: BLE001 -- a user inverse can fail any way
            raise ShapeError(f"inverse fails on one y of shape ({m},): {type(e).__name__}: "
                             f"{str(e).splitlines()[0] if str(e) else ''}") from None
        if getattr(got, "shape", None) != (n,):
            raise ShapeError(f"inverse maps one y of shape ({m},) to shape "
                             f"{getattr(got, 'shape', type(got).__name__)}, expected ({n},)")
    return y, x
