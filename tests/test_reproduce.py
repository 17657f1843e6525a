"""``invphys reproduce``'s building blocks at small sizes: the signal-subspace filter,
the tabulated linear simulator, the JCP ablation and the difficulty sweep."""

import dataclasses

import jax.numpy as jnp
import numpy as np
import pytest

from invphys import load_problem, make_dataset
from invphys._spec import load_spec
from invphys.experiments import report
from invphys.experiments.reproduce import (
    ABLATION,
    Settings,
    _solve_untimed,
    ablation,
    ablation_config,
    difficulty_sweep,
    get_model,
    load_problem_paper,
    paper_methods,
    paper_setup,
    signal_basis,
    tabulated_linear,
)
from invphys.learn import TrainConfig


@pytest.mark.parametrize("rank", [1, 2, 4])
def test_signal_basis_finds_the_signal_rank(rank):
    """Unit noise plus a rank-r signal of variance >> the Marchenko-Pastur edge: exactly r
    directions kept, spanning the signal's subspace."""
    rng = np.random.default_rng(rank)
    count, m = 4000, 30
    basis = np.linalg.qr(rng.normal(size=(m, rank)))[0]
    w = rng.normal(size=(count, m)) + (rng.normal(size=(count, rank)) * 10.0) @ basis.T
    mean, U, lam = signal_basis(w)
    assert U.shape == (m, rank)
    assert np.allclose(U.T @ U, np.eye(rank), atol=1e-10)
    # principal angles: the noise perturbs the subspace by ~ 1 / (10 sqrt(count))
    assert np.linalg.norm(basis - U @ (U.T @ basis)) < 0.02
    assert lam[rank] < 1.5 < lam[rank - 1]


def test_signal_basis_of_pure_noise_keeps_one_direction():
    w = np.random.default_rng(0).normal(size=(4000, 20))
    _, U, _ = signal_basis(w)
    assert U.shape == (20, 1)  # at least one: D-IPG needs a direction to step along


def test_tabulated_linear_matches_heat():
    """Heat is linear: the tabulated matrix reproduces the simulator to rounding."""
    problem = load_problem_paper(load_spec("heat1d").replace({"physics.steps": 20}))
    x = np.random.default_rng(1).normal(size=(3, 64))
    tab, info = tabulated_linear(problem, x)
    assert info["max_abs_err_vs_direct"] < 1e-12
    assert np.allclose(tab.fn(jnp.asarray(x[0])), problem.fn(jnp.asarray(x[0])), atol=1e-12)
    assert tab.x_size == problem.x_size  # the constraint set is kept


@pytest.mark.parametrize("label", list(ABLATION))
def test_ablation_configs_change_only_their_switches(label):
    base = TrainConfig.from_spec(load_spec("heat1d"))
    cfg = ablation_config(base, label)
    changed = {k for k, v in cfg.to_dict().items() if base.to_dict()[k] != v}
    assert changed == set(ABLATION[label][1])
    # the paper model itself: its config (and so its shipped checkpoint) is untouched
    assert (label == "+JCP") == (cfg == base)


def _paper_run(spec, dataset, ck):
    """x-GD, D-IPG and GN on the main table's 40 problems, untimed (what the sweep reuses
    at the spec's own number of steps)."""
    ps = paper_setup(spec, dataset, ck)
    return {k: _solve_untimed(ps.surrogate, ps.y, ps.x0, m, ps.rules)
            for k, m in paper_methods(ck, ps.surrogate, ("pg", "dipg", "gn")).items()}


@pytest.fixture(scope="module")
def shipped_heat(tmp_path_factory):
    """The protocol's Heat run with the shipped checkpoints (models/): loading, no training."""
    spec = load_spec("heat1d")
    dataset = make_dataset(load_problem_paper(spec))
    cfg = TrainConfig.from_spec(spec)
    out = tmp_path_factory.mktemp("rep")
    ck, how = get_model(spec, dataset, cfg, "heat1d-linear", out, progress=False)
    return spec, dataset, cfg, ck, how, out


@pytest.fixture(scope="module")
def tiny_heat(tmp_path_factory):
    """A small Heat run that trains: 200 samples, 2 epochs, the main table's 40 problems."""
    spec = load_spec("heat1d").replace({
        "data.n_train": 200, "data.n_val": 40, "data.n_test": 40, "train.epochs": 2,
        "solve.max_iter": 20})
    dataset = make_dataset(load_problem_paper(spec))
    cfg = TrainConfig.from_spec(spec)
    out = tmp_path_factory.mktemp("tiny")
    ck, how = get_model(spec, dataset, cfg, "tiny-linear", out, progress=False)
    assert how.startswith("trained")
    return spec, dataset, cfg, ck, how, out


