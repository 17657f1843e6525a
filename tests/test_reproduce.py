"""``invphys reproduce``'s building blocks at small sizes: the signal-subspace filter,
the tabulated linear simulator, the JCP ablation and the difficulty sweep; the paper
registry and dispatcher, the shared report writer, the model resolver and the timing
helper."""

import dataclasses
import json
import sys
import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from invphys import InputFileError, InvphysError, load_problem, make_dataset
from invphys._spec import load_spec
from invphys.experiments import papers, report
from invphys.experiments.deceptron import figures as F
from invphys.experiments.deceptron import tables as T
from invphys.experiments.deceptron.ablation import ablation, ablation_config
from invphys.experiments.deceptron.beyond import (
    SCALE_SYMMETRY,
    scale_orbit_into_box,
    signal_basis,
    tabulated_linear,
)
from invphys.experiments.deceptron.common import (
    ABLATION,
    Settings,
    load_problem_paper,
    solve_untimed,
)
from invphys.experiments.deceptron.paper_mode import (
    paper_methods,
    paper_setup,
    physical_setup,
)
from invphys.experiments.deceptron.run import to_report
from invphys.experiments.deceptron.sweep import difficulty_sweep
from invphys.experiments.models import ModelStore, resolve_models_dir
from invphys.experiments.timing import time_call
from invphys.learn import TrainConfig
from invphys.solve import DIPG, Rules, solve


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
    return {k: solve_untimed(ps.surrogate, ps.y, ps.x0, m, ps.rules)
            for k, m in paper_methods(ck, ps.surrogate, ("pg", "dipg", "gn")).items()}


@pytest.fixture(scope="module")
def shipped_heat(tmp_path_factory):
    """The protocol's Heat run with the shipped checkpoints (models/): loading, no training."""
    spec = load_spec("heat1d")
    dataset = make_dataset(load_problem_paper(spec))
    cfg = TrainConfig.from_spec(spec)
    out = tmp_path_factory.mktemp("rep")
    store = ModelStore(resolve_models_dir(), out)
    ck, how = store.deceptron(spec, dataset, cfg, "heat1d-linear")
    return spec, dataset, cfg, ck, how, store


@pytest.fixture(scope="module")
def tiny_heat(tmp_path_factory):
    """A small Heat run that trains: 200 samples, 2 epochs, the main table's 40 problems."""
    spec = load_spec("heat1d").replace({
        "data.n_train": 200, "data.n_val": 40, "data.n_test": 40, "train.epochs": 2,
        "solve.max_iter": 20})
    dataset = make_dataset(load_problem_paper(spec))
    cfg = TrainConfig.from_spec(spec)
    out = tmp_path_factory.mktemp("tiny")
    store = ModelStore(resolve_models_dir(), out)
    ck, how = store.deceptron(spec, dataset, cfg, "tiny-linear")
    assert how.startswith("trained")
    return spec, dataset, cfg, ck, how, store


def _check_ablation(run, labels, name):
    spec, dataset, cfg, ck, _, store = run
    out = store.out
    settings = dataclasses.replace(Settings(), ablation=labels)
    rows = ablation(spec, dataset, cfg, ck, store, settings, log=lambda m: None, name=name)
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
    table = T.ablation_table(rows)
    assert len(table) == len(labels) + 1 and len({len(r) for r in table}) == 1
    assert table[1][-1] == "2.6 / 0.007 / 0.62 / 0.043"  # the paper's +JCP row
    assert F._ablation_figure(rows, out) == "ablation.png"
    assert (out / "ablation.png").stat().st_size > 1000
    return rows


def _check_sweep(run, name):
    spec, dataset, cfg, ck, _, store = run
    paper = _paper_run(spec, dataset, ck)
    settings = dataclasses.replace(Settings(), sweep_steps=(100, 200))
    rows = difficulty_sweep(spec, {"paper": paper, "ck": ck, "cfg": cfg}, settings, store,
                            log=lambda m: None)
    assert list(rows) == ["100", "200"]
    assert rows["200"]["source"] == "the paper model"  # T = 200 reuses the main run
    assert rows["200"]["pg"]["iterations_mean"] == paper["pg"]["iterations_mean"]
    for r in rows.values():
        assert r["ratio_pg_dipg"] == pytest.approx(
            r["pg"]["iterations_mean"] / r["dipg"]["iterations_mean"])
        assert all(0 <= r[m]["success"] <= 1 for m in ("pg", "dipg", "gn"))
    table = T.sweep_table(rows)
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
    out = tiny_heat[-1].out
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


