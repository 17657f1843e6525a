"""The command line: help on every command, simulate end to end, one-line errors."""

import os
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import pytest

from invphys.cli import COMMANDS, build_parser, compile_cache_dir, main


def test_help_on_every_command(capsys):
    with pytest.raises(SystemExit) as e:
        main(["--help"])
    assert e.value.code == 0
    sub = build_parser()._subparsers._group_actions[0].choices
    for name in sub:
        assert name in COMMANDS
        with pytest.raises(SystemExit) as e:
            main([name, "--help"])
        assert e.value.code == 0
    assert "simulate" in capsys.readouterr().out


def test_simulate_writes_arrays_and_png(tmp_path):
    assert main(["simulate", "heat1d", "--n", "2", "--seed", "3", "--out", str(tmp_path)]) == 0
    x = np.load(tmp_path / "x.npy")
    yc, yn = np.load(tmp_path / "y_clean.npy"), np.load(tmp_path / "y_noisy.npy")
    assert x.shape == yc.shape == yn.shape == (2, 64)
    assert 0.005 < np.std(yn - yc) < 0.05  # noise std 0.02
    assert (tmp_path / "simulate.png").stat().st_size > 1000


def test_simulate_given_x(tmp_path):
    x = np.array([1.0, 0.2, 3.0, 1.0, 0.0])
    np.save(tmp_path / "theta.npy", x)
    assert main(["simulate", "oscillator", "--x", str(tmp_path / "theta.npy"),
                 "--out", str(tmp_path / "o")]) == 0
    assert np.load(tmp_path / "o" / "y_clean.npy").shape == (1, 64)


@pytest.mark.parametrize(
    "args,msg",
    [
        (["simulate", "nope", "--out", "{t}/o"], "unknown spec"),
        (["simulate", "heat1d", "--x", "{t}/missing.npy", "--out", "{t}/o"], "not found"),
        (["simulate", "heat1d", "--x", "{t}/bad.npy", "--out", "{t}/o"], "shape"),
        (["simulate", "heat1d", "--x", "{t}/nan.npy", "--out", "{t}/o"], "NaN"),
        (["simulate", "heat1d", "--x", "{t}/corrupt.npy", "--out", "{t}/o"], "not a readable"),
        (["simulate", "{t}/corrupt.toml", "--out", "{t}/o"], "TOML"),
    ],
)
def test_bad_input_one_line_nonzero_exit(tmp_path, capsys, args, msg):
    np.save(tmp_path / "bad.npy", np.zeros(5))
    np.save(tmp_path / "nan.npy", np.full(64, np.nan))
    (tmp_path / "corrupt.npy").write_bytes(b"\x93NUMPY garbage")
    (tmp_path / "corrupt.toml").write_text("problem = = 3")
    code = main([a.format(t=tmp_path) for a in args])
    err = capsys.readouterr().err.strip()
    assert code != 0
    assert msg in err and len(err.splitlines()) == 1, err


# ------------------------------------------------------------ invphys solve: D-IPG parity
MODEL_HEAT = "models/heat1d-linear"


@pytest.fixture(scope="module")
def heat_obs(tmp_path_factory):
    """4 noisy Heat-1D observations and their truth (seed 0, as the README's simulate)."""
    t = tmp_path_factory.mktemp("heat")
    assert main(["simulate", "heat1d", "--n", "4", "--out", str(t / "sim")]) == 0
    return t, np.load(t / "sim" / "x.npy")


def _rel(xh, x):
    return np.linalg.norm(xh - x, axis=1) / np.linalg.norm(x, axis=1)


def test_solve_heat_dipg_defaults_to_the_filtered_dipg(heat_obs, capsys):
    """The README results' D-IPG (whitened residual through the signal directions, stop
    at the discrepancy level) is the CLI's default on Heat-1D, and it improves on the
    zero start where the unfiltered one made x worse (relative error 1.6-2.9)."""
    import json
    from pathlib import Path

    t, x = heat_obs
    model = Path(__file__).resolve().parent.parent / MODEL_HEAT
    out = t / "dipg"
    assert main(["solve", "heat1d", "--obs", str(t / "sim" / "y_noisy.npy"), "--method",
                 "dipg", "--model", str(model), "--out", str(out)]) == 0
    said = capsys.readouterr().out
    assert "signal-filtered" in said and "identifiable from the data: a1" in said
    rep = json.loads((out / "report.json").read_text(),
                     parse_constant=lambda c: pytest.fail(f"non-strict JSON: {c}"))
    assert rep["residual"] == "whitened" and rep["filter"] == "signal"
    assert rep["start"] == "spec" and rep["eps"] == 1.1
    assert 3 <= rep["signal_dims"] <= 8  # ~5 of the 62 whitened outputs carry signal
    ident = rep["identifiable"]
    assert ident["modes"] == list(range(1, rep["signal_dims"] + 1))
    assert len(ident["values"]) == 4 and set(ident["values"][0]) == set(ident["names"])
    rel = _rel(np.load(out / "x.npy"), x)
    assert np.median(rel) < 1.0, rel  # the README table: median 0.85 over 40 problems
    assert np.sum(rel < 1.0) >= 3, rel
    # the recovered slow modes are the truth's (what the data hold)
    from invphys.commands.solve import sine_modes

    a_true = sine_modes(x, ident["modes"][:3])
    a_hat = np.array([[v[f"a{j}"] for j in ident["modes"][:3]] for v in ident["values"]])
    assert np.median(np.abs(a_hat - a_true)) < 0.1


