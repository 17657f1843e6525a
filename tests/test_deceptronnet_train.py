"""DeceptronNet v0: training, checkpoints, resume, the CLI, and the fairness protocol.

Everything runs on a 16 x 16 Deblur-2D (8 x 8 observations) with a tiny network, so
each test takes seconds; the shipped model and the full comparison are not run here.
"""

import json

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from problem_table import assert_identical

import invphys
from invphys import CheckpointError, SpecError
from invphys.cli import main
from invphys.experiments import deblur as D
from invphys.learn import (
    NetTrainConfig,
    deblur_data,
    load_deceptronnet,
    load_net_checkpoint,
    make_optimizer,
    train_deceptronnet,
)
from invphys.learn._train_net import DeceptronNetTask, init_net, predict
from invphys.learn._trainer import compiled
from invphys.learn.deceptronnet import deceptronnet_loss
from invphys.physics import deblur2d

TINY = {"physics.n": 16, "data.n_train": 16, "data.n_val": 4, "data.n_test": 4,
        "train.channels": 4, "train.steps": 2, "train.depth": 1, "train.epochs": 2,
        "train.batch_size": 8}


@pytest.fixture(scope="module")
def spec():
    return invphys.load_spec("deblur2d").replace(TINY)


@pytest.fixture(scope="module")
def data(spec):
    return deblur_data(spec)


@pytest.fixture(scope="module")
def op(spec):
    return deblur2d.nominal_operator(spec)


@pytest.fixture(scope="module")
def run(spec, data, op, tmp_path_factory):
    """One complete tiny training run written to a folder."""
    out = tmp_path_factory.mktemp("net")
    return train_deceptronnet(data, op, spec=spec, out=out), out


# ------------------------------------------------------------------ config / data
def test_config_defaults_match_spec_schema():
    import dataclasses

    schema = {k: v.default for k, v in deblur2d.SCHEMA["train"].items()}
    assert schema == {f.name: f.default for f in dataclasses.fields(NetTrainConfig)}
    cfg = NetTrainConfig.from_spec(invphys.load_spec("deblur2d"))
    assert cfg == NetTrainConfig()  # the bundled spec is the protocol
    assert cfg.net_kwargs == {"channels": 32, "steps": 6, "depth": 2}
    with pytest.raises(SpecError, match="unknown"):
        NetTrainConfig.from_dict({"model": "mlp"})


def test_data_is_seeded_and_under_the_true_kernel(spec, data):
    again = deblur_data(spec)
    assert data.digest() == again.digest()
    assert data.x_train.shape == (16, 256) and data.y_val.shape == (4, 64)
    lo, hi = spec["physics"]["sigma_range"]
    assert np.all((data.s_train >= lo) & (data.s_train <= hi))
    # y is A_true(x) plus noise of std 0.03 sqrt(y): standardised residuals ~ N(0, 1)
    op = deblur2d.build(spec).fn
    clean = np.asarray(jax.vmap(lambda x, s: deblur2d.true_forward(op, x, s))(
        data.x_train, data.s_train))
    z = (data.y_train - clean) / (0.03 * np.sqrt(clean))
    assert abs(z.std() - 1.0) < 0.1  # 4096 draws: the std's sampling error is ~0.011


# ------------------------------------------------------------------ training
def test_a_few_steps_lower_the_loss(spec, data, op):
    cfg = NetTrainConfig.from_spec(spec)
    optimizer = make_optimizer("adam", lr=cfg.lr)
    # the trainer's compiled steps, on one batch of 8 repeated 5 times
    steps_fn = compiled(DeceptronNetTask.from_config(cfg, op), optimizer)[2]
    model = init_net(cfg, op)
    opt_state = optimizer.init(eqx.filter(model, eqx.is_inexact_array))
    arrays = {k: jnp.asarray(getattr(data, k)[:8], jnp.float32)
              for k in ("x_train", "y_train", "s_train")}
    x, y, s = arrays["x_train"], arrays["y_train"], arrays["s_train"]
    loss = eqx.filter_jit(deceptronnet_loss)
    before = float(loss(model, x, y, s))
    idx = jnp.tile(jnp.arange(8)[None], (5, 1))
    model, opt_state, aux = steps_fn(model, opt_state, arrays, None, jnp.int32(0), idx, 0)
    after = float(loss(model, x, y, s))
    np.testing.assert_allclose(aux["loss"][0], before, rtol=1e-5)  # float32
    assert np.isfinite(after) and after < before