# ------------------------------------------------ oscillator: symmetry and residual units
OSC_LOWER = jnp.asarray([0.5, 0.0, 0.5, -2.0, -2.0])
OSC_UPPER = jnp.asarray([2.0, 1.0, 5.0, 2.0, 2.0])


def test_oscillator_scale_symmetry_leaves_the_trajectory_unchanged():
    """m x'' + c x' + k x = 0 is one equation for lam (m, c, k): the paper-fidelity RK4
    evaluates the same vector field, so x(t) agrees to rounding."""
    problem = load_problem_paper(load_spec("oscillator"))
    assert SCALE_SYMMETRY["oscillator"] == (0, 1, 2)
    x = jnp.asarray([[1.2, 0.3, 2.0, 1.0, -0.5], [0.7, 0.9, 4.1, -1.5, 1.9]])
    for lam in (0.4, 1.0, 2.5):
        moved = x.at[:, :3].multiply(lam)
        diff = np.asarray(jax.vmap(problem.fn)(moved) - jax.vmap(problem.fn)(x))
        assert np.max(np.abs(diff)) < 1e-13


def test_scale_orbit_into_box_moves_only_along_the_orbit():
    move = jax.jit(scale_orbit_into_box((0, 1, 2), OSC_LOWER, OSC_UPPER))
    inside = jnp.asarray([1.2, 0.3, 2.0, 1.0, -0.5])
    assert np.array_equal(move(inside), inside)  # lam = 1 when already in the box
    # m = 2.5 > 2: the lam closest to 1 is 2 / 2.5, which puts m on its bound
    x = jnp.asarray([2.5, 0.5, 3.0, 0.3, -0.2])
    y = move(x)
    assert np.allclose(y, jnp.asarray([2.0, 0.4, 2.4, 0.3, -0.2]), rtol=1e-15)
    # c = 1.4 > 1 and k = 0.6 near its lower bound: no lam fits (lam <= 1/1.4 but
    # lam >= 0.5/0.6), x is left to the projection
    x = jnp.asarray([1.0, 1.4, 0.6, 0.0, 0.0])
    assert np.array_equal(move(x), x)
    x = jnp.asarray([1.0, -0.1, 2.0, 0.0, 0.0])  # c < 0: no lam > 0 helps
    assert np.array_equal(move(x), x)
    x = jnp.asarray([3.0, 0.0, 6.0, 0.0, 0.0])  # c = 0 fits every lam
    assert np.allclose(move(x), jnp.asarray([2.0, 0.0, 4.0, 0.0, 0.0]), rtol=1e-15)


@pytest.fixture(scope="module")
def shipped_oscillator(tmp_path_factory):
    spec = load_spec("oscillator")
    problem = load_problem_paper(spec)
    dataset = make_dataset(problem)
    store = ModelStore(resolve_models_dir(), tmp_path_factory.mktemp("osc"))
    ck_lin, how = store.deceptron(spec, dataset, TrainConfig(), "oscillator-linear")
    assert how == "loaded models/oscillator-linear"
    ck_mlp, how = store.deceptron(spec, dataset, TrainConfig.from_spec(spec), "oscillator-mlp")
    assert how == "loaded models/oscillator-mlp"
    return spec, problem, dataset, ck_lin, ck_mlp


def test_physical_units_setup_rescales_the_residual(shipped_oscillator):
    """The physical-units variant is the same surrogate and problems: per component, its
    residual is the z-space residual times the normaliser's scale."""
    spec, _, dataset, ck, _ = shipped_oscillator
    ps = paper_setup(spec, dataset, ck)
    ph, g_phys = physical_setup(ps, ck, dataset)
    assert np.array_equal(ph.index, ps.index) and np.array_equal(ph.x0, ps.x0)
    x = ps.x0 + 0.1
    r_z = np.asarray(jax.vmap(ps.surrogate.fn)(jnp.broadcast_to(x, (40, 5))) - ps.y)
    r_ph = np.asarray(jax.vmap(ph.surrogate.fn)(jnp.broadcast_to(x, (40, 5))) - ph.y)
    assert np.allclose(r_ph, r_z * np.asarray(ck.normaliser.scale), atol=1e-6)
    y = ph.surrogate.fn(x)
    assert np.allclose(g_phys(y), ck.model.g(ps.surrogate.fn(x)), atol=1e-6)