def _check_ablation(run, labels, name):
    spec, dataset, cfg, ck, _, out = run
    settings = dataclasses.replace(Settings(), ablation=labels)
    rows = ablation(spec, dataset, cfg, ck, out, settings, log=lambda m: None,
                    progress=False, name=name)
    assert list(rows) == list(labels)
    assert rows["+JCP"]["source"] == "the paper model"
    assert rows["-JCP"]["jcp_on"] is False
    n_val = dataset.x_val.shape[0]
    for r in rows.values():
        # linear model: RJCP (4 probes per validation sample) estimates ||VW - I||_F^2 with
        # relative std <= sqrt(2 / (4 n_val)); allow 5 standard deviations
        assert abs(r["rjcp"] / r["vw_i_fro"] ** 2 - 1) < 5 * np.sqrt(2 / (4 * n_val))
        d = r["dipg"]
        assert d["n"] == 40 and 0 <= d["success"] <= 1
        assert 0 <= d["iterations_mean"] <= spec["solve"]["max_iter"]
    table = report.ablation_table(rows)
    assert len(table) == len(labels) + 1 and len({len(r) for r in table}) == 1
    assert table[1][-1] == "2.6 / 0.007 / 0.62 / 0.043"  # the paper's +JCP row
    assert report._ablation_figure(rows, out) == "ablation.png"
    assert (out / "ablation.png").stat().st_size > 1000
    return rows


def _check_sweep(run, name):
    spec, dataset, cfg, ck, _, out = run
    paper = _paper_run(spec, dataset, ck)
    settings = dataclasses.replace(Settings(), sweep_steps=(100, 200))
    rows = difficulty_sweep(spec, {"paper": paper, "ck": ck, "cfg": cfg}, settings, out,
                            log=lambda m: None, progress=False)
    assert list(rows) == ["100", "200"]
    assert rows["200"]["source"] == "the paper model"  # T = 200 reuses the main run
    assert rows["200"]["pg"]["iterations_mean"] == paper["pg"]["iterations_mean"]
    for r in rows.values():
        assert r["ratio_pg_dipg"] == pytest.approx(
            r["pg"]["iterations_mean"] / r["dipg"]["iterations_mean"])
        assert all(0 <= r[m]["success"] <= 1 for m in ("pg", "dipg", "gn"))
    table = report.sweep_table(rows)
    assert [r[0] for r in table[1:]] == ["100", "200"]
    assert table[1][-1] == "109.2 vs 17.4"
    return rows


def test_ablation_with_shipped_models(shipped_heat):
    rows = _check_ablation(shipped_heat, ("+JCP", "-JCP"), "heat1d-linear")
    assert rows["-JCP"]["source"] == "loaded models/heat1d-linear-nojcp"
    # the protocol's target: RJCP with JCP < 0.1, without > 10
    assert rows["+JCP"]["rjcp"] < 0.1 < 10 < rows["-JCP"]["rjcp"]


def test_sweep_with_shipped_models(shipped_heat):
    rows = _check_sweep(shipped_heat, "heat1d")
    assert rows["100"]["source"] == "loaded models/heat1d-T100-linear"


@pytest.mark.slow
def test_ablation_and_sweep_train_what_is_missing(tiny_heat):
    """The training path: variants and sweep models not shipped are trained into out/."""
    out = tiny_heat[-1]
    rows = _check_ablation(tiny_heat, ("+JCP", "-JCP", "V = W^T"), "tiny-linear")
    assert rows["V = W^T"]["source"].startswith("trained")
    assert (out / "models" / "tiny-linear-tiev" / "card.json").is_file()
    _check_sweep(tiny_heat, "heat1d")
    assert (out / "models" / "heat1d-T100-linear" / "card.json").is_file()


def test_heat_sweep_changes_the_physics():
    """Fewer FD steps smooth less: the high modes survive more at T = 100 than at 200."""
    spec = load_spec("heat1d")
    x = jnp.sin(jnp.pi * 5 * jnp.linspace(0, 1, 64))
    amp = {t: float(jnp.max(jnp.abs(load_problem(
        spec.replace({"physics.steps": t})).fn(x)))) for t in (100, 200)}
    # mode k decays by (1 - 4 s sin^2(pi k / (2 * 63)))^T per the FD recurrence
    lam = 1 - 4 * 0.45 * np.sin(np.pi * 5 / 126) ** 2
    assert amp[100] / amp[200] == pytest.approx(lam ** -100, rel=1e-6)