def test_output_in_unit_box_and_card(run, data):
    ck, out = run
    x_hat = predict(ck.model, data.y_test)
    assert x_hat.shape == data.x_test.shape and x_hat.dtype == np.float32
    assert x_hat.min() >= 0.0 and x_hat.max() <= 1.0
    card = json.loads((out / "card.json").read_text())
    assert card["format"] == "invphys-deceptronnet/1" and card["complete"]
    assert card["config"] == ck.config.to_dict() and card["epochs_completed"] == 2
    assert card["dataset"]["digest"] == data.digest() and card["dataset"]["n_train"] == 16
    for key in ("val_x_rmse", "test_x_rmse", "test_start_x_rmse"):
        assert 0.0 < card["metrics"][key] < 1.0
    assert card["training_time_s"] > 0 and card["machine"]["cpus"] >= 1
    assert card["versions"]["jax"] == jax.__version__
    log = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert [h["epoch"] for h in log] == [1, 2]


def test_checkpoint_round_trip(run, spec, data):
    ck, out = run
    loaded = load_net_checkpoint(out, spec)
    assert_identical(loaded.model, ck.model)
    assert loaded.model.operator == ck.model.operator
    np.testing.assert_array_equal(predict(loaded.model, data.y_val),
                                  predict(ck.model, data.y_val))
    assert_identical(load_deceptronnet(out / "card.json"), ck.model)


def test_resume_equals_uninterrupted(run, spec, data, op, tmp_path):
    ck, _ = run
    part = train_deceptronnet(data, op, spec=spec, out=tmp_path, stop_after=1)
    assert not part.card["complete"] and not (tmp_path / "card.json").exists()
    with pytest.raises(CheckpointError, match="not found"):
        load_net_checkpoint(tmp_path)
    with pytest.raises(CheckpointError, match="--resume"):
        train_deceptronnet(data, op, spec=spec, out=tmp_path)
    done = train_deceptronnet(data, op, spec=spec, out=tmp_path, resume=True)
    assert_identical(done.model, ck.model)
    assert done.card["metrics"]["test_x_rmse"] == ck.card["metrics"]["test_x_rmse"]
    assert [h["epoch"] for h in map(json.loads, (tmp_path / "log.jsonl").read_text()
                                    .splitlines())] == [1, 2]


def test_resume_refuses_other_config_or_data(spec, data, op, tmp_path):
    train_deceptronnet(data, op, spec=spec, out=tmp_path, stop_after=1)
    cfg = NetTrainConfig.from_spec(spec).replace(lr=1e-3)
    with pytest.raises(CheckpointError, match="config differs"):
        train_deceptronnet(data, op, cfg, spec=spec, out=tmp_path, resume=True)
    state = tmp_path / "state.eqx"
    raw = bytearray(state.read_bytes())
    raw[-5] ^= 0xFF
    state.write_bytes(bytes(raw))
    with pytest.raises(CheckpointError, match="corrupt"):
        train_deceptronnet(data, op, spec=spec, out=tmp_path, resume=True)


