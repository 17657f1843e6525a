"""The ddpinn report: tables, target verdicts, strict JSON and the README section,
assembled from stand-in studies (the studies themselves run in ``--quick``, and their
pieces are tested in test_pinn.py and test_ddpinn_heat.py)."""

import json

import numpy as np
import pytest

from invphys.experiments import papers
from invphys.experiments.ddpinn import studies


def _run(final, to_target):
    curve = {"iteration": [0, 10], "time_s": [0.0, 1.0], "metric": [1.0, final],
             "loss": [1.0, 0.1]}
    return {"final_error": final, "iterations": 10, "run_s": 1.0, "compile_s": 0.5,
            "iters_to_target": to_target, "seconds_to_target": None if to_target is None
            else 0.5, "curve": curve, "parameters": 97}


def _fake_studies(monkeypatch):
    monkeypatch.setattr(studies, "oscillator", lambda quick, overlap, log: {
        "overlap": overlap, "runs": {"FBPINN + GN": _run(9e-5, 150),
                                     "FBPINN + Adam": _run(5e-3, None)}})
    monkeypatch.setattr(studies, "poisson", lambda quick, log: {"runs": {
        "single network + GN (dense pinv)": _run(1e-7, 101),  # one too many: missed
        "single network + Adam": _run(3e-3, None)}})
    names = ["c/m", "k/m", "x0", "v0"]
    monkeypatch.setattr(studies, "inverse", lambda quick, log: {
        "names": names, "median_by_param_pinn": np.full(4, 0.01),
        "median_by_param_lm": np.full(4, 0.004), "median_rel_err_pinn": 0.01,
        "median_rel_err_lm": 0.004, "pinn_run_s": 2.0, "lm_run_s": 0.01,
        "ratio_err": 2.5, "ratio_time": 200.0})
    monkeypatch.setattr(studies, "heat_inverse", lambda quick, log: {
        "modes_identifiable": 4, "median_rel_err_ident_pinn": 0.11,
        "median_rel_err_ident_lm": 0.1, "median_rel_err_full_pinn": 0.9,
        "median_rel_err_full_lm": 1.8, "median_projection_full": 0.85,
        "n_obs": 64, "median_chi2_pinn": 57.0, "median_chi2_lm": 56.0,
        "pde_rms_off": np.array([0.005]), "pde_rms_col": np.array([0.001]),
        "instances": 2, "pinn_run_s": 10.0, "lm_run_s": 0.1, "pinn_compile_s": 1.0,
        "lm_compile_s": 1.0, "ratio_err_ident": 1.1, "ratio_err_full": 0.5,
        "ratio_time": 100.0})
    rows = [{"subdomains": j, "parameters": 97 * j, "banded": 1e-3 * j,
             "dense": 1e-4 * j**3 if j <= 16 else None, "banded_wall": 1e-3 * j,
             "dense_wall": 1e-4 * j**3 if j <= 16 else None} for j in (8, 16, 32)]
    monkeypatch.setattr(studies, "scaling", lambda quick, log: {
        "rows": rows, "exponent": {"banded": 1.0, "dense": 3.0, "banded_wall": 1.0,
                                   "dense_wall": 3.0}})


def test_report_verdicts_json_and_readme(monkeypatch, tmp_path):
    _fake_studies(monkeypatch)
    readme = tmp_path / "README.md"
    readme.write_text("<!-- results:ddpinn:start -->\n<!-- results:ddpinn:end -->\n")
    rep = papers.reproduce("ddpinn", tmp_path / "res", quick=True, readme=readme,
                           progress=False)["ddpinn"]
    status = {row[0].split(":")[0]: row[2] for row in rep.tables["targets"][1:]}
    assert status == {"FBPINN oscillator": "met",
                      "Poisson 2D single network + GN (dense pinv)": "missed",
                      "inverse": "missed", "heat-inverse": "reported", "scaling": "met"}
    assert rep.tables["inverse"][-1] == ["wall s (run; compile apart)", "2", "0.01"]
    assert rep.tables["scaling"][3][3] == "-"  # dense left out above its size cap
    json.loads((tmp_path / "res" / "results.json").read_text(),
               parse_constant=lambda c: pytest.fail(f"non-strict JSON: {c}"))
    text = readme.read_text()
    assert "--paper ddpinn --quick --out res" in text
    assert "oscillator subdomains 2.1 x the centre spacing wide" in text
    for png in ("oscillator_convergence.png", "poisson_convergence.png", "scaling.png"):
        assert f"(res/{png})" in text and (tmp_path / "res" / png).stat().st_size > 1000
