"""The certification tables: NIST StRD models and data, MGH residuals, and the LRE score.

These tests check the *problems*, not a solver: each hand-written NIST model must
reproduce NIST's certified residual sum of squares at the certified parameters, and each
MGH residual must reproduce the published minimum value at the reference minimiser.
A transcription slip (a sign, an exponent, one data value) fails them by far more than
their tolerances.
"""

from __future__ import annotations

import functools
import shutil

import jax
import numpy as np
import pytest

from invphys.certify import (
    MGH_BOUNDED,
    MGH_PROBLEMS,
    NIST_DATASETS,
    NIST_MODELS,
    get_mgh,
    load_nist,
    lre,
)
from invphys.certify.nist import _DATA_DIR

NIST_NAMES = [name for name, _ in NIST_DATASETS]

# (p, n) per dataset, from the table in data/nist_strd/README.md.
README_SIZES = {
    "Misra1a": (2, 14), "Chwirut2": (3, 54), "Chwirut1": (3, 214), "Lanczos3": (6, 24),
    "Gauss1": (8, 250), "Gauss2": (8, 250), "DanWood": (2, 6), "Misra1b": (2, 14),
    "Kirby2": (5, 151), "Hahn1": (7, 236), "Nelson": (3, 128), "MGH17": (5, 33),
    "Lanczos1": (6, 24), "Lanczos2": (6, 24), "Gauss3": (8, 250), "Misra1c": (2, 14),
    "Misra1d": (2, 14), "Roszman1": (4, 25), "ENSO": (9, 168), "MGH09": (4, 11),
    "Thurber": (7, 37), "BoxBOD": (2, 6), "Rat42": (3, 9), "MGH10": (3, 16),
    "Eckerle4": (3, 35), "Rat43": (4, 15), "Bennett5": (3, 154),
}  # fmt: skip

# Lanczos1's certified RSS (1.43e-25) lies below what float64 can resolve at the
# 11-digit certified parameters, in *any* arithmetic: rounding the certified values to
# 11 digits alone raises the RSS to 3.98e-21 (confirmed in 50-digit decimal arithmetic),
# and its residuals (~8e-14) are within 2.6 * 2^-52 ~ 6e-16 of float64 rounding of
# y (<= 2.6). Its model function is the one Lanczos2 and Lanczos3 use (both pass the
# 1e-6 check), and it gets the refined check in test_nist_lanczos1_rss_after_refinement.
RSS_BELOW_FLOAT64 = {"Lanczos1"}

FD_REL_STEP = 1e-6  # central differences with h_j = 1e-6 |b_j|; error ~1e-9 here


@functools.cache
def _nist_eval(name: str):
    """One jit-compiled evaluation per dataset (compiling once keeps the suite fast):
    residuals at the two starts, at the certified point and at the +-h_j points for
    central differences, and the jacfwd Jacobian at the certified point."""
    prob = load_nist(name)
    b = np.asarray(prob.certified)
    h = FD_REL_STEP * np.abs(b)
    points = np.concatenate([prob.starts, b[None], b + np.diag(h), b - np.diag(h)])

    @jax.jit
    def evaluate(points, b):
        return jax.vmap(prob.residual)(points), jax.jacfwd(prob.residual)(b)

    residuals, jac = evaluate(points, b)
    residuals, jac = np.asarray(residuals), np.asarray(jac)
    p = prob.p
    fd = ((residuals[3 : 3 + p] - residuals[3 + p :]) / (2.0 * h)[:, None]).T
    return {"starts": residuals[:2], "certified": residuals[2], "jac": jac, "fd": fd}


# ----------------------------------------------------------------------------- NIST


def test_nist_table():
    assert len(NIST_NAMES) == len(set(NIST_NAMES)) == 27
    assert set(NIST_MODELS) == set(NIST_NAMES) == set(README_SIZES)
    levels = [level for _, level in NIST_DATASETS]
    assert (levels.count("lower"), levels.count("average"), levels.count("higher")) == (
        8, 11, 8)
    assert {p.stem for p in _DATA_DIR.glob("*.dat")} == set(NIST_NAMES)