@pytest.mark.parametrize("damage", ["flip", "truncate", "missing", "card", "format"])
def test_corrupt_checkpoint_raises(run, tmp_path, damage):
    import shutil

    _, out = run
    for f in ("model.eqx", "card.json"):
        shutil.copy(out / f, tmp_path / f)
    weights, card = tmp_path / "model.eqx", tmp_path / "card.json"
    if damage == "flip":
        raw = bytearray(weights.read_bytes())
        raw[len(raw) // 2] ^= 0x01
        weights.write_bytes(bytes(raw))
    elif damage == "truncate":
        weights.write_bytes(weights.read_bytes()[:-8])
    elif damage == "missing":
        weights.unlink()
    elif damage == "card":
        card.write_text(card.read_text()[:50])
    else:
        c = json.loads(card.read_text())
        c["format"] = "invphys-deceptron/1"
        card.write_text(json.dumps(c))
    with pytest.raises(CheckpointError):
        load_net_checkpoint(tmp_path)


def test_mismatched_spec_raises(run, spec):
    _, out = run
    with pytest.raises(CheckpointError, match="physics.sigma_nominal"):
        load_net_checkpoint(out, spec.replace({"physics.sigma_nominal": 1.5}))
    with pytest.raises(CheckpointError, match="train.epochs"):
        load_net_checkpoint(out, spec.replace({"train.epochs": 3}))


# ------------------------------------------------------------------ CLI
def test_cli_train_deblur(tmp_path, capsys):
    args = ["train", "deblur2d", "--out", str(tmp_path), "--quiet", "--epochs", "1"]
    for k, v in TINY.items():
        if k != "train.epochs":
            args += ["--set", f"{k}={v}"]
    assert main(args) == 0
    assert "trained DeceptronNet" in capsys.readouterr().out
    ck = load_net_checkpoint(tmp_path)
    assert ck.card["epochs_completed"] == 1 and ck.config.channels == 4
    assert main(args) == 2  # the folder holds a run: refuse without --resume/--force
    assert "--resume" in capsys.readouterr().err
    assert main(args + ["--model", "mlp"]) == 2  # a Deceptron-only option
    assert "model" in capsys.readouterr().err


# ------------------------------------------------------------------ fairness protocol
@pytest.fixture(scope="module")
def bank(spec):
    """The baselines, compiled once for the module (4 images, 20 iterations)."""
    return D.SolverBank(deblur2d.build(spec), max_iter=20)


def test_fairness_protocol_stop_rule(spec, data, bank):
    """Both baselines stop at the first iteration whose residual is <= 0.3 x the start's
    (under the kernel they are given), or at the iteration cap; the numbers are finite."""
    problem = deblur2d.build(spec)
    ts = D.TestSet("test", data.x_test, data.s_test, data.y_test)
    for kernel in ("true", "nominal"):
        rows, sols = D.evaluate_baselines(bank, problem, ts, kernel=kernel)
        y = jnp.asarray(ts.y)
        sig = jnp.asarray(ts.sigma) if kernel == "true" else \
            jnp.full(len(ts.sigma), spec["physics"]["sigma_nominal"])
        r0 = D.residual_rmse(problem.fn, D.starts(y), y, sig)
        eps = 0.3 * r0
        for name, sol in sols.items():
            row = rows[name]
            assert all(np.isfinite(v) for v in row.values() if isinstance(v, float))
            steps = np.asarray(sol.steps)
            r = D.residual_rmse(problem.fn, sol.x, y, sig)
            # the solver's own residual is the one the rule is about (float64 rounding)
            np.testing.assert_allclose(np.asarray(sol.rmse), r, rtol=1e-10)
            hist = np.asarray(sol.history["rmse"])
            for i in range(len(steps)):
                k = steps[i]
                assert np.all(hist[i, :k] > eps[i])  # never met before it stopped
                assert k == 20 or r[i] <= eps[i]  # met the rule, or hit the cap
                assert bool(sol.converged[i]) == (r[i] <= eps[i])
            assert row["iterations_mean"] == pytest.approx(steps.mean())


def test_evaluate_set_rows(spec, data, run, bank):
    ck, _ = run
    problem = deblur2d.build(spec)
    # 8 images, the baselines on the first 4 (the shapes the bank compiled for)
    ts = D.TestSet("test", *(np.concatenate([a, a]) for a in (data.x_test, data.s_test,
                                                              data.y_test)))
    rows, recon = D.evaluate_set(bank, problem, ck.model, ts, n_baseline=4)
    assert set(rows) == {"start", "DeceptronNet", "DeceptronNet [first 4]", "x-GD", "LM",
                         "x-GD (nominal kernel)", "LM (nominal kernel)"}
    assert rows["DeceptronNet"]["n"] == 8 and rows["LM"]["n"] == 4
    assert rows["DeceptronNet [first 4]"]["x_rmse"] == pytest.approx(
        rows["DeceptronNet"]["x_rmse"], rel=1e-12)  # the same 4 images twice
    assert rows["start"]["residual_ratio"] == pytest.approx(1.0)
    assert rows["DeceptronNet"]["iterations_mean"] == 2
    for row in rows.values():
        assert np.isfinite(row["x_rmse"]) and np.isfinite(row["residual_rmse"])
    assert recon["LM"].shape == (4, 256) and recon["DeceptronNet"].shape == (8, 256)


@pytest.mark.slow
def test_reproduce_deblur_quick(tmp_path):
    res = D.reproduce_deblur(tmp_path, quick=True, progress=False)
    for f in ("deblur_table.md", "deblur_table.csv", "deblur_recovery.png"):
        assert (tmp_path / f).stat().st_size > 100
    assert set(res["sets"]) == {"test", "mismatch"}
    json.dumps(res)
