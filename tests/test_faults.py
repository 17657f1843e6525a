"""Issue 19: faults. kill -9 during `reproduce`'s write phase, and strict JSON everywhere.

The Deceptron reproduction takes minutes even with --quick, so the kill test runs the
real dispatcher (:func:`invphys.experiments.papers.reproduce`) and the real report
writer on a fake paper registered in a subprocess, whose run is instant and whose
write phase (tables, a dozen figure files written slowly, results.json, figures.json)
is the whole run: every random kill lands in the write phase.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from problem_table import tiny_heat_spec

from invphys._io import load_json_strict
from invphys.cli import main

DRIVER = textwrap.dedent('''
    import json, os, random, signal, sys, time, types
    from pathlib import Path
    from invphys.experiments import papers, report as R

    out, trials, mode = Path(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
    if mode == "rename":               # a system without renameat2(RENAME_EXCHANGE)
        R._exchange = lambda a, b: False
    TAG = {"run": 0}

    def draw(folder):
        names = []
        for i in range(12):
            (folder / f"fig{i}.png").write_text(f"run {TAG['run']}")
            names.append(f"fig{i}.png")
            time.sleep(0.004)
        return names

    def run(ctx):
        t = str(TAG["run"])
        return R.Report(tables={"main": [["run"], [t]], "side": [["run"], [t]]},
                        public={"run": TAG["run"]}, figures={"run": TAG["run"]}, draw=draw,
                        wall_s=1.0)

    mod = types.ModuleType("fakepaper")
    mod.PAPER = papers.Paper("fake", "a fake paper", run, needs_models=False)
    sys.modules["fakepaper"] = mod
    papers.PAPERS["fake"] = "fakepaper"

    def state():
        """The run the folder holds, or 'MIX'/'INCOMPLETE'/'MISSING'."""
        if not out.exists():
            return "MISSING"
        try:
            m = R.check_run(out)
        except Exception as e:
            return f"INCOMPLETE {e}"
        tags = {(out / f).read_text().strip().splitlines()[-1].split()[-1].strip('"}')
                for f in m["files"] if f.endswith((".png", ".csv"))}
        tags.add(str(json.loads((out / "results.json").read_text())["run"]))
        tags.add(str(json.loads((out / "figures.json").read_text())["run"]))
        if len(tags) != 1 or not (out / "models" / "keep.bin").is_file():
            return f"MIX {sorted(tags)}"
        return int(tags.pop())

    (out / "models").mkdir(parents=True)
    (out / "models" / "keep.bin").write_bytes(b"a trained model")
    papers.reproduce("fake", out, progress=False)
    t0 = time.perf_counter()
    TAG["run"] = -1
    papers.reproduce("fake", out, progress=False)
    span = time.perf_counter() - t0
    rng = random.Random(int(sys.argv[4]))
    seen, prev = [], state()
    for i in range(1, trials + 1):
        TAG["run"] = i
        pid = os.fork()
        if pid == 0:
            try:
                papers.reproduce("fake", out, progress=False)
            finally:
                os._exit(0)
        time.sleep(rng.uniform(0.0, 1.3 * span))
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        if mode == "rename":
            R.recover(out)
        now = state()
        seen.append({"prev": prev, "now": now, "new": i})
        prev = now if isinstance(now, int) else prev
    TAG["run"] = trials + 1          # a later complete write tidies what kills left
    papers.reproduce("fake", out, progress=False)
    final = state()
    leftovers = [p.name for p in out.parent.iterdir() if p.name.startswith(".")]
    print(json.dumps({"span": span, "seen": seen, "final": final, "leftovers": leftovers}))
''')


@pytest.mark.parametrize("mode", ["exchange", "rename"])
def test_kill_during_reproduce_write_leaves_one_complete_run(tmp_path, mode):
    out = tmp_path / "parent" / "out"
    proc = subprocess.run([sys.executable, "-c", DRIVER, str(out), "10", mode, "19"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    for s in result["seen"]:
        assert s["now"] in (s["prev"], s["new"]), (s, result)
    outcomes = [("old" if s["now"] == s["prev"] else "new") for s in result["seen"]]
    print(mode, outcomes, f"write phase {result['span']:.3f} s")
    assert result["final"] == 11 and result["leftovers"] == [], result




def _refuse(token: str):
    raise ValueError(f"non-strict JSON token {token}")


def _strict_everywhere(folder: Path) -> int:
    """Load every JSON and JSONL file under ``folder`` with a strict parser."""
    count = 0
    for path in sorted(folder.rglob("*.json")):
        load_json_strict(path)
        count += 1
    for path in sorted(folder.rglob("*.jsonl")):
        for line in path.read_text().splitlines():
            json.loads(line, parse_constant=_refuse)
        count += 1
    return count


def test_strict_json_after_simulate_solve_and_diverged_training(tmp_path, capsys):
    train = "[train]\nepochs = 2\nbatch_size = 32\n"
    (tmp_path / "tiny.toml").write_text(tiny_heat_spec(max_iter=3, train=train))
    spec = str(tmp_path / "tiny.toml")
    assert main(["simulate", spec, "--n", "2", "--out", str(tmp_path / "sim")]) == 0
    assert main(["solve", spec, "--obs", str(tmp_path / "sim" / "y_noisy.npy"),
                 "--out", str(tmp_path / "sol")]) == 0
    rep = load_json_strict(tmp_path / "sol" / "report.json")
    assert "converged" not in rep and len(rep["reached_eps"]) == 2
    assert rep["result"] == ["max_iterations"] * 2 and rep["nonfinite"] == [False, False]
    capsys.readouterr()
    # a float32 training with an absurd learning rate: epoch 1 finite, epoch 2 inf
    code = main(["train", spec, "--set", 'train.dtype="float32"', "--set", "train.lr=1e8",
                 "--quiet", "--out", str(tmp_path / "ck")])
    err = capsys.readouterr().err.strip()
    assert code == 1, err
    assert len(err.splitlines()) == 1 and "diverged" in err and "kept" in err, err
    assert not (tmp_path / "ck" / "card.json").exists()  # no checkpoint claims success
    assert _strict_everywhere(tmp_path) >= 3


def test_solve_report_nonfinite_is_null_with_reason(tmp_path):
    from invphys._io import save_json

    save_json(tmp_path / "r.json", {"final_rmse": [0.1, np.nan]})
    data = load_json_strict(tmp_path / "r.json")
    assert data["final_rmse"] == [0.1, None]
    assert data["nonfinite"]["fields"] == ["final_rmse[1]"]
