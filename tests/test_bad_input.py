"""Issue 19: a table of bad inputs, CLI and library.

Every CLI row: exit status 2, one line on stderr naming the argument, no traceback, no
output written; for ``--out`` rows no computation started (the work functions are
replaced by ones that fail the test). Every library row: the typed error, naming the
argument. All rows are fast: nothing here simulates or solves.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import jax.numpy as jnp
import numpy as np
import pytest
from problem_table import tiny_heat_spec

import invphys
from invphys._errors import InputFileError, NonFiniteError, ShapeError, SpecError
from invphys._io import OutputError, check_output_dir, load_json_strict, save_json
from invphys._problem import validate_solve_inputs
from invphys.cli import main

ROOT = os.geteuid() == 0 if hasattr(os, "geteuid") else False



@pytest.fixture
def t(tmp_path, monkeypatch):
    """The files the rows refer to, and work functions that fail if reached."""
    (tmp_path / "tiny.toml").write_text(tiny_heat_spec(s=0.45))
    (tmp_path / "unstable.toml").write_text(tiny_heat_spec(s=0.6))
    np.save(tmp_path / "y.npy", np.zeros((2, 12)))
    np.save(tmp_path / "empty.npy", np.zeros((0, 12)))
    np.save(tmp_path / "complex.npy", np.zeros((2, 12)) + 1j)
    np.save(tmp_path / "cube.npy", np.zeros((1, 2, 12)))
    np.save(tmp_path / "bool.npy", np.zeros((2, 12), bool))
    np.save(tmp_path / "x0_3.npy", np.zeros((3, 12)))
    np.savez(tmp_path / "arch.npz", a=np.zeros(12))
    (tmp_path / "afile").write_text("keep me")
    (tmp_path / "ro").mkdir()
    (tmp_path / "adir").mkdir()
    real_access = os.access

    def access(path, mode, *a, **k):  # a read-only folder, also when running as root
        if Path(path) == tmp_path / "ro" and mode & os.W_OK:
            return False
        return real_access(path, mode, *a, **k)

    monkeypatch.setattr(os, "access", access)

    def no_work(*a, **k):
        raise AssertionError("the computation started before the bad input was seen")

    import invphys.commands.reproduce  # noqa: F401
    import invphys.commands.simulate as sim
    import invphys.commands.solve as sol
    import invphys.commands.train as tr
    import invphys.experiments.papers as papers

    for mod, name in ((sim, "load_problem"), (sol, "solve"), (tr, "train_from_spec"),
                      (tr, "train_net_from_spec"), (papers, "reproduce")):
        monkeypatch.setattr(mod, name, no_work)
    return tmp_path


def cli(argv: list[str]) -> int:
    """``invphys ARGV`` in this process: its exit status (argparse exits, main returns)."""
    try:
        return main(argv)
    except SystemExit as e:
        return e.code


SOLVE = ["solve", "{t}/tiny.toml", "--obs", "{t}/y.npy"]
# (args, the argument the message must name, the output folder that must stay absent)
CLI_ROWS = {
    # --out problems, every command: seen before any work
    "solve-out-is-file": (SOLVE + ["--out", "{t}/afile"], "--out", None),
    "solve-out-below-file": (SOLVE + ["--out", "{t}/afile/sub"], "--out", None),
    "solve-out-read-only": (SOLVE + ["--out", "{t}/ro/new"], "--out", "{t}/ro/new"),
    "simulate-out-is-file": (["simulate", "{t}/tiny.toml", "--out", "{t}/afile"], "--out",
                             None),
    "simulate-out-below-file": (["simulate", "heat1d", "--out", "{t}/afile/x/y"], "--out",
                                None),
    "simulate-out-read-only": (["simulate", "heat1d", "--out", "{t}/ro"], "--out", None),
    "train-out-is-file": (["train", "{t}/tiny.toml", "--out", "{t}/afile"], "--out", None),
    "train-out-below-file": (["train", "{t}/tiny.toml", "--out", "{t}/afile/ck"], "--out",
                             None),
    "train-out-read-only": (["train", "{t}/tiny.toml", "--out", "{t}/ro/ck"], "--out",
                            "{t}/ro/ck"),
    "reproduce-out-is-file": (["reproduce", "--out", "{t}/afile"], "--out", None),
    "reproduce-out-below-file": (["reproduce", "--out", "{t}/afile/r"], "--out", None),
    "reproduce-out-read-only": (["reproduce", "--out", "{t}/ro/r"], "--out", "{t}/ro/r"),
    "reproduce-out-is-cwd": (["reproduce", "--out", "."], "--out", None),
    "reproduce-readme-missing": (["reproduce", "--out", "{t}/r", "--readme", "{t}/no.md"],
                                 "--readme", "{t}/r"),
    "reproduce-models-not-dir": (["reproduce", "--out", "{t}/r", "--models", "{t}/afile"],
                                 "--models", "{t}/r"),
    # input files
    "solve-obs-missing": (["solve", "{t}/tiny.toml", "--obs", "{t}/no.npy", "--out",
                           "{t}/o"], "--obs", "{t}/o"),
    "solve-obs-is-folder": (["solve", "{t}/tiny.toml", "--obs", "{t}/adir", "--out",
                             "{t}/o"], "--obs", "{t}/o"),
    "solve-x0-missing": (SOLVE + ["--x0", "{t}/no.npy", "--out", "{t}/o"], "--x0", "{t}/o"),
    "solve-model-missing": (SOLVE + ["--method", "dipg", "--model", "{t}/nomodel", "--out",
                                     "{t}/o"], "--model", "{t}/o"),
    "solve-dipg-without-model": (SOLVE + ["--method", "dipg", "--out", "{t}/o"], "--model",
                                 "{t}/o"),
    "simulate-x-missing": (["simulate", "heat1d", "--x", "{t}/no.npy", "--out", "{t}/o"],
                           "--x", "{t}/o"),
    # option values
    "solve-max-iter-0": (SOLVE + ["--max-iter", "0", "--out", "{t}/o"], "--max-iter",
                         "{t}/o"),
    "solve-max-iter-negative": (SOLVE + ["--max-iter", "-5", "--out", "{t}/o"], "--max-iter",
                                "{t}/o"),
    "solve-max-iter-not-int": (SOLVE + ["--max-iter", "x", "--out", "{t}/o"], "--max-iter",
                               "{t}/o"),
    "solve-eps-negative": (SOLVE + ["--eps", "-1", "--out", "{t}/o"], "--eps", "{t}/o"),
    "solve-eps-zero": (SOLVE + ["--eps", "0", "--out", "{t}/o"], "--eps", "{t}/o"),
    "solve-eps-nan": (SOLVE + ["--eps", "nan", "--out", "{t}/o"], "--eps", "{t}/o"),
    "solve-eps-inf": (SOLVE + ["--eps", "inf", "--out", "{t}/o"], "--eps", "{t}/o"),
    "simulate-n-0": (["simulate", "heat1d", "--n", "0", "--out", "{t}/o"], "--n", "{t}/o"),
    "train-epochs-0": (["train", "{t}/tiny.toml", "--epochs", "0", "--out", "{t}/o"],
                       "--epochs", "{t}/o"),
    "train-set-nan-lr": (["train", "{t}/tiny.toml", "--set", "train.lr=nan", "--out",
                          "{t}/o"], "train.lr", "{t}/o"),
    "train-resume-and-force": (["train", "{t}/tiny.toml", "--resume", "--force", "--out",
                                "{t}/o"], "--resume", "{t}/o"),
    "unknown-method": (SOLVE + ["--method", "newton", "--out", "{t}/o"], "--method",
                       "{t}/o"),
    "missing-required-out": (SOLVE, "--out", None),
}


@pytest.mark.parametrize("row", list(CLI_ROWS))
def test_cli_bad_input(t, capsys, row):
    args, names, absent = CLI_ROWS[row]
    code = cli([a.format(t=t) for a in args])
    err = capsys.readouterr().err.strip()
    assert code == 2, (code, err)
    assert len(err.splitlines()) == 1, err
    assert "Traceback" not in err and names in err and "error" in err, err
    if absent is not None:
        assert not Path(absent.format(t=t)).exists()
    assert (t / "afile").read_text() == "keep me"
    assert list((t / "ro").iterdir()) == []


# rows that reach the problem (they need the real load_problem but never solve)
INPUT_ROWS = {
    "obs-empty-batch": ("{t}/empty.npy", None, "empty", ShapeError),
    "obs-complex": ("{t}/complex.npy", None, "complex", ShapeError),
    "obs-3d": ("{t}/cube.npy", None, "shape", ShapeError),
    "obs-bool": ("{t}/bool.npy", None, "bool", ShapeError),
    "obs-npz": ("{t}/arch.npz", None, ".npz", InputFileError),
    "x0-batch-differs": ("{t}/y.npy", "{t}/x0_3.npy", "x0", ShapeError),
}


@pytest.mark.parametrize("row", list(INPUT_ROWS))
def test_cli_bad_arrays(t, capsys, monkeypatch, row):
    import invphys.commands.solve as sol
    from invphys.physics import load_problem

    monkeypatch.setattr(sol, "load_problem", load_problem)
    obs, x0, word, _ = INPUT_ROWS[row]
    args = ["solve", str(t / "tiny.toml"), "--obs", obs.format(t=t), "--out", str(t / "o")]
    if x0:
        args += ["--x0", x0.format(t=t)]
    code = main(args)
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and word in err, err
    assert not (t / "o").exists()


def test_cli_unstable_heat_spec(t, capsys, monkeypatch):
    import invphys.commands.simulate as sim
    from invphys.physics import load_problem

    monkeypatch.setattr(sim, "load_problem", load_problem)
    code = main(["simulate", str(t / "unstable.toml"), "--out", str(t / "o")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1, err
    assert "physics.s" in err and "0.5" in err and "unstable" in err
    assert not (t / "o").exists()


def test_unstable_heat_spec_is_a_spec_error(tmp_path):
    (tmp_path / "u.toml").write_text(tiny_heat_spec(s=0.51))
    with pytest.raises(SpecError, match=r"physics\.s.*<= 0\.5"):
        invphys.load_problem(str(tmp_path / "u.toml"))
    # the accurate fidelity integrates adaptively: s only sets T there
    invphys.load_problem(str(tmp_path / "u.toml"), {"physics.fidelity": "accurate"})


@pytest.mark.skipif(ROOT, reason="root reads and writes everything")
def test_cli_unreadable_obs_and_model(tmp_path, capsys):
    (tmp_path / "tiny.toml").write_text(tiny_heat_spec(s=0.45))
    np.save(tmp_path / "y.npy", np.zeros(12))
    (tmp_path / "y.npy").chmod(0)
    code = main(["solve", str(tmp_path / "tiny.toml"), "--obs", str(tmp_path / "y.npy"),
                 "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "--obs" in err and "unreadable" in err, err


# --------------------------------------------------------------------- library
A = np.arange(12.0).reshape(4, 3) / 10 + np.eye(4, 3)
PROB = invphys.Problem(lambda x: jnp.asarray(A) @ x, x_size=3)

LIB_ROWS = {
    "y-empty-batch": (dict(y_obs=np.zeros((0, 4))), ShapeError, "y_obs"),
    "y-complex": (dict(y_obs=np.zeros(4) + 1j), ShapeError, "y_obs"),
    "y-3d": (dict(y_obs=np.zeros((1, 2, 4))), ShapeError, "y_obs"),
    "y-wrong-length": (dict(y_obs=np.zeros(5)), ShapeError, "y_obs"),
    "y-scalar": (dict(y_obs=1.0), ShapeError, "y_obs"),
    "y-ragged-list": (dict(y_obs=[[1.0, 2.0], [1.0]]), ShapeError, "y_obs"),
    "y-strings": (dict(y_obs=np.array(["a"] * 4)), ShapeError, "y_obs"),
    "y-bool": (dict(y_obs=np.ones(4, bool)), ShapeError, "y_obs"),
    "y-nan": (dict(y_obs=np.array([0.0, np.nan, 0, 0])), NonFiniteError, "y_obs"),
    "x0-complex": (dict(y_obs=np.zeros(4), x0=np.zeros(3) + 0j), ShapeError, "x0"),
    "x0-wrong-length": (dict(y_obs=np.zeros(4), x0=[0.0, 0.0]), ShapeError, "x0"),
    "x0-batch-without-y-batch": (dict(y_obs=np.zeros(4), x0=np.zeros((2, 3))), ShapeError,
                                 "x0"),
    "x0-y-batches-differ": (dict(y_obs=np.zeros((2, 4)), x0=np.zeros((3, 3))), ShapeError,
                            "x0"),
    "x0-inf": (dict(y_obs=np.zeros(4), x0=[0.0, np.inf, 0.0]), NonFiniteError, "x0"),
    "inverse-wrong-shape": (dict(y_obs=np.zeros(4), inverse=lambda y: y), ShapeError,
                            "inverse"),
    "inverse-fails": (dict(y_obs=np.zeros(4), inverse=lambda y: y @ np.ones((5, 3))),
                      ShapeError, "inverse"),
}


@pytest.mark.parametrize("row", list(LIB_ROWS))
def test_library_validation(row):
    kw, err, name = LIB_ROWS[row]
    with pytest.raises(err, match=name) as e:
        validate_solve_inputs(PROB, **kw)
    assert len(str(e.value).splitlines()) == 1


@pytest.mark.parametrize("kw", [
    dict(y_obs=[1.0, 2.0, 3.0, 4.0], x0=[0, 0, 0]),           # Python lists, integers
    dict(y_obs=np.arange(4), x0=np.zeros(3, np.int32)),        # integer arrays
    dict(y_obs=jnp.zeros((2, 4)), x0=jnp.zeros(3)),           # JAX, one start broadcast
    dict(y_obs=np.zeros((2, 4), np.float32), x0=np.zeros((2, 3))),
], ids=["lists", "ints", "jax-broadcast", "float32-batch"])
def test_library_accepts_what_jax_users_pass(kw):
    y, x0 = validate_solve_inputs(PROB, **kw, inverse=lambda y: y[:3])
    assert np.issubdtype(np.asarray(y).dtype, np.floating)
    assert np.issubdtype(np.asarray(x0).dtype, np.floating)


@pytest.mark.parametrize("row", LIB_ROWS)
def test_public_solve_wrapper(row):
    kw, err, name = LIB_ROWS[row]
    kw = dict(kw)
    inverse = kw.pop("inverse", None)
    method = invphys.DIPG(inverse=inverse) if inverse is not None else "gn"
    with pytest.raises(err, match=name):
        invphys.solve(PROB, kw["y_obs"], kw.get("x0"), method=method,
                      rules=invphys.Rules(max_iter=1))


def test_public_solve_wrapper_accepts_lists():
    sol = invphys.solve(PROB, [1.0, 2.0, 3.0, 4.0], [0, 0, 0], rules=invphys.Rules(max_iter=2))
    assert np.all(np.isfinite(np.asarray(sol.x)))


def test_least_squares_complex_x0():
    with pytest.raises(ShapeError, match="x0"):
        invphys.least_squares(lambda x: jnp.asarray(A) @ x - 1.0, np.zeros(3) + 1j)


# ------------------------------------------------------------ output helpers
def test_check_output_dir_creates_nothing(tmp_path):
    assert check_output_dir(tmp_path / "a" / "b" / "c") == tmp_path / "a" / "b" / "c"
    assert list(tmp_path.iterdir()) == []
    (tmp_path / "f").write_text("")
    with pytest.raises(OutputError, match="--out .*is a file"):
        check_output_dir(tmp_path / "f" / "g")


def test_save_json_is_strict_and_says_why(tmp_path):
    save_json(tmp_path / "r.json", {"a": [1.0, float("nan")], "b": {"c": np.float32(np.inf)},
                                    "d": np.arange(2)})
    data = load_json_strict(tmp_path / "r.json")
    assert data["a"] == [1.0, None] and data["b"]["c"] is None and data["d"] == [0, 1]
    assert data["nonfinite"]["fields"] == ["a[1]", "b.c"] and data["nonfinite"]["reason"]
    with pytest.raises(TypeError, match="complex"):
        save_json(tmp_path / "c.json", {"x": 1j})
    assert not (tmp_path / "c.json").exists()
    json.loads((tmp_path / "r.json").read_text())