def test_dipg_orbit_move_on_the_oscillator(shipped_oscillator):
    """Where g(y*) lies outside the box but its orbit meets it, the orbit move keeps F and
    the projection does not; D-IPG with the move meets eps 0.05 on every such problem of
    the first 40 and on at least as many problems overall as without it."""
    _, problem, dataset, _, ck = shipped_oscillator
    norm, model = ck.normaliser, ck.model
    target = problem.with_forward(lambda x: norm.transform(problem.fn(x)))
    y = norm.transform(dataset.y_test[:40])
    g = jax.vmap(model.g)(y)
    move = scale_orbit_into_box((0, 1, 2), problem.lower, problem.upper)
    moved = jax.vmap(move)(g)
    out = ~np.asarray(problem.is_feasible(g))
    fixable = out & np.asarray(problem.is_feasible(moved))
    assert fixable.any()
    F = jax.vmap(target.fn)
    assert np.allclose(F(moved)[fixable], F(g)[fixable], atol=1e-10)
    plain = problem.project(g)
    assert np.all(np.max(np.abs(F(plain) - F(g)), axis=1)[fixable] > 1e-3)
    rules = Rules(eps=0.05, max_iter=50, stop_at_eps=True)
    with_move = solve(target, y, moved, rules=rules,
                      method=DIPG(inverse=model.g, form="local", symmetry=move))
    without = solve(target, y, plain, rules=rules, method=DIPG(inverse=model.g, form="local"))
    ok_with = np.asarray(with_move.converged)
    assert ok_with[fixable].all()
    assert ok_with.sum() >= np.asarray(without.converged).sum()


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
    osc_beyond = _fake_block(("pg", "dipg", "gn", "lm", "dipg@g", "gn@g", "lm@g",
                              "dipg-nosym@g"), rng)
    osc_beyond |= {"_g_direct": {"x_rel_err_median": 0.1, "success": 0.9}, "_criterion": "eps",
                   "_simulator": {"fidelity": "paper", "tabulated": False,
                                  "symmetry": [0, 1, 2], "g_outside_box": 0.125,
                                  "g_outside_box_moved_in": 0.1}}
    osc_paper = _fake_block(("pg", "dipg", "gn", "lm"), rng)
    osc_physical = _fake_block(("pg", "dipg", "gn", "lm"), rng)
    for block in (osc_paper, osc_physical):
        for r in block.values():
            r["within_eps_at_start"] = 0.1
    results = {
        "settings": dataclasses.asdict(Settings.make(quick=True)), "device": "cpu",
        "wall_s": 1.0, "heat1d": {"paper": paper, "beyond": beyond},
        "oscillator": {"paper": osc_paper, "paper-physical": osc_physical,
                       "beyond": osc_beyond},
        "models": {"heat1d": {"paper": model, "beyond": model, "_paper_log": log},
                   "oscillator": {"paper": model, "beyond": model, "_paper_log": log}},
        "ablation": abl, "sweep": sweep,
        "extra": {"deblur2d": {"tables": {"deblur_table": [["a", "b"], ["1", "2"]]},
                               "public": {"x_rmse": 0.1}, "readme": "**2D**",
                               "files": {"deblur2d/recon.png": str(tmp_path / "w.png")}}},
    }
    (tmp_path / "w.png").write_bytes(b"section output")
    out = tmp_path / "docs"
    out.mkdir()
    rep = to_report(results)
    report.write(rep, out)
    # a section's files are published with the run (staged, in the manifest)
    assert (out / "deblur2d" / "recon.png").read_bytes() == b"section output"
    assert "deblur2d/recon.png" in json.loads((out / "manifest.json").read_text())["files"]
    report.check_run(out)
    for name in ("main_table", "beyond_table", "timing_table", "ablation_table",
                 "sweep_table", "deblur_table"):
        assert (out / f"{name}.csv").is_file()
    for fig in ("ablation.png", "heat_sweep.png", "heat_recovery.png"):
        assert (out / fig).stat().st_size > 1000
    pub = T.public(results)
    assert json.loads((out / "results.json").read_text()) == json.loads(json.dumps(pub))
    assert set(pub["ablation"]["variants"]) == {"+JCP", "-JCP"}
    assert "_iters" not in pub["sweep"]["steps"]["100"]["pg"]
    assert pub["deblur2d"] == {"x_rmse": 0.1}
    assert pub["heat1d"]["beyond"]["simulator"]["signal_dims"] == 5
    assert pub["oscillator"]["paper-physical"]["pg"]["within_eps_at_start"] == 0.1
    main = rep.tables["main_table"]
    assert [r[0] for r in main[1:]].count("oscillator (physical units)") == 4
    assert {r[-1] for r in main[1:] if r[0].startswith("oscillator") and r[1] == "x-GD"} \
        == {"65 [1, 101.2], 0.50"}
    assert ["oscillator", "paper-physical"] in [r[:2] for r in rep.tables["timing_table"]]
    g_row = [r for r in rep.tables["beyond_table"] if r[:2] == ["oscillator",
                                                                "g(y*) alone (no solve)"]]
    assert g_row[0][2] == "0.900"
    readme = tmp_path / "README.md"
    readme.write_text("# x\n<!-- results:start -->\nold\n<!-- results:end -->\ntail\n")
    cmd = papers.command_line("deceptron", True, out, readme)
    report.update_readme(readme, {"deceptron": report.readme_section(rep, out, readme, cmd)},
                         "deceptron")
    text = readme.read_text()
    assert "old" not in text and text.endswith("tail\n")
    for piece in ("JCP ablation", "Difficulty sweep", "**2D**", "tabulated", "heat_sweep.png",
                  "in physical units", "g(y*) lies outside the box for 12.5% of the problems",
                  "Generated by `invphys reproduce --quick --out docs --readme README.md` on "
                  "cpu (1 s wall). Beyond-paper mode used 40 heat1d, 40 oscillator test"):
        assert piece in text