def _fake_block(methods, rng, n=6, n_it=10):
    """A mode's results as reproduce() records them (random numbers, right shapes)."""
    block = {}
    for m in methods:
        hist = np.abs(rng.normal(size=(n, n_it + 1))) + 0.1
        block[m] = {
            "n": n, "iterations_mean": 3.0, "iterations_std": 1.0, "iterations_median": 3.0,
            "iterations_q1": 2.0, "iterations_q3": 4.0, "success": 1.0,
            "accepted_fraction": 0.5, "final_rmse_mean": 0.2, "final_rmse_median": 0.2,
            "ms_per_iter": 0.1, "time_to_eps_s": 1e-4, "batch_wall_s": 0.01,
            "x_rel_err_median": 0.5, "_iters": [3] * n, "_final_rmse": hist[:, -1].tolist(),
            "_accepted_fraction": [0.5] * n, "_history_rmse": hist.tolist(),
            "_x": rng.normal(size=(n, 64)).tolist()}
    return block


def test_report_writes_every_table_and_the_readme(tmp_path):
    """Tables (.md/.csv), figures, JSON and the README section from one results dict."""
    rng = np.random.default_rng(0)
    paper = _fake_block(("pg", "dipg", "gn", "lm"), rng)
    beyond = _fake_block(("pg", "dipg-raw", "dipg", "gn", "lm", "dipg@g", "gn@g", "lm@g"), rng)
    beyond |= {"_g_direct": {"x_rel_err_median": 1.0}, "_criterion": "discrepancy",
               "_x_true": rng.normal(size=(6, 64)).tolist(),
               "_simulator": {"fidelity": "accurate", "tabulated": True,
                              "max_abs_err_vs_direct": 1e-14, "checked_on": 8,
                              "signal_dims": 5, "whitened_dims": 62}}
    log = [{"epoch": e, "rjcp": 1.0 / e, "val_mse": 0.1} for e in range(1, 4)]
    model = {"source": "x", "model": "linear", "val_mse": 0.05}
    abl = {k: {"source": "x", "changes": {}, "val_mse": 0.05, "rjcp": 0.04, "vw_i_fro": 0.2,
               "cond_w": 300.0, "jcp_on": True, "dipg": paper["dipg"], "_log": log}
           for k in ("+JCP", "-JCP")}
    sweep = {str(t): {"steps": t, "source": "x", "val_mse": 0.05, "rjcp": 0.04,
                      "vw_i_fro": 0.2, "cond_w": 300.0, "ratio_pg_dipg": 1.0,
                      **{m: paper[m] for m in ("pg", "dipg", "gn")}} for t in (100, 200)}
    results = {
        "settings": dataclasses.asdict(Settings.make(quick=True)), "device": "cpu",
        "wall_s": 1.0, "heat1d": {"paper": paper, "beyond": beyond},
        "models": {"heat1d": {"paper": model, "beyond": model, "_paper_log": log}},
        "ablation": abl, "sweep": sweep,
        "extra": {"deblur2d": {"tables": {"deblur_table": [["a", "b"], ["1", "2"]]},
                               "public": {"x_rmse": 0.1}, "readme": "**2D**"}},
    }
    out = tmp_path / "docs"
    out.mkdir()
    report.write_all(results, out)
    for name in ("main_table", "beyond_table", "timing_table", "ablation_table",
                 "sweep_table", "deblur_table"):
        assert (out / f"{name}.csv").is_file()
    for fig in ("ablation.png", "heat_sweep.png", "heat_recovery.png"):
        assert (out / fig).stat().st_size > 1000
    pub = report.public(results)
    assert set(pub["ablation"]["variants"]) == {"+JCP", "-JCP"}
    assert "_iters" not in pub["sweep"]["steps"]["100"]["pg"]
    assert pub["deblur2d"] == {"x_rmse": 0.1}
    assert pub["heat1d"]["beyond"]["simulator"]["signal_dims"] == 5
    readme = tmp_path / "README.md"
    readme.write_text("# x\n<!-- results:start -->\nold\n<!-- results:end -->\ntail\n")
    report.update_readme(results, out, readme)
    text = readme.read_text()
    assert "old" not in text and text.endswith("tail\n")
    for piece in ("JCP ablation", "Difficulty sweep", "**2D**", "tabulated", "heat_sweep.png"):
        assert piece in text
