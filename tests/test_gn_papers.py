"""The full-gn and sgn reproductions: the shared runner, target bookkeeping, claims,
and one tiny end-to-end run of each paper into strict JSON."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from invphys import optim
from invphys.experiments import _gn_bench as gb
from invphys.experiments import papers, sgn
from invphys.experiments.full_gn import mlp


def _strict_load(path):
    def bad(token):
        raise ValueError(f"non-strict JSON token {token}")

    return json.loads(path.read_text(), parse_constant=bad)


def test_iters_to_target_from_a_known_curve():
    curve = [5.0, 3.0, 2.0, 1.0, 0.5, 0.7]
    assert gb.iters_to_target(curve, 1.0) == 3
    assert gb.iters_to_target(curve, 0.6) == 4
    assert gb.iters_to_target(curve, 10.0) == 0
    assert gb.iters_to_target(curve, 0.1) is None
    assert gb.iters_to_target([np.nan, 2.0, np.inf], 3.0) == 1


def _least_squares():
    kx, kw = jax.random.split(jax.random.key(0))
    x = jax.random.normal(kx, (64, 5))
    y = x @ jax.random.normal(kw, (5, 1)) + 0.1
    return gb.Bench(lambda p, xb: gb.mlp_apply(p, xb), gb.half_mse, x, y, 64), x, y


def test_gn_decreases_the_loss_on_linear_least_squares():
    bench, x, y = _least_squares()
    p0 = gb.init_mlp(jax.random.key(1), (5, 1))
    full = gb.gn_methods(cg_max_steps=20)[0]
    curve = bench.curve(full, p0, steps=6, chunk=3)
    assert len(curve) == 7
    assert np.all(np.diff(curve) <= 1e-12)
    # a linear model: GN is Newton; a few (damped) steps reach the least-squares floor
    a = jnp.concatenate([x, jnp.ones((64, 1))], axis=1)
    coef = jnp.linalg.lstsq(a, y)[0]
    floor = float(gb.half_mse(a @ coef, y))
    assert curve[-1] <= floor + 1e-8


def test_first_order_sweep_picks_the_fewest_iterations():
    bench, _, _ = _least_squares()
    p0 = gb.init_mlp(jax.random.key(1), (5, 1))
    adamw = gb.first_order_methods()[0]
    res = gb.sweep(bench, adamw, p0, (1e-4, 1e-1), steps=100, target=0.5,
                   log=lambda _: None)
    iters = [r["iters"] for r in res["runs"]]
    assert res["best"]["lr"] == 1e-1
    assert iters[0] is None or iters[0] > iters[1]


def test_timed_rerun_follows_the_recorded_minibatch_trajectory():
    bench, x, y = _least_squares()
    bench = gb.Bench(bench.apply, bench.loss, x, y, batch=16, seed=3)
    p0 = gb.init_mlp(jax.random.key(1), (5, 1))
    adamw = gb.first_order_methods()[0]
    curve = bench.curve(adamw, p0, 0.05, steps=10, chunk=5)
    t = bench.timed(adamw, p0, 0.05, 7, repeats=1)
    assert t["final_loss"] == pytest.approx(curve[7], rel=1e-10)
    assert t["iters"] == 7 and t["run_s"] > 0


def test_verdict_ratios():
    res = {"methods": {
        "adamw": {"tuned": True, "targets": {"0.01": {"iters": 30, "wall_s": 1.0}}},
        "muon": {"tuned": True, "targets": {"0.01": {"iters": None}}},
        "gn-full": {"tuned": False, "targets": {"0.01": {"iters": 10, "wall_s": 4.0}}},
        "gn-layerwise": {"tuned": False, "targets": {"0.01": {"iters": 12}}},
    }}
    v = mlp.verdict(res, 0.01)
    assert v["best_first_order"] == "adamw"
    assert v["iter_ratio_fo_over_gn"] == pytest.approx(3.0) and v["gn_3x_fewer_iterations"]
    assert v["layerwise_over_full_iters"] == pytest.approx(1.2) and v["layerwise_within_1p3x"]
    assert v["wall_ratio_gn_over_fo"] == pytest.approx(4.0)


def test_lambda_min_is_the_smallest_informative_gn_eigenvalue():
    x = jax.random.normal(jax.random.key(0), (40, 4))
    p = gb.init_mlp(jax.random.key(1), (4, 3, 1))  # 19 parameters < 40 samples
    flat, unravel = jax.flatten_util.ravel_pytree(p)
    jac = jax.jacfwd(lambda f: gb.mlp_apply(unravel(f), x)[:, 0])(flat)
    dense = np.linalg.eigvalsh(np.asarray(jac.T @ jac) / 40)[0]
    assert sgn.lambda_min(p, x) == pytest.approx(dense, rel=1e-6)
    # more parameters than samples: the NTK-type Gram J J^T / n, the optimizer's definition
    wide = gb.init_mlp(jax.random.key(2), (4, 16, 1))  # 97 parameters > 40 samples
    flat, unravel = jax.flatten_util.ravel_pytree(wide)
    jac = np.asarray(jax.jacfwd(lambda f: gb.mlp_apply(unravel(f), x)[:, 0])(flat))
    gram = np.linalg.eigvalsh(jac @ jac.T / 40)[0]
    assert gram > 1e-8 and np.linalg.eigvalsh(jac.T @ jac / 40)[0] < 1e-12
    assert sgn.lambda_min(wide, x) == pytest.approx(gram, rel=1e-6)
    ggn = optim.linearize_ggn(lambda q: gb.mlp_apply(q, x),
                              lambda o: gb.half_mse(o, jnp.zeros_like(o)), wide)
    assert float(optim.ggn_lambda_min_informative(ggn, wide)) == pytest.approx(gram, rel=1e-6)


def test_claims_read_the_sign_of_the_rank_correlation():
    s = sgn.Settings(widths=(8, 16), batches=(0,), lambdas=(0.1, 1.0))
    rows = [{"width": w, "batch": 10, "lambda": lam, "train_loss": 1.0 / w,
             "gap": 1.0 / (w * lam), "lambda_min_path": w * lam, "test_loss": 0.0}
            for w in (8, 16) for lam in (0.1, 1.0)]
    c = sgn.claims(rows, s)
    assert c["spearman_lambda_min_vs_gap"] == pytest.approx(-1.0)
    assert c["claim1_larger_lambda_min_smaller_gap"] is True
    assert c["claim2_optimisation_error_falls_with_width"] is True
    assert sgn.spearman([1, 2, 3, 4], [1, 3, 2, 4]) == pytest.approx(0.8)
    # the verdict needs significance: 4 points in reverse order, p = 1/24 < 0.05
    assert sgn.rank_test([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(1 / 24, abs=0.01)
    assert sgn.rank_test([1, 2, 3, 4], [1, 2, 3, 4]) == pytest.approx(1.0)
    flip = [r | {"gap": -r["gap"]} for r in rows]  # a significant positive correlation
    assert sgn.claims(flip, s)["claim1_larger_lambda_min_smaller_gap"] is False
    three = sgn.claims(rows[:3], s)  # 3 points: no ordering is significant (p >= 1/6)
    assert three["claim1_larger_lambda_min_smaller_gap"] is None
    assert c["stable"]["configs_used"] == 4 and not c["diverged"]
    # a diverged run (final loss above the initial one) breaks claim 2 over all
    # configurations, and is left out of the converged-only test
    rows[2] |= {"initial_loss": 0.1, "train_loss": 5.0}  # width 16, lambda 0.1
    c = sgn.claims(rows, s)
    assert c["diverged"] == [[16, 10, 0.1]]
    assert c["train_loss_monotone_in_width"] == "1/2"
    assert c["claim2_optimisation_error_falls_with_width"] is False
    assert c["stable"]["train_loss_monotone_in_width"] == "1/1"
    assert c["stable"]["claim2_optimisation_error_falls_with_width"] is True
    assert c["stable"]["configs_used"] == 3


def test_tiny_full_gn_run_writes_strict_json(tmp_path, monkeypatch):
    tiny = mlp.Settings(quick=True, grid=(1e-2, 1e-1), fo_steps=20, gn_steps=4,
                        batches=(0,), cg_steps=5)
    monkeypatch.setattr(mlp.Settings, "make", classmethod(lambda cls, quick: tiny))
    monkeypatch.setattr(mlp, "regression", lambda: mlp.Problem(
        "teacher-regression", jnp.ones((8, 2)) * jnp.arange(8)[:, None] / 8,
        jnp.arange(8.0)[:, None] / 8, (2, 3, 1), gb.half_mse, (0.5, 1e-1, 1e-9), "half MSE"))
    reports = papers.reproduce("full-gn", tmp_path, quick=True, parts=["regression"],
                               progress=False)
    data = _strict_load(tmp_path / "results.json")
    r = data["mlp"]["problems"]["teacher-regression"]
    assert set(r["methods"]) == {"adamw", "muon", "muon-all-2d", "sophia", "gn-full",
                                "gn-layerwise"}
    assert r["methods"]["adamw"]["targets"]["1e-09"]["iters"] is None  # never reached
    assert (tmp_path / "tables.md").is_file()
    assert "teacher-regression" in reports["full-gn"].readme


def test_tiny_sgn_run_writes_strict_json(tmp_path, monkeypatch):
    tiny = sgn.Settings(quick=True, widths=(4, 8), batches=(8, 0), lambdas=(1e-2, 1.0),
                        steps=4, checkpoints=2, seeds=1, n_train=16, n_test=32)
    monkeypatch.setattr(sgn.Settings, "make", classmethod(lambda cls, quick: tiny))
    papers.reproduce("sgn", tmp_path, quick=True, progress=False)
    data = _strict_load(tmp_path / "results.json")
    assert len(data["runs"]) == 8
    assert all(r["lambda_min_path"] >= 0 for r in data["runs"])
    assert (tmp_path / "sgn_gap_width.png").is_file()
