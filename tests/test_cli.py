"""The command line: help on every command, simulate end to end, one-line errors."""

import numpy as np
import pytest

from invphys.cli import COMMANDS, build_parser, main


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