# ------------------------------------------------------- registry and dispatcher
def _toy_module(monkeypatch, name="toy", needs_models=False):
    """A paper module registered under ``name`` (what a new paper adds: a module with
    ``PAPER`` and one line in ``papers.PAPERS``)."""
    def run(ctx):
        (ctx.out / "curve.png").write_bytes(b"png")
        return report.Report(tables={"main_table": [["a", "b"], ["1", f"{np.nan}"]]},
                             public={"x": float("nan"), "n": np.int64(3)},
                             figures={"curve": np.arange(3)}, readme="**Toy**\n",
                             note="Toy note.", images=("curve.png", "missing.png"),
                             device="cpu", wall_s=2.0, quick=ctx.quick)

    mod = types.ModuleType(f"toy_paper_{name}")
    mod.PAPER = papers.Paper(name, "a toy paper", run, parts=("p1", "p2"),
                             needs_models=needs_models)
    monkeypatch.setitem(sys.modules, mod.__name__, mod)
    monkeypatch.setitem(papers.PAPERS, name, mod.__name__)
    return mod


def test_dispatcher_runs_a_registered_paper(monkeypatch, tmp_path):
    _toy_module(monkeypatch)
    readme = tmp_path / "README.md"
    readme.write_text("a\n<!-- results:toy:start -->\nold\n<!-- results:toy:end -->\nb\n")
    out = tmp_path / "res"
    reports = papers.reproduce("toy", out, quick=True, readme=readme, progress=False)
    assert list(reports) == ["toy"]
    assert (out / "main_table.csv").read_text().splitlines() == ["a,b", "1,nan"]
    assert "### main table" in (out / "tables.md").read_text()
    # strict JSON: NaN -> null, NumPy -> Python
    assert json.loads((out / "results.json").read_text()) == {"x": None, "n": 3}
    assert json.loads((out / "figures.json").read_text()) == {"curve": [0, 1, 2]}
    text = readme.read_text()
    assert text.startswith("a\n<!-- results:toy:start -->\nGenerated by `invphys reproduce "
                           "--paper toy --quick --out res --readme README.md` on cpu (2 s "
                           "wall). Toy note.\n\n**Toy**\n\n![curve](res/curve.png)\n")
    assert "missing" not in text and text.endswith("<!-- results:toy:end -->\nb\n")


def test_part_runs_name_their_parts_and_may_own_a_section(monkeypatch, tmp_path):
    _toy_module(monkeypatch)
    readme = tmp_path / "README.md"
    whole = "<!-- results:toy:start -->\nquick\n<!-- results:toy:end -->\n"
    readme.write_text(whole + "<!-- results:toy/p2:start -->\n<!-- results:toy/p2:end -->\n")
    papers.reproduce("toy", tmp_path / "res", parts=["p2"], readme=readme, progress=False)
    text = readme.read_text()
    assert text.startswith(whole)  # the whole paper's section untouched
    assert ("<!-- results:toy/p2:start -->\nGenerated by `invphys reproduce --paper toy "
            "--problems p2 --out res --readme README.md`") in text
    # no section for the subset: the paper's own, and its command names the parts
    readme.write_text(whole)
    papers.reproduce("toy", tmp_path / "res", parts=["p2", "p1"], readme=readme,
                     progress=False)  # every part: the plain command
    assert "--paper toy --out res" in readme.read_text()
    papers.reproduce("toy", tmp_path / "res", parts=["p1"], readme=readme, progress=False)
    assert "--paper toy --problems p1 --out res" in readme.read_text()