@pytest.mark.parametrize("name", NIST_NAMES)
def test_nist_parse(name):
    prob = load_nist(name)
    p, n = README_SIZES[name]
    assert prob.name == name and prob.difficulty == dict(NIST_DATASETS)[name]
    assert prob.x.shape == ((n, 2) if name == "Nelson" else (n,))
    assert prob.y.shape == (n,)
    assert prob.starts.shape == (2, p)
    assert prob.certified.shape == prob.certified_sd.shape == (p,)
    assert prob.certified_rss > 0 and np.all(prob.certified_sd > 0)
    assert not prob.x.flags.writeable and not prob.certified.flags.writeable
    assert load_nist(name.lower()) is prob  # cached, name case-insensitive


@pytest.mark.parametrize("name", [n for n in NIST_NAMES if n not in RSS_BELOW_FLOAT64])
def test_nist_rss_at_certified(name):
    """sum(residual(certified)^2) == certified RSS to 1e-6 relative: verifies the
    hand-written model formula (observed agreement is 1e-11 .. 5e-11)."""
    prob = load_nist(name)
    rss = float(np.sum(_nist_eval(name)["certified"] ** 2))
    assert abs(rss - prob.certified_rss) <= 1e-6 * prob.certified_rss, (rss, prob.certified_rss)


def test_nist_lanczos1_rss_after_refinement():
    """Lanczos1 (see RSS_BELOW_FLOAT64): same formula as Lanczos2/3, and one Gauss-Newton
    step from the certified point reaches NIST's certified RSS to float64 resolution
    (1e-2 relative: the residuals are only ~100 ulps of y) without leaving the
    certified digits (LRE >= 10 against the certified values)."""
    assert NIST_MODELS["Lanczos1"] is NIST_MODELS["Lanczos2"] is NIST_MODELS["Lanczos3"]
    prob = load_nist("Lanczos1")
    ev = _nist_eval("Lanczos1")
    step, *_ = np.linalg.lstsq(ev["jac"], -ev["certified"], rcond=None)
    refined = prob.certified + step
    rss = float(jax.jit(prob.rss)(refined))
    assert abs(rss - prob.certified_rss) <= 1e-2 * prob.certified_rss, rss
    assert lre(refined, prob.certified) >= 10.0
    # ... while at the rounded certified values themselves the RSS is set by rounding.
    assert float(np.sum(ev["certified"] ** 2)) < 1e-20


@pytest.mark.parametrize("name", NIST_NAMES)
def test_nist_residual_shape_and_finite_at_starts(name):
    prob = load_nist(name)
    starts = _nist_eval(name)["starts"]
    assert starts.shape == (2, prob.n)
    assert np.all(np.isfinite(starts)) and starts.dtype == np.float64


@pytest.mark.parametrize("name", NIST_NAMES)
def test_nist_jacobian_matches_central_differences(name):
    """jacfwd vs central differences at the certified point, per column, relative 1e-6."""
    ev = _nist_eval(name)
    jac, fd = ev["jac"], ev["fd"]
    assert jac.shape == fd.shape == (load_nist(name).n, load_nist(name).p)
    assert np.all(np.isfinite(jac))
    err = np.linalg.norm(jac - fd, axis=0) / np.linalg.norm(jac, axis=0)
    assert np.all(err <= 1e-6), err


def test_nist_nelson_models_log_y():
    prob = load_nist("Nelson")
    b = prob.certified
    expected = np.log(prob.y) - (b[0] - b[1] * prob.x[:, 0] * np.exp(-b[2] * prob.x[:, 1]))
    np.testing.assert_allclose(prob.residual(b), expected, rtol=1e-12, atol=1e-14)


def test_nist_unknown_name():
    with pytest.raises(ValueError, match="unknown NIST StRD dataset"):
        load_nist("Misra9")


def test_nist_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="Misra1a.dat"):
        load_nist("Misra1a", data_dir=tmp_path)