def test_solve_residual_and_start_options(heat_obs):
    """--residual normalised keeps the paper's space (the spec's eps, no filter);
    --start g starts from the filtered inverse; bad combinations are one-line errors."""
    import json
    from pathlib import Path

    t, x = heat_obs
    model = str(Path(__file__).resolve().parent.parent / MODEL_HEAT)
    obs = str(t / "sim" / "y_noisy.npy")
    out = t / "raw"
    assert main(["solve", "heat1d", "--obs", obs, "--method", "dipg", "--model", model,
                 "--residual", "normalised", "--max-iter", "5", "--out", str(out)]) == 0
    rep = json.loads((out / "report.json").read_text())
    assert rep["residual"] == "normalised" and rep["filter"] is None
    assert rep["eps"] == 0.3 and rep["signal_dims"] >= 1  # still reported: heat has
    assert "modes" in rep["identifiable"]  # noise-only directions
    out = t / "g"
    assert main(["solve", "heat1d", "--obs", obs, "--method", "dipg", "--model", model,
                 "--start", "g", "--max-iter", "5", "--out", str(out)]) == 0
    rep = json.loads((out / "report.json").read_text())
    assert rep["start"] == "g" and rep["filter"] == "signal"
    assert np.median(_rel(np.load(out / "x.npy"), x)) < 1.0


@pytest.mark.parametrize("extra,msg", [
    (["--start", "g"], "--start g needs --model"),
    (["--start", "spec", "--x0", "{t}/x0.npy"], "either --x0 or --start"),
])
def test_solve_start_option_errors(tmp_path, capsys, extra, msg):
    np.save(tmp_path / "y.npy", np.zeros(64))
    np.save(tmp_path / "x0.npy", np.zeros(64))
    code = main(["solve", "heat1d", "--obs", str(tmp_path / "y.npy"), "--out",
                 str(tmp_path / "o")] + [a.format(t=tmp_path) for a in extra])
    err = capsys.readouterr().err.strip()
    assert code == 2 and msg in err and len(err.splitlines()) == 1, err


def _cli(tmp_path, *args, env_extra):
    env = {k: v for k, v in os.environ.items() if not k.startswith("INVPHYS_")}
    env.update(env_extra)
    return subprocess.run([sys.executable, "-m", "invphys.cli", *args], env=env,
                          capture_output=True, text=True, cwd=tmp_path, timeout=300)


def _entries(folder: Path) -> set[str]:
    return {p.name for p in folder.rglob("*") if p.is_file() and "lock" not in p.name}


def test_compile_cache_second_call_compiles_nothing(tmp_path):
    """The first solve fills the cache; the second finds every program there (no new
    entry appears: a key that changed between identical calls would add one)."""
    cache = tmp_path / "cache"
    env = {"INVPHYS_CACHE_DIR": str(cache)}
    y = np.random.default_rng(0).normal(0.0, 0.5, (1, 64))
    np.save(tmp_path / "y.npy", y)
    args = ("solve", "heat1d", "--obs", "y.npy", "--method", "gn", "--max-iter", "2")
    one = _cli(tmp_path, *args, "--out", "s1", env_extra=env)
    assert one.returncode == 0, one.stderr
    after_one = _entries(cache)
    assert after_one, "the solve wrote nothing to the compilation cache"
    two = _cli(tmp_path, *args, "--out", "s2", env_extra=env)
    assert two.returncode == 0, two.stderr
    assert _entries(cache) == after_one
    assert np.array_equal(np.load(tmp_path / "s1" / "x.npy"), np.load(tmp_path / "s2" / "x.npy"))


@pytest.mark.parametrize("how", ["on", "flag", "env"])
def test_compile_cache_switch(tmp_path, how):
    """The cache folder is set up at start-up unless the flag or the variable says no."""
    cache = tmp_path / "cache"
    env = {"INVPHYS_CACHE_DIR": str(cache)}
    args = ["--version"]
    if how == "flag":
        args.insert(0, "--no-compile-cache")
    elif how == "env":
        env["INVPHYS_NO_COMPILE_CACHE"] = "1"
    assert _cli(tmp_path, *args, env_extra=env).returncode == 0
    assert cache.exists() == (how == "on")


def test_compile_cache_dir_resolution(tmp_path):
    ver = f"jax-{jax.__version__}"
    assert compile_cache_dir({"INVPHYS_CACHE_DIR": str(tmp_path)}) == tmp_path / ver
    assert compile_cache_dir({"XDG_CACHE_HOME": str(tmp_path)}) == tmp_path / "invphys" / ver
    assert compile_cache_dir({"INVPHYS_NO_COMPILE_CACHE": "1"}) is None
    assert compile_cache_dir({"INVPHYS_NO_COMPILE_CACHE": "0", "INVPHYS_CACHE_DIR": "c"}) \
        == Path("c") / ver