def test_dispatcher_all_and_errors(monkeypatch, tmp_path):
    _toy_module(monkeypatch)
    assert papers.names()[0] == papers.DEFAULT and "toy" in papers.names()
    with pytest.raises(InvphysError, match="unknown paper 'nope'"):
        papers.reproduce("nope", tmp_path)
    with pytest.raises(InvphysError, match="no part p3"):
        papers.reproduce("toy", tmp_path, parts=["p3"])
    readme = tmp_path / "README.md"
    readme.write_text("no markers\n")
    with pytest.raises(InputFileError, match="results:toy:start"):  # before anything runs
        papers.reproduce("toy", tmp_path / "o", readme=readme)
    assert not (tmp_path / "o").exists()
    # --paper all: each paper in OUT/NAME (here: only the toy, the others stubbed)
    monkeypatch.setattr(papers, "names", lambda: ["toy"])
    papers.reproduce(papers.ALL, tmp_path / "all", progress=False)
    assert (tmp_path / "all" / "toy" / "results.json").is_file()


def test_models_folder_is_explicit(monkeypatch, tmp_path):
    from invphys.experiments import models as M

    assert resolve_models_dir(tmp_path) == tmp_path.resolve()
    with pytest.raises(InputFileError, match="--models"):
        resolve_models_dir(tmp_path / "nope")
    # an installed wheel run outside a checkout: no default, one line naming --models
    monkeypatch.setattr(M, "_checkout_root", lambda: None)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(InputFileError, match="pass --models DIR") as e:
        resolve_models_dir()
    assert "\n" not in str(e.value)
    (tmp_path / "models").mkdir()
    assert resolve_models_dir() == (tmp_path / "models").resolve()  # run from a checkout


def test_cli_without_models_is_one_line_and_exit_2(monkeypatch, tmp_path, capsys):
    from invphys.cli import main
    from invphys.experiments import models as M

    monkeypatch.setattr(M, "_checkout_root", lambda: None)
    monkeypatch.chdir(tmp_path)
    assert main(["reproduce", "--quick", "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "--models" in err
    with pytest.raises(SystemExit):  # argparse: not a registered paper
        main(["reproduce", "--quick", "--paper", "nope"])


def test_get_or_train_prefers_shipped_then_out_then_trains(tmp_path):
    from invphys.experiments.models import get_or_train

    models, out = tmp_path / "models", tmp_path / "out"
    (models / "a").mkdir(parents=True)
    (out / "models" / "b").mkdir(parents=True)
    trained = []

    def load(folder):
        if not folder.is_dir():
            raise InputFileError(str(folder))
        return folder

    def train(folder):
        trained.append(folder)
        return folder

    assert get_or_train("a", load=load, train=train, models=models, out=out)[1] == \
        "loaded models/a"
    assert get_or_train("b", load=load, train=train, models=models, out=out)[0] == \
        out / "models" / "b"
    ck, how = get_or_train("c", load=load, train=train, models=models, out=out)
    assert trained == [out / "models" / "c"] and how.startswith("trained c (")


def test_time_call_compile_apart_best_of_k():
    import jax

    f = jax.jit(lambda x: (x @ x).sum())
    x = jnp.ones((64, 64))
    t = time_call(f, x, repeats=4)
    assert len(t.runs) == 4 and t.run_s == min(t.runs) <= t.median_s
    assert t.compile_s >= 0 and t.first_s >= t.run_s and float(t.output) == 64.0**3
    a = time_call(lambda x: x * 2, x, repeats=2, aot=True)
    assert a.compiled is not None and a.compile_s > 0 and len(a.runs) == 2
    once = time_call(a.compiled, x, repeats=3, warmup=False, budget_s=0.0)
    assert once.compile_s == 0 and len(once.runs) == 1 and once.first_s is None


def test_deblur_needs_x64_from_the_entry_point(monkeypatch):
    """The library never switches x64 on; without it the float64 baselines refuse."""
    import jax

    from invphys.experiments.deblur import require_x64

    require_x64(jnp.float64)  # the tests' entry point (conftest) switched it on
    monkeypatch.setattr(jax.config, "read", lambda name: False)
    with pytest.raises(InvphysError, match="jax_enable_x64"):
        require_x64(jnp.float64)
    require_x64(jnp.float32)