def test_nist_corrupt_files(tmp_path):
    src = (_DATA_DIR / "Misra1a.dat").read_text(encoding="ascii")
    shutil.copy(_DATA_DIR / "Misra1a.dat", tmp_path / "Misra1a.dat")
    assert load_nist("Misra1a", data_dir=tmp_path).n == 14  # the copy itself is fine

    lines = src.splitlines()
    bad_number = lines.copy()
    bad_number[62] = "      1.0E+01    abc"
    truncated = lines[:70]
    bad_param = lines.copy()
    bad_param[40] = "  b7 =   500         250           2.3894212918E+02  2.7070075241E+00"
    for broken in (bad_number, truncated, bad_param, ["not a NIST file"]):
        (tmp_path / "Misra1a.dat").write_text("\n".join(broken) + "\n", encoding="ascii")
        with pytest.raises(ValueError, match="Misra1a.dat"):
            load_nist("Misra1a", data_dir=tmp_path)


# ------------------------------------------------------------------------------ LRE


def test_lre_exact_is_11():
    c = np.array([2.3894212918e02, 5.5015643181e-04])
    assert lre(c, c) == 11.0
    assert lre(c * (1 + 1e-14), c) == 11.0  # capped: NIST certifies 11 digits


def test_lre_one_wrong_digit():
    c = np.array([1.2345678901, 2.0])
    # 10th significant digit off by one: |b - c| / |c| = 1e-9 / 1.23 -> LRE 9.09
    assert lre([1.2345678911, 2.0], c) == pytest.approx(-np.log10(1e-9 / 1.2345678901))
    # 3rd significant digit wrong: LRE between 2 and 3
    assert 2.0 < lre([1.2445678901, 2.0], c) < 3.0
    # the score is the minimum over parameters
    assert lre([1.2345678901, 2.02], c) == pytest.approx(2.0)


def test_lre_nonfinite_and_zero_certified():
    c = np.array([1.0, 2.0])
    assert lre([np.nan, 2.0], c) == 0.0
    assert lre([1.0, np.inf], c) == 0.0
    assert lre([5.0, 2.0], c) == 0.0  # no correct digit: clipped at 0
    assert lre([1e-5], [0.0]) == pytest.approx(5.0)  # c == 0: absolute error
    assert lre([0.0], [0.0]) == 11.0
    with pytest.raises(ValueError):
        lre([1.0], [1.0, 2.0])


# ------------------------------------------------------------------------------ MGH

REQUIRED_MGH = [
    "rosenbrock", "freudenstein_roth", "powell_badly_scaled", "brown_badly_scaled",
    "beale", "jennrich_sampson", "helical_valley", "bard", "gaussian", "meyer", "box_3d",
    "powell_singular", "wood", "kowalik_osborne", "brown_dennis", "osborne1", "osborne2",
    "watson_6", "watson_9", "biggs_exp6", "penalty1_4", "penalty1_10",
    "brown_almost_linear", "variably_dimensioned", "trigonometric", "extended_rosenbrock",
]  # fmt: skip
MGH_NAMES = [p.name for p in MGH_PROBLEMS]
ALL_MGH = MGH_PROBLEMS + MGH_BOUNDED


@functools.cache
def _mgh_eval(name: str):
    """Residuals at x0 (and x_star if any) in one jit compile."""
    prob = get_mgh(name)
    points = [prob.x0] if prob.x_star is None else [prob.x0, prob.x_star]
    return np.asarray(jax.jit(jax.vmap(prob.residual))(np.stack(points)))


def test_mgh_tables():
    assert set(REQUIRED_MGH) <= set(MGH_NAMES)
    names = [p.name for p in ALL_MGH]
    assert len(names) == len(set(names))
    assert all(not p.bounded for p in MGH_PROBLEMS) and all(p.bounded for p in MGH_BOUNDED)
    assert get_mgh("bard") is MGH_PROBLEMS[MGH_NAMES.index("bard")]
    # numpy (even integer) input gives a jax array, not a numpy computation
    assert isinstance(get_mgh("bard").residual(np.ones(3, dtype=int)), jax.Array)
    with pytest.raises(ValueError, match="unknown MGH problem"):
        get_mgh("nope")


