"""The Moré-Garbow-Hillstrom least-squares test problems, as jax residual functions.

Source: J. J. Moré, B. S. Garbow and K. E. Hillstrom, "Testing unconstrained
optimization software", ACM Trans. Math. Software 7(1):17-41, 1981 (MGH below). Each
problem there is a sum of squares ``f(x) = sum_i f_i(x)^2`` with a standard start ``x0``
and the known minimum value ``f*``; here ``residual(x)`` returns the vector ``(f_i(x))``
written in jax.numpy (jit/vmap-traceable, differentiable, float64 when x64 is on).

Reference minimisers. MGH print ``f*`` (usually 6 significant digits, truncated: they
write ``8.21487...10^-3``) but ``x*`` only where it is simple. Where they do not print it,
``x_star`` is either NIST's certified solution of the same data (Meyer = NIST MGH10,
Kowalik-Osborne = MGH09, Osborne 1 = MGH17) or a minimiser we computed in float64
(Levenberg-Marquardt to ``|J^T r|`` at rounding level, polished by Gauss-Newton steps;
symmetric cases reduced to one dimension and root-found) and checked against MGH's
``f*``; ``notes`` says which. ``f_star_tol`` is the
uncertainty of the *published* ``f*`` (one unit in its last printed digit), so a test
can compare ``sum(residual(x_star)**2)`` with it at exactly the precision MGH give.

Local minima. For some problems MGH also list other (local, or "at infinity") minimum
values; they are in ``f_local``, because a solver that stops there from the standard
start has found a genuine stationary point, not failed (Freudenstein-Roth from ``x0``
typically ends at 48.9842...).

Bound-constrained variants (:data:`MGH_BOUNDED`) reuse the residuals with a box chosen
so that bounds are active at the solution; their ``f_star`` is None unless it is known
in closed form, and solvers are checked there through the KKT conditions instead.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable

import jax.numpy as jnp
import numpy as np
import numpy.typing as npt
from jaxtyping import Array, Float

__all__ = ["MGH_BOUNDED", "MGH_PROBLEMS", "MGHProblem", "get_mgh"]

Residual = Callable[[Float[Array, " n"]], Float[Array, " m"]]


@dataclasses.dataclass(frozen=True, eq=False)
class MGHProblem:
    """One least-squares test problem ``min_x sum(residual(x)**2)`` (optionally boxed).

    Attributes:
        name: identifier, e.g. ``"rosenbrock"``, ``"watson_9"``, ``"wood_bounded"``.
        n: number of variables.
        m: number of residuals.
        residual: ``x (n,) -> (m,)``, pure jax.numpy.
        x0: the standard starting point of MGH (feasible for the bounded variants).
        f_star: minimal value of ``sum(residual**2)`` (None where unknown).
        x_star: a minimiser with value ``f_star`` (None where none is given).
        lower, upper: the box (``-inf``/``inf`` entries: unbounded), None if unconstrained.
        f_star_tol: uncertainty of ``f_star`` as published (0.0: exact).
        f_local: other local (or asymptotic) minimum values listed by MGH.
        number: MGH's problem number (0 for variants that are not in MGH).
        notes: where ``x_star`` comes from and anything else worth knowing.
    """

    name: str
    n: int
    m: int
    residual: Residual
    # Array fields accept any array-like (a list, in the tables below); __post_init__
    # stores each as a read-only float64 np.ndarray of shape (n,).
    x0: npt.ArrayLike
    f_star: float | None
    x_star: npt.ArrayLike | None
    lower: npt.ArrayLike | None = None
    upper: npt.ArrayLike | None = None
    f_star_tol: float = 0.0
    f_local: tuple[float, ...] = ()
    number: int = 0
    notes: str = ""

    def __post_init__(self) -> None:
        for field in ("x0", "x_star", "lower", "upper"):
            value = getattr(self, field)
            if value is None:
                continue
            arr = np.array(value, dtype=np.float64)
            if arr.shape != (self.n,):
                raise ValueError(f"{self.name}: {field} has shape {arr.shape}, n = {self.n}")
            arr.setflags(write=False)
            object.__setattr__(self, field, arr)
        if (self.lower is None) != (self.upper is None):
            raise ValueError(f"{self.name}: give both lower and upper, or neither")
        if self.lower is not None and not np.all(self.lower <= self.upper):
            raise ValueError(f"{self.name}: lower > upper")

    @property
    def bounded(self) -> bool:
        """True for the box-constrained variants."""
        return self.lower is not None

    def f(self, x: Float[Array, " n"]) -> Float[Array, ""]:
        """The objective ``sum(residual(x)**2)`` (MGH's f, without a factor 1/2)."""
        r = self.residual(jnp.asarray(x))
        return jnp.sum(r * r)


def _jax_residual(fn: Residual) -> Residual:
    """``fn`` with its argument made a floating jax array first, so a residual returns a
    jax array for any input (several would otherwise compute in numpy on numpy input)."""

    @functools.wraps(fn)
    def residual(x):
        x = jnp.asarray(x)
        if not jnp.issubdtype(x.dtype, jnp.floating):
            x = x.astype(jnp.result_type(float))
        return fn(x)

    return residual


def _idx(m: int) -> np.ndarray:
    """The MGH index i = 1..m as floats (the formulas are written with 1-based i)."""
    return np.arange(1, m + 1, dtype=np.float64)


# --------------------------------------------------------------------------------------
# Data tables printed in MGH (identical to MINPACK-1's test drivers).
# --------------------------------------------------------------------------------------

_BARD_Y = np.array([0.14, 0.18, 0.22, 0.25, 0.29, 0.32, 0.35, 0.39, 0.37, 0.58,
                    0.73, 0.96, 1.34, 2.10, 4.39])  # fmt: skip

_GAUSSIAN_Y = np.array([0.0009, 0.0044, 0.0175, 0.0540, 0.1295, 0.2420, 0.3521, 0.3989,
                        0.3521, 0.2420, 0.1295, 0.0540, 0.0175, 0.0044, 0.0009])  # fmt: skip

_MEYER_Y = np.array([34780.0, 28610.0, 23650.0, 19630.0, 16370.0, 13720.0, 11540.0,
                     9744.0, 8261.0, 7030.0, 6005.0, 5147.0, 4427.0, 3820.0, 3307.0,
                     2872.0])  # fmt: skip

_KOWALIK_Y = np.array([0.1957, 0.1947, 0.1735, 0.1600, 0.0844, 0.0627, 0.0456, 0.0342,
                       0.0323, 0.0235, 0.0246])  # fmt: skip
_KOWALIK_U = np.array([4.0, 2.0, 1.0, 0.5, 0.25, 0.167, 0.125, 0.1, 0.0833, 0.0714,
                       0.0625])  # fmt: skip

_OSBORNE1_Y = np.array([
    0.844, 0.908, 0.932, 0.936, 0.925, 0.908, 0.881, 0.850, 0.818, 0.784, 0.751,
    0.718, 0.685, 0.658, 0.628, 0.603, 0.580, 0.558, 0.538, 0.522, 0.506, 0.490,
    0.478, 0.467, 0.457, 0.448, 0.438, 0.431, 0.424, 0.420, 0.414, 0.411, 0.406,
])  # fmt: skip

_OSBORNE2_Y = np.array([
    1.366, 1.191, 1.112, 1.013, 0.991, 0.885, 0.831, 0.847, 0.786, 0.725, 0.746,
    0.679, 0.608, 0.655, 0.616, 0.606, 0.602, 0.626, 0.651, 0.724, 0.649, 0.649,
    0.694, 0.644, 0.624, 0.661, 0.612, 0.558, 0.533, 0.495, 0.500, 0.423, 0.395,
    0.375, 0.372, 0.391, 0.396, 0.405, 0.428, 0.429, 0.523, 0.562, 0.607, 0.653,
    0.672, 0.708, 0.633, 0.668, 0.645, 0.632, 0.591, 0.559, 0.597, 0.625, 0.739,
    0.710, 0.729, 0.720, 0.636, 0.581, 0.428, 0.292, 0.162, 0.098, 0.054,
])  # fmt: skip


# --------------------------------------------------------------------------------------
# Residual functions, numbered as in MGH.  x[0] is MGH's x1.
# --------------------------------------------------------------------------------------


def _rosenbrock(x):  # (1)
    return jnp.stack([10.0 * (x[1] - x[0] ** 2), 1.0 - x[0]])


def _freudenstein_roth(x):  # (2)
    return jnp.stack([
        -13.0 + x[0] + ((5.0 - x[1]) * x[1] - 2.0) * x[1],
        -29.0 + x[0] + ((x[1] + 1.0) * x[1] - 14.0) * x[1],
    ])


def _powell_badly_scaled(x):  # (3)
    return jnp.stack([
        1e4 * x[0] * x[1] - 1.0,
        jnp.exp(-x[0]) + jnp.exp(-x[1]) - 1.0001,
    ])


def _brown_badly_scaled(x):  # (4)
    return jnp.stack([x[0] - 1e6, x[1] - 2e-6, x[0] * x[1] - 2.0])


def _beale(x):  # (5)
    i = _idx(3)
    y = np.array([1.5, 2.25, 2.625])
    return y - x[0] * (1.0 - x[1] ** i)


def _jennrich_sampson(m: int) -> Residual:  # (6)
    i = _idx(m)

    def residual(x):
        return 2.0 + 2.0 * i - (jnp.exp(i * x[0]) + jnp.exp(i * x[1]))

    return residual


def _helical_valley(x):  # (7)
    # theta = arctan(x2/x1)/(2 pi), plus 1/2 when x1 < 0.  Written with arctan2 so it is
    # defined (and smooth) on x1 = 0 too: arctan2 in (-pi, pi] differs from arctan + pi
    # by 2 pi exactly when x1 < 0 and the angle is negative.
    phi = jnp.arctan2(x[1], x[0])
    theta = phi / (2.0 * jnp.pi) + jnp.where((x[0] < 0) & (phi < 0), 1.0, 0.0)
    return jnp.stack([
        10.0 * (x[2] - 10.0 * theta),
        10.0 * (jnp.sqrt(x[0] ** 2 + x[1] ** 2) - 1.0),
        x[2],
    ])


def _bard(x):  # (8)
    u = _idx(15)
    v = 16.0 - u
    w = np.minimum(u, v)
    return _BARD_Y - (x[0] + u / (v * x[1] + w * x[2]))


def _gaussian(x):  # (9)
    t = (8.0 - _idx(15)) / 2.0
    return x[0] * jnp.exp(-x[1] * (t - x[2]) ** 2 / 2.0) - _GAUSSIAN_Y


def _meyer(x):  # (10)
    t = 45.0 + 5.0 * _idx(16)
    return x[0] * jnp.exp(x[1] / (t + x[2])) - _MEYER_Y


def _gulf(m: int) -> Residual:  # (11)
    # MGH print |y_i m i x_2| -- a typesetting slip for |y_i - x_2|, the form under
    # which f = 0 at (50, 25, 1.5) as they state (and as MINPACK-2 codes it).
    t = _idx(m) / 100.0
    y = 25.0 + (-50.0 * np.log(t)) ** (2.0 / 3.0)

    def residual(x):
        return jnp.exp(-jnp.abs(y - x[1]) ** x[2] / x[0]) - t

    return residual


def _box_3d(m: int) -> Residual:  # (12)
    t = 0.1 * _idx(m)
    c = np.exp(-t) - np.exp(-10.0 * t)

    def residual(x):
        return jnp.exp(-t * x[0]) - jnp.exp(-t * x[1]) - x[2] * c

    return residual


def _powell_singular(x):  # (13)
    return jnp.stack([
        x[0] + 10.0 * x[1],
        np.sqrt(5.0) * (x[2] - x[3]),
        (x[1] - 2.0 * x[2]) ** 2,
        np.sqrt(10.0) * (x[0] - x[3]) ** 2,
    ])


def _wood(x):  # (14)
    return jnp.stack([
        10.0 * (x[1] - x[0] ** 2),
        1.0 - x[0],
        np.sqrt(90.0) * (x[3] - x[2] ** 2),
        1.0 - x[2],
        np.sqrt(10.0) * (x[1] + x[3] - 2.0),
        (x[1] - x[3]) / np.sqrt(10.0),
    ])


def _kowalik_osborne(x):  # (15)
    u = _KOWALIK_U
    return _KOWALIK_Y - x[0] * (u**2 + u * x[1]) / (u**2 + u * x[2] + x[3])


def _brown_dennis(m: int) -> Residual:  # (16)
    t = _idx(m) / 5.0

    def residual(x):
        return (x[0] + t * x[1] - np.exp(t)) ** 2 + (x[2] + x[3] * np.sin(t) - np.cos(t)) ** 2

    return residual


def _osborne1(x):  # (17)
    t = 10.0 * (_idx(33) - 1.0)
    return _OSBORNE1_Y - (x[0] + x[1] * jnp.exp(-t * x[3]) + x[2] * jnp.exp(-t * x[4]))


def _biggs_exp6(m: int) -> Residual:  # (18)
    t = 0.1 * _idx(m)
    y = np.exp(-t) - 5.0 * np.exp(-10.0 * t) + 3.0 * np.exp(-4.0 * t)

    def residual(x):
        return (x[2] * jnp.exp(-t * x[0]) - x[3] * jnp.exp(-t * x[1])
                + x[5] * jnp.exp(-t * x[4]) - y)

    return residual


def _osborne2(x):  # (19)
    t = (_idx(65) - 1.0) / 10.0
    return _OSBORNE2_Y - (
        x[0] * jnp.exp(-t * x[4])
        + x[1] * jnp.exp(-((t - x[8]) ** 2) * x[5])
        + x[2] * jnp.exp(-((t - x[9]) ** 2) * x[6])
        + x[3] * jnp.exp(-((t - x[10]) ** 2) * x[7])
    )


def _watson(n: int) -> Residual:  # (20), m = 31
    t = _idx(29) / 29.0
    powers = t[:, None] ** np.arange(n)  # (29, n): t_i^(j-1), j = 1..n
    dcoef = np.arange(1, n, dtype=np.float64)  # (j-1) for j = 2..n

    def residual(x):
        s_deriv = powers[:, : n - 1] @ (dcoef * x[1:])  # sum_{j>=2} (j-1) x_j t^(j-2)
        s_poly = powers @ x  # sum_j x_j t^(j-1)
        f = s_deriv - s_poly**2 - 1.0
        return jnp.concatenate([f, jnp.stack([x[0], x[1] - x[0] ** 2 - 1.0])])

    return residual


def _extended_rosenbrock(x):  # (21), m = n even
    odd, even = x[0::2], x[1::2]
    return jnp.stack([10.0 * (even - odd**2), 1.0 - odd], axis=1).reshape(-1)


def _extended_powell_singular(x):  # (22), m = n, n a multiple of 4
    a, b, c, d = x[0::4], x[1::4], x[2::4], x[3::4]
    return jnp.stack([
        a + 10.0 * b,
        np.sqrt(5.0) * (c - d),
        (b - 2.0 * c) ** 2,
        np.sqrt(10.0) * (a - d) ** 2,
    ], axis=1).reshape(-1)


def _penalty1(x):  # (23), m = n + 1
    a = 1e-5
    return jnp.concatenate([np.sqrt(a) * (x - 1.0), jnp.stack([jnp.sum(x**2) - 0.25])])


def _penalty2(n: int) -> Residual:  # (24), m = 2n
    a = 1e-5
    i = np.arange(2, n + 1, dtype=np.float64)
    y = np.exp(i / 10.0) + np.exp((i - 1.0) / 10.0)
    weights = np.arange(n, 0, -1, dtype=np.float64)  # n - j + 1

    def residual(x):
        e = jnp.exp(x / 10.0)
        return jnp.concatenate([
            jnp.stack([x[0] - 0.2]),
            np.sqrt(a) * (e[1:] + e[:-1] - y),
            np.sqrt(a) * (e[1:] - np.exp(-0.1)),
            jnp.stack([jnp.sum(weights * x**2) - 1.0]),
        ])

    return residual


def _variably_dimensioned(x):  # (25), m = n + 2
    j = _idx(x.shape[0])
    s = jnp.sum(j * (x - 1.0))
    return jnp.concatenate([x - 1.0, jnp.stack([s, s**2])])


def _trigonometric(x):  # (26), m = n
    n = x.shape[0]
    i = _idx(n)
    return n - jnp.sum(jnp.cos(x)) + i * (1.0 - jnp.cos(x)) - jnp.sin(x)


def _brown_almost_linear(x):  # (27), m = n
    n = x.shape[0]
    head = x[:-1] + jnp.sum(x) - (n + 1.0)
    return jnp.concatenate([head, jnp.stack([jnp.prod(x) - 1.0])])


def _discrete_boundary_value(x):  # (28), m = n
    n = x.shape[0]
    h = 1.0 / (n + 1.0)
    t = h * _idx(n)
    xp = jnp.pad(x, 1)  # x_0 = x_{n+1} = 0
    return 2.0 * x - xp[:-2] - xp[2:] + h**2 * (x + t + 1.0) ** 3 / 2.0


def _linear_full_rank(m: int) -> Residual:  # (32)
    def residual(x):
        n = x.shape[0]
        c = 2.0 / m * jnp.sum(x) + 1.0
        return jnp.concatenate([x - c, jnp.full((m - n,), -1.0, dtype=x.dtype) * c])

    return residual


def _linear_rank1(m: int) -> Residual:  # (33)
    i = _idx(m)

    def residual(x):
        return i * jnp.sum(_idx(x.shape[0]) * x) - 1.0

    return residual


def _chebyquad(m: int) -> Residual:  # (35)
    # f_i = mean_j T_i(x_j) - integral_0^1 T_i, T_i the Chebyshev polynomial shifted to
    # [0, 1]; the integral is 0 for odd i and -1/(i^2 - 1) for even i.
    integral = np.array([-1.0 / (k * k - 1.0) if k % 2 == 0 else 0.0 for k in range(1, m + 1)])

    def residual(x):
        y = 2.0 * x - 1.0
        t_prev, t_cur = jnp.ones_like(y), y
        means = [jnp.mean(t_cur)]
        for _ in range(m - 1):
            t_prev, t_cur = t_cur, 2.0 * y * t_cur - t_prev
            means.append(jnp.mean(t_cur))
        return jnp.stack(means) - integral

    return residual


# --------------------------------------------------------------------------------------
# The tables.
# --------------------------------------------------------------------------------------

_COMPUTED = ("x_star computed here (float64 Levenberg-Marquardt + Gauss-Newton polish, "
             "|J^T r| at rounding level) and checked against MGH's f*")


def _unconstrained() -> tuple[MGHProblem, ...]:
    def P(name, n, m, residual, *args, **kwargs):
        return MGHProblem(name, n, m, _jax_residual(residual), *args, **kwargs)

    ones = np.ones
    return (
        P("rosenbrock", 2, 2, _rosenbrock, [-1.2, 1.0], 0.0, [1.0, 1.0], number=1),
        P("freudenstein_roth", 2, 2, _freudenstein_roth, [0.5, -2.0], 0.0, [5.0, 4.0],
          f_local=(48.9842,), number=2,
          notes="local minimum f = 48.9842... at (11.41..., -0.8968...), where "
                "Gauss-Newton-type methods from x0 usually stop"),
        P("powell_badly_scaled", 2, 2, _powell_badly_scaled, [0.0, 1.0], 0.0,
          _POWELL_BS_XSTAR, number=3,
          notes="MGH give x* = (1.098...e-5, 9.106...); x_star is the exact root of the "
                "two residuals, solved here to full float64 precision"),
        P("brown_badly_scaled", 2, 3, _brown_badly_scaled, [1.0, 1.0], 0.0, [1e6, 2e-6],
          number=4),
        P("beale", 2, 3, _beale, [1.0, 1.0], 0.0, [3.0, 0.5], number=5),
        P("jennrich_sampson", 2, 10, _jennrich_sampson(10), [0.3, 0.4], 124.362,
          _JENNRICH_XSTAR, f_star_tol=1e-3, number=6,
          notes="m = 10; MGH: f = 124.362... at x1 = x2 = 0.2578...; " + _COMPUTED),
        P("helical_valley", 3, 3, _helical_valley, [-1.0, 0.0, 0.0], 0.0, [1.0, 0.0, 0.0],
          number=7),
        P("bard", 3, 15, _bard, [1.0, 1.0, 1.0], 8.21487e-3, _BARD_XSTAR, f_star_tol=1e-8,
          f_local=(17.4286,), number=8,
          notes="f = 17.4286... is approached at (0.8406..., -inf, -inf); " + _COMPUTED),
        P("gaussian", 3, 15, _gaussian, [0.4, 1.0, 0.0], 1.12793e-8, _GAUSSIAN_XSTAR,
          f_star_tol=1e-13, number=9, notes=_COMPUTED),
        P("meyer", 3, 16, _meyer, [0.02, 4000.0, 250.0], 87.9458, _MEYER_XSTAR,
          f_star_tol=1e-4, number=10,
          notes="same data as NIST StRD MGH10; x_star = NIST's certified values "
                "(11 digits), whose certified RSS is 8.7945855171E+01"),
        P("gulf", 3, 99, _gulf(99), [5.0, 2.5, 0.15], 0.0, [50.0, 25.0, 1.5], number=11,
          notes="m = 99 (MGH allow 3 <= m <= 100); |y_i - x_2| (see the residual)"),
        P("box_3d", 3, 10, _box_3d(10), [0.0, 10.0, 20.0], 0.0, [1.0, 10.0, 1.0],
          number=12,
          notes="m = 10; f = 0 also at (10, 1, -1) and wherever x1 = x2, x3 = 0"),
        P("powell_singular", 4, 4, _powell_singular, [3.0, -1.0, 0.0, 1.0], 0.0,
          np.zeros(4), number=13, notes="singular Jacobian at the solution"),
        P("wood", 4, 6, _wood, [-3.0, -1.0, -3.0, -1.0], 0.0, ones(4), number=14),
        P("kowalik_osborne", 4, 11, _kowalik_osborne, [0.25, 0.39, 0.415, 0.39], 3.07505e-4,
          _KOWALIK_XSTAR, f_star_tol=1e-9, f_local=(1.02734e-3,), number=15,
          notes="same data as NIST StRD MGH09; x_star = NIST's certified values "
                "(RSS 3.0750560385E-04); f = 1.02734...e-3 is approached at "
                "(+inf, -14.07..., -inf, -inf)"),
        P("brown_dennis", 4, 20, _brown_dennis(20), [25.0, 5.0, -5.0, -1.0], 85822.2,
          _BROWN_DENNIS_XSTAR, f_star_tol=0.1, number=16, notes="m = 20; " + _COMPUTED),
        P("osborne1", 5, 33, _osborne1, [0.5, 1.5, -1.0, 0.01, 0.02], 5.46489e-5,
          _OSBORNE1_XSTAR, f_star_tol=1e-10, number=17,
          notes="same data as NIST StRD MGH17; x_star = NIST's certified values "
                "(RSS 5.4648946975E-05)"),
        P("biggs_exp6", 6, 13, _biggs_exp6(13), [1.0, 2.0, 1.0, 1.0, 1.0, 1.0], 0.0,
          [1.0, 10.0, 1.0, 5.0, 4.0, 3.0], f_local=(5.65565e-3,), number=18,
          notes="m = 13; MGH also list f = 5.65565...e-3 (a local minimum)"),
        P("osborne2", 11, 65, _osborne2,
          [1.3, 0.65, 0.65, 0.7, 0.6, 3.0, 5.0, 7.0, 2.0, 4.5, 5.5], 4.01377e-2,
          _OSBORNE2_XSTAR, f_star_tol=1e-7, number=19, notes=_COMPUTED),
        P("watson_6", 6, 31, _watson(6), np.zeros(6), 2.28767e-3, _WATSON6_XSTAR,
          f_star_tol=1e-8, number=20, notes="n = 6; " + _COMPUTED),
        P("watson_9", 9, 31, _watson(9), np.zeros(9), 1.39976e-6, _WATSON9_XSTAR,
          f_star_tol=1e-11, number=20, notes="n = 9; " + _COMPUTED),
        P("extended_rosenbrock", 10, 10, _extended_rosenbrock, np.tile([-1.2, 1.0], 5), 0.0,
          ones(10), number=21, notes="n = 10"),
        P("extended_powell_singular", 8, 8, _extended_powell_singular,
          np.tile([3.0, -1.0, 0.0, 1.0], 2), 0.0, np.zeros(8), number=22, notes="n = 8"),
        P("penalty1_4", 4, 5, _penalty1, _idx(4), 2.24997e-5, _PENALTY1_4_XSTAR,
          f_star_tol=1e-10, number=23, notes="n = 4; " + _COMPUTED),
        P("penalty1_10", 10, 11, _penalty1, _idx(10), 7.08765e-5, _PENALTY1_10_XSTAR,
          f_star_tol=1e-10, number=23, notes="n = 10; " + _COMPUTED),
        P("penalty2_4", 4, 8, _penalty2(4), np.full(4, 0.5), 9.37629e-6, _PENALTY2_4_XSTAR,
          f_star_tol=1e-11, number=24, notes="n = 4; " + _COMPUTED),
        P("variably_dimensioned", 10, 12, _variably_dimensioned, 1.0 - _idx(10) / 10.0, 0.0,
          ones(10), number=25, notes="n = 10"),
        P("trigonometric", 10, 10, _trigonometric, np.full(10, 0.1), 0.0,
          _TRIGONOMETRIC_XSTAR, f_local=(2.79506e-5,), number=26,
          notes="n = 10; x_star: a zero-residual point computed here. From x0 solvers "
                "usually end at the local minimum f = 2.79506...e-5 (reported by later "
                "authors; MGH give only f = 0)"),
        P("brown_almost_linear", 10, 10, _brown_almost_linear, np.full(10, 0.5), 0.0,
          ones(10), f_local=(1.0,), number=27,
          notes="n = 10; f = 0 at (a, ..., a, a^(1-n)) for the roots a of "
                "n a^n - (n+1) a^(n-1) + 1 = 0 (a = 1 among them); f = 1 at "
                "(0, ..., 0, n+1)"),
        P("discrete_boundary_value", 10, 10, _discrete_boundary_value,
          _idx(10) / 11.0 * (_idx(10) / 11.0 - 1.0), 0.0, _DBV_XSTAR, number=28,
          notes="n = 10; x_star: the root of the residuals, computed here"),
        P("linear_full_rank", 5, 10, _linear_full_rank(10), ones(5), 5.0, -ones(5),
          number=32, notes="n = 5, m = 10; f* = m - n at x = -1"),
        P("linear_rank1", 5, 10, _linear_rank1(10), ones(5), 10 * 9 / (2 * 21),
          [1.0 / 7.0, 0.0, 0.0, 0.0, 0.0], number=33,
          notes="n = 5, m = 10; f* = m(m-1)/(2(2m+1)) wherever sum_j j x_j = "
                "3/(2m+1); rank-deficient Jacobian"),
        P("chebyquad_8", 8, 8, _chebyquad(8), _idx(8) / 9.0, 3.51687e-3, _CHEBYQUAD8_XSTAR,
          f_star_tol=1e-8, number=35, notes="n = m = 8; " + _COMPUTED),
    )


# Reference minimisers (see the module docstring). The "computed here" ones were
# obtained in float64 (scipy least_squares, method "lm", tolerances 1e-15, then polished
# by Gauss-Newton steps; symmetric problems reduced to one dimension and root-found).
_POWELL_BS_XSTAR = [1.0981593296998321e-05, 9.106146739866404]  # exact root, both f_i = 0
_JENNRICH_XSTAR = [0.2578252136703641, 0.2578252136703641]  # x1 = x2 by symmetry
_BARD_XSTAR = [0.08241055975246424, 1.1330360921191027, 2.3436951785566125]
_GAUSSIAN_XSTAR = [0.39895613783875655, 1.000019084487804, 0.0]  # x3 = 0: symmetric data
_MEYER_XSTAR = [5.6096364710e-03, 6.1813463463e03, 3.4522363462e02]  # NIST MGH10
_KOWALIK_XSTAR = [1.9280693458e-01, 1.9128232873e-01, 1.2305650693e-01,
                  1.3606233068e-01]  # NIST MGH09
_BROWN_DENNIS_XSTAR = [-11.594439114773524, 13.203629768478692, -0.40343947057966756,
                       0.2367788112013745]
_OSBORNE1_XSTAR = [3.7541005211e-01, 1.9358469127e00, -1.4646871366e00, 1.2867534640e-02,
                   2.2122699662e-02]  # NIST MGH17
_OSBORNE2_XSTAR = [1.3099771545704453, 0.431553794468403, 0.6336616989115136,
                   0.5994305346907575, 0.7541832259560298, 0.9042885809749844,
                   1.3658118347387456, 4.823698817596892, 2.39868486620393,
                   4.568874597633732, 5.675341470596446]
_WATSON6_XSTAR = [-0.015725084385266392, 1.012434869577954, -0.23299162751414362,
                  1.2604301027060325, -1.5137289451854252, 0.9929964460015642]
_WATSON9_XSTAR = [-1.53070365214075e-05, 0.9997897039319487, 0.014763963693544253,
                  0.14634232829948693, 1.0008211030041803, -2.6177311405178694,
                  4.10440316447754, -3.143612278555683, 1.0526264080099954]
# Penalty I: x_i = c for all i by symmetry, c the root of 2n c^3 + (a - 1/2) c - a = 0.
_PENALTY1_4_XSTAR = [0.2500074995875379] * 4
_PENALTY1_10_XSTAR = [0.15812230111311634] * 10
_PENALTY2_4_XSTAR = [0.19999933335037795, 0.19131670172755758, 0.4801014897009001,
                     0.518845395493218]
_TRIGONOMETRIC_XSTAR = [0.0343962889257371, 0.035032315741349254, 0.03571919582595794,
                        0.036465224218250734, 0.03728091173885558, 0.03817986254748348,
                        0.03918014108245367, 0.0403065026440766, 0.17972019169717168,
                        0.15624088142700152]
_DBV_XSTAR = [-0.04316498251876487, -0.08157715653538689, -0.11448571438052928,
              -0.14097357686259668, -0.1599086961819831, -0.16987720231277492,
              -0.16908998378120835, -0.15524953522183182, -0.125355891678935,
              -0.07541653368589209]
_CHEBYQUAD8_XSTAR = [0.04315276033116816, 0.19309084054600423, 0.2663287068654691,
                     0.49999999993276273, 0.5000000000672372, 0.7336712931345308,
                     0.8069091594539958, 0.9568472396688318]


def _bounded() -> tuple[MGHProblem, ...]:
    """Box-constrained variants: the box excludes the unconstrained minimiser."""
    inf = np.inf
    by_name = {p.name: p for p in MGH_PROBLEMS}

    def variant(base: str, lower, upper, f_star=None, x_star=None, notes=""):
        p = by_name[base]
        return MGHProblem(f"{base}_bounded", p.n, p.m, p.residual, p.x0, f_star, x_star,
                          lower=lower, upper=upper, number=p.number, notes=notes)

    return (
        variant("rosenbrock", [-inf, -inf], [0.5, inf], 0.25, [0.5, 0.25],
                notes="x1 <= 0.5 is active: on x2 = x1^2 the objective is (1 - x1)^2, "
                      "so the minimum is f = 0.25 at (0.5, 0.25) with multiplier 1/2"),
        variant("beale", [-4.5, -4.5], [2.5, 4.5],
                notes="Beale's usual square [-4.5, 4.5]^2 cut at x1 <= 2.5, excluding "
                      "(3, 0.5); from x0 the solution is near (2.5, 0.35), f ~ 0.0727, "
                      "with x1 <= 2.5 active (a second local minimum, f ~ 0.762, lies "
                      "on x1 = -4.5)"),
        variant("wood", [-10.0, -10.0, -10.0, -10.0], [0.9, 10.0, 0.9, 10.0],
                notes="x1, x3 <= 0.9 exclude (1, 1, 1, 1); the best point found has "
                      "x3 = 0.9 active, f ~ 4.2744 (with two nearby local minima)"),
        variant("powell_singular", [0.1, -20.0, -1.0, -1.0], [100.0, 20.0, 1.0, 50.0],
                notes="x1 >= 0.1 excludes the origin; at the solution x1 = 0.1 is "
                      "active, f ~ 1.878e-4"),
    )


MGH_PROBLEMS: tuple[MGHProblem, ...] = _unconstrained()
MGH_BOUNDED: tuple[MGHProblem, ...] = _bounded()

_BY_NAME = {p.name: p for p in MGH_PROBLEMS + MGH_BOUNDED}


def get_mgh(name: str) -> MGHProblem:
    """The problem called ``name`` (unconstrained or ``*_bounded``); ValueError if unknown."""
    try:
        return _BY_NAME[name]
    except KeyError:
        raise ValueError(
            f"unknown MGH problem {name!r}; known: {', '.join(_BY_NAME)}"
        ) from None