@pytest.mark.parametrize("name", [p.name for p in ALL_MGH])
def test_mgh_residual_shape_and_finite_at_x0(name):
    prob = get_mgh(name)
    r0 = _mgh_eval(name)[0]
    assert prob.x0.shape == (prob.n,)
    assert r0.shape == (prob.m,) and np.all(np.isfinite(r0))


@pytest.mark.parametrize("name", [p.name for p in MGH_PROBLEMS if p.x_star is not None])
def test_mgh_value_at_x_star(name):
    """sum(residual(x_star)^2) == f_star within the published precision.

    MGH print nonzero f* to 6 significant digits, truncated ("8.21487...10^-3"), so
    f_star_tol is one unit in the 6th digit (Jennrich-Sampson "124.362": 1e-3; Brown-
    Dennis "85822.2": 0.1). f* = 0 is exact; float64 rounding of x_star adds < 1e-20.
    """
    prob = get_mgh(name)
    f = float(np.sum(_mgh_eval(name)[1] ** 2))
    assert abs(f - prob.f_star) <= prob.f_star_tol + 1e-14 * abs(prob.f_star) + 1e-20, (
        f, prob.f_star)


@pytest.mark.parametrize(
    ("mgh", "nist"), [("meyer", "MGH10"), ("kowalik_osborne", "MGH09"), ("osborne1", "MGH17")]
)
def test_mgh_data_match_nist(mgh, nist):
    """Three MGH problems are NIST datasets: at NIST's certified values the MGH residual
    (data typed from MGH) gives NIST's certified RSS to 1e-6 -- an independent check."""
    f = float(np.sum(_mgh_eval(mgh)[1] ** 2))
    rss = load_nist(nist).certified_rss
    assert abs(f - rss) <= 1e-6 * rss


def test_mgh_known_starting_values():
    # f(x0) by hand: Rosenbrock 4.4^2 + 2.2^2; helical valley theta = 1/2 -> (-50)^2;
    # Powell singular 7^2 + 5 + 1 + 160.
    for name, value in [("rosenbrock", 24.2), ("helical_valley", 2500.0),
                        ("powell_singular", 215.0)]:
        assert float(np.sum(_mgh_eval(name)[0] ** 2)) == pytest.approx(value, rel=1e-14)


def test_mgh_jacobian_is_finite_and_traceable():
    for prob in (get_mgh("helical_valley"), get_mgh("watson_9"), get_mgh("chebyquad_8")):
        jac = jax.jit(jax.jacfwd(prob.residual))(prob.x0)
        assert jac.shape == (prob.m, prob.n) and np.all(np.isfinite(jac))


@pytest.mark.parametrize("name", [p.name for p in MGH_BOUNDED])
def test_mgh_bounded_boxes(name):
    prob = get_mgh(name)
    base = get_mgh(name.removesuffix("_bounded"))
    assert prob.residual is base.residual and prob.n == base.n and prob.m == base.m
    assert np.all(prob.lower < prob.upper)
    assert np.all(prob.lower <= prob.x0) and np.all(prob.x0 <= prob.upper)
    # the box excludes the unconstrained minimiser, so some bound must bind
    assert np.any(base.x_star < prob.lower) or np.any(base.x_star > prob.upper)


def test_mgh_rosenbrock_bounded_kkt():
    """The closed-form constrained solution (0.5, 0.25), f = 0.25, satisfies KKT: the
    gradient vanishes in the free variable and pushes x1 against its upper bound."""
    prob = get_mgh("rosenbrock_bounded")
    x = prob.x_star
    f, g = jax.jit(jax.value_and_grad(prob.f))(x)
    assert float(f) == pytest.approx(prob.f_star, rel=1e-15)
    g = np.asarray(g)
    assert x[0] == prob.upper[0] and g[0] < 0 and abs(g[1]) < 1e-12
