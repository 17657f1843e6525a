"""Deceptrons: ridge initialisation, losses, the JCP estimator, training, checkpoints."""

import dataclasses
import json
import math

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from problem_table import assert_identical, leaves

import invphys
from invphys import CheckpointError, Dataset, Normaliser
from invphys._spec import COMMON_SCHEMA
from invphys.learn import (
    Deceptron,
    LossWeights,
    MLPDeceptron,
    TrainConfig,
    composition_error,
    jcp_estimate,
    jcp_exact,
    jcp_from_probes,
    load_checkpoint,
    load_deceptron,
    loss_terms,
    total_loss,
    train_deceptron,
)
from invphys.learn._losses import as_probes

N_X = N_Y = 8  # as the tiny heat1d spec of the CLI test: one compiled epoch


def synthetic(n_train=512, n_eval=64, seed=0, noise=0.01) -> Dataset:
    """A small, mildly nonlinear forward map with Gaussian noise."""
    rng = np.random.default_rng(seed)
    A = rng.normal(size=(N_Y, N_X)) / math.sqrt(N_X)
    x = rng.normal(size=(n_train + 2 * n_eval, N_X))
    y_clean = x @ A.T + 0.2 * np.tanh(x @ A.T)
    y = y_clean + noise * rng.normal(size=y_clean.shape)
    a, b = n_train, n_train + n_eval
    j = jnp.asarray
    return Dataset(
        x_train=j(x[:a]), y_train=j(y[:a]), x_val=j(x[a:b]), y_val=j(y[a:b]),
        x_test=j(x[b:]), y_test=j(y[b:]), y_test_clean=j(y_clean[b:]),
        normaliser=Normaliser.fit(j(y[:a]), noise),
    )


SMALL = TrainConfig(epochs=6, batch_size=64, lr=2e-3, jcp_trigger=10.0)
SMALL_MLP = SMALL.replace(model="mlp", width=16, depth=1, lr=3e-3)


@pytest.fixture(scope="module")
def data():
    return synthetic()


@pytest.fixture(scope="module")
def linear_run(data, tmp_path_factory):
    out = tmp_path_factory.mktemp("linear")
    return train_deceptron(data, SMALL, out=out), out


# ------------------------------------------------------------------ config / spec
def test_train_config_defaults_match_spec_schema():
    schema = {k: v.default for k, v in COMMON_SCHEMA["train"].items()}
    fields = {f.name: f.default for f in dataclasses.fields(TrainConfig)}
    assert schema == fields


def test_bundled_specs_train_sections():
    heat = TrainConfig.from_spec(invphys.load_spec("heat1d"))
    assert heat == TrainConfig(jcp_trigger=0.07)  # the paper protocol, linear model
    assert heat.trigger == 0.07 and heat.start_epoch == 12 and heat.ramp_end_epoch == 48
    osc = TrainConfig.from_spec(invphys.load_spec("oscillator"))
    assert osc.model == "mlp" and osc.jcp


def test_jcp_trigger_and_schedule():
    from invphys.learn._train import jcp_gate, jcp_weight_at

    cfg = TrainConfig()
    assert not jcp_gate(cfg, 11, False, 0.01)  # too early
    assert not jcp_gate(cfg, 12, False, 0.08)  # above the trigger
    assert jcp_gate(cfg, 12, False, 0.06) and jcp_gate(cfg, 40, True, 5.0)  # sticky
    assert not jcp_gate(cfg.replace(jcp=False), 40, True, 0.0)

    w = lambda ep, on=True: float(jcp_weight_at(cfg, ep, on))
    assert w(30, on=False) == 0.0
    assert w(12) == pytest.approx(0.2e-3)
    assert w(30) == pytest.approx(1e-3 * (0.2 + 0.8 * 0.5))
    assert w(48) == pytest.approx(1e-3) and w(59) == pytest.approx(1e-3)
    assert TrainConfig(model="mlp").trigger == 0.6
    assert TrainConfig(activation="leaky_relu").trigger == 0.6


# ------------------------------------------------------------------ the modules
def test_ridge_init_equals_closed_forms():
    rng = np.random.default_rng(1)
    X, Z = rng.normal(size=(200, 5)), rng.normal(size=(200, 7))
    lam = 1e-2
    W = Z.T @ X @ np.linalg.inv(X.T @ X + lam * np.eye(5))
    V = np.linalg.inv(W.T @ W + lam * np.eye(5)) @ W.T
    d = Deceptron.ridge(X, Z, lam)
    np.testing.assert_allclose(d.W, W, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(d.V, V, rtol=1e-10, atol=1e-12)
    assert not np.any(d.b) and not np.any(d.c)
    tied = Deceptron.ridge(X, Z, lam, tie_v=True)
    assert tied.V is None and tied.tie_v
    np.testing.assert_array_equal(tied.inverse_matrix, tied.W.T)


@pytest.mark.parametrize("activation", ["identity", "leaky_relu"])
def test_inverse_activation_is_exact(activation):
    rng = np.random.default_rng(2)
    W = rng.normal(size=(4, 4))
    d = Deceptron(W, np.zeros(4), np.linalg.inv(W), np.zeros(4), activation=activation)
    x = jnp.asarray(rng.normal(size=4))
    u = d.W @ x
    # s~ inverts s exactly: g(f(x)) = s~(V s(Wx)) and, with V = I on s's output:
    ident = Deceptron(np.eye(4), np.zeros(4), np.eye(4), np.zeros(4), activation=activation)
    np.testing.assert_allclose(ident.g(ident.f(u)), u, rtol=0, atol=1e-15)
    assert d.f(x).shape == (4,) and d.g(d.f(x)).shape == (4,)


# ------------------------------------------------------------------ JCP estimator
def _estimates(model, x, kind, draws=3000, probes=2):
    """``draws`` independent JCP estimates (each: the batch x, ``probes`` probes each)."""
    if kind == "gaussian":  # the public estimator, with JAX keys
        keys = jax.random.split(jax.random.key(7), draws)
        est = jax.jit(jax.vmap(lambda k: jcp_estimate(model, x, k, probes, kind)))(keys)
    else:  # probes drawn by NumPy
        normal = np.random.default_rng(7).standard_normal((draws, *x.shape[:1], probes,
                                                           x.shape[1]))
        xi = as_probes(jnp.asarray(normal), kind)
        est = jax.jit(jax.vmap(lambda p: jcp_from_probes(model, x, p)))(xi)
    return np.asarray(est)


@pytest.mark.parametrize("kind", ["gaussian", "rademacher"])
def test_jcp_estimator_unbiased_mlp(kind):
    model = MLPDeceptron(N_X, N_Y, width=16, depth=1, key=jax.random.key(3))
    x = jnp.asarray(np.random.default_rng(4).normal(size=(4, N_X)))
    exact = float(eqx.filter_jit(jcp_exact)(model, x))
    est = _estimates(model, x, kind)
    se = est.std(ddof=1) / math.sqrt(est.size)
    assert exact > 0.1
    assert abs(est.mean() - exact) < 5 * se, (est.mean(), exact, se)


@pytest.mark.parametrize("activation", ["identity", "leaky_relu"])
def test_jcp_estimator_unbiased_linear(activation):
    rng = np.random.default_rng(5)
    d = Deceptron(rng.normal(size=(7, 4)), rng.normal(size=7), rng.normal(size=(4, 7)) / 3,
                  rng.normal(size=4), activation=activation)
    x = jnp.asarray(rng.normal(size=(8, 4)))
    exact = float(eqx.filter_jit(jcp_exact)(d, x))
    if activation == "identity":  # the estimand is ||VW - I||_F^2, whatever x
        np.testing.assert_allclose(exact, float(composition_error(d)) ** 2, rtol=1e-12)
    est = _estimates(d, x, "rademacher" if activation == "identity" else "gaussian")
    se = est.std(ddof=1) / math.sqrt(est.size)
    assert abs(est.mean() - exact) < 5 * se, (est.mean(), exact, se)


# ------------------------------------------------------------------ losses
def _exact_pair(n=5, tie=False):
    """Orthogonal W with V = W^T: an exact linear inverse pair with W^T W = I."""
    Q, _ = np.linalg.qr(np.random.default_rng(8).normal(size=(n, n)))
    return Deceptron(Q, np.zeros(n), None if tie else Q.T, np.zeros(n))


_loss_terms = eqx.filter_jit(loss_terms)


def _terms(model, x, z):
    xi = jnp.asarray(np.random.default_rng(0).standard_normal((x.shape[0], 2, x.shape[1])))
    return {k: float(v) for k, v in _loss_terms(model, x, z, xi).items()}


@pytest.mark.parametrize("tie", [False, True])
def test_every_loss_term_zero_for_exact_inverse_pair(tie):
    d = _exact_pair(tie=tie)
    x = jnp.asarray(np.random.default_rng(1).normal(size=(16, 5)))
    z = jax.vmap(d.f)(x)
    terms = _terms(d, x, z)
    assert all(abs(v) < 1e-25 for v in terms.values()), terms
    assert float(total_loss(_loss_terms(d, x, z), LossWeights(), 1e-3)) < 1e-25


def test_every_loss_term_positive_otherwise():
    d = _exact_pair()
    x = jnp.asarray(np.random.default_rng(1).normal(size=(16, 5)))
    z = jax.vmap(d.f)(x)
    noisy = z + 0.1 * np.random.default_rng(2).normal(size=z.shape)
    t = _terms(d, x, noisy)
    assert t["fit"] > 0 and t["cyc"] == pytest.approx(0, abs=1e-25) and t["sup"] > 0
    bad_v = eqx.tree_at(lambda m: m.V, d, d.V * 1.1)
    t = _terms(bad_v, x, z)
    assert min(t["rec"], t["cyc"], t["comp"], t["jcp"], t["sup"]) > 0
    scaled = Deceptron(2 * d.W, d.b, d.V / 2, d.c)  # still an exact pair, W^T W = 4 I
    t = _terms(scaled, x, jax.vmap(scaled.f)(x))
    assert t["spectral"] > 0 and t["comp"] < 1e-25 and t["jcp"] < 1e-25
    b = jnp.linspace(0.1, 0.5, 5)
    shifted = Deceptron(d.W, b, d.V, -d.V @ b)  # exact pair with b != -c
    t = _terms(shifted, x, jax.vmap(shifted.f)(x))
    assert t["bias"] > 0 and max(t["fit"], t["rec"], t["cyc"], t["jcp"]) < 1e-25
    # different sizes: mean(b^2) + mean(c^2)
    wide = Deceptron(np.ones((3, 2)), np.ones(3), np.zeros((2, 3)), 2 * np.ones(2))
    assert _terms(wide, x[:, :2], jnp.zeros((16, 3)))["bias"] == pytest.approx(1.0 + 4.0)


def test_mlp_deceptron(data):
    m = MLPDeceptron(N_X, N_Y, width=16, depth=1, key=jax.random.key(0),
                     x_mean=np.arange(N_X), x_scale=np.full(N_X, 2.0))
    assert (m.x_size, m.y_size) == (N_X, N_Y)
    x, z = data.x_train[:32], data.normaliser.transform(data.y_train[:32])
    assert m.f(x[0]).shape == (N_Y,) and m.g(z[0]).shape == (N_X,)
    t = _terms(m, x, z)
    assert t["spectral"] == t["bias"] == t["comp"] == 0.0  # no W or V in an MLP
    assert min(t["fit"], t["rec"], t["cyc"], t["jcp"]) > 0
    # the fixed x scaling gets no gradient
    grads = eqx.filter_grad(lambda mm: total_loss(loss_terms(mm, x, z), LossWeights(), 0.0))(m)
    assert not np.any(grads.x_mean) and not np.any(grads.x_scale)
    assert np.any(grads.f_net.layers[0].weight)


# ------------------------------------------------------------------ training
def test_training_lowers_loss_and_triggers_jcp(linear_run):
    ckpt, out = linear_run
    log = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert [h["epoch"] for h in log] == list(range(1, SMALL.epochs + 1))
    assert log[-1]["fit"] < log[0]["fit"] and log[-1]["loss"] < log[0]["loss"]
    # JCP switches on at round(0.2 * 6) = 1 (trigger 10 is always met), then ramps
    assert [h["jcp_on"] for h in log] == [False] + [True] * 5
    assert log[0]["w_jcp"] == 0.0 and log[-1]["w_jcp"] == pytest.approx(1e-3)
    assert all(math.isfinite(h["rjcp"]) for h in log)
    assert ckpt.metrics["jcp_on"] and ckpt.metrics["jcp_trigger_epoch"] == 1


def test_same_seed_bit_identical(data, linear_run):
    again = train_deceptron(data, SMALL)
    assert_identical(again.model, linear_run[0].model)
    # the seed drives the MLP initialisation (and every shuffle and probe)
    from invphys.learn._deceptron import init_model

    a, b = (init_model(SMALL_MLP.replace(seed=s), data.x_train, data.y_train) for s in (0, 1))
    assert not np.array_equal(leaves(a)[0], leaves(b)[0])


def test_mlp_training_resume_is_bit_identical(data, tmp_path):
    full = train_deceptron(data, SMALL_MLP)
    part = train_deceptron(data, SMALL_MLP, out=tmp_path, stop_after=2)
    assert not part.card["complete"] and not (tmp_path / "card.json").exists()
    with pytest.raises(CheckpointError, match="resume"):
        load_checkpoint(tmp_path)
    resumed = train_deceptron(data, SMALL_MLP, out=tmp_path, resume=True)
    assert_identical(resumed.model, full.model)
    log = [json.loads(line) for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    assert [h["epoch"] for h in log] == list(range(1, SMALL_MLP.epochs + 1))
    assert log[-1]["loss"] < log[0]["loss"] and log[-1]["fit"] < log[0]["fit"]
    assert_identical(load_deceptron(tmp_path), full.model)


def test_resume_refuses_other_config_and_existing_out(data, linear_run, tmp_path):
    _, out = linear_run
    with pytest.raises(CheckpointError, match="--resume"):
        train_deceptron(data, SMALL, out=out)
    with pytest.raises(CheckpointError, match="config differs.*lr"):
        train_deceptron(data, SMALL.replace(lr=1e-3), out=out, resume=True)
    with pytest.raises(CheckpointError, match="dataset digest"):
        train_deceptron(synthetic(seed=1), SMALL, out=out, resume=True)
    broken = _copy(out, tmp_path / "broken")
    raw = bytearray((broken / "state.eqx").read_bytes())
    raw[-3] ^= 0x01
    (broken / "state.eqx").write_bytes(bytes(raw))
    with pytest.raises(CheckpointError, match="corrupt"):
        train_deceptron(data, SMALL, out=broken, resume=True)
    finished = _copy(out, tmp_path / "finished")
    (finished / "state.eqx").unlink()
    with pytest.raises(CheckpointError, match="nothing to resume"):
        train_deceptron(data, SMALL, out=finished, resume=True)


# ------------------------------------------------------------------ checkpoints
def test_save_load_round_trip(linear_run, data):
    ckpt, out = linear_run
    loaded = load_checkpoint(out)
    assert_identical(loaded.model, ckpt.model)
    assert_identical(loaded.normaliser, data.normaliser)
    assert isinstance(load_deceptron(out / "card.json"), Deceptron)
    card = json.loads((out / "card.json").read_text())
    assert card["problem"] == "custom" and card["dataset"]["digest"] == data.digest()
    for key in ("val_mse", "rjcp", "vw_i_fro", "cond_w", "test_mse"):
        assert math.isfinite(card["metrics"][key])
    assert card["training_time_s"] > 0 and card["versions"]["jax"] == jax.__version__
    assert card["config"] == SMALL.to_dict()
    x = data.x_test[0]
    np.testing.assert_array_equal(loaded.model.f(x), ckpt.model.f(x))


def _copy(src, dst):
    import shutil

    shutil.copytree(src, dst)
    return dst


def test_bad_checkpoints_raise_checkpoint_error(linear_run, tmp_path):
    _, out = linear_run
    with pytest.raises(CheckpointError, match="not found"):
        load_deceptron(tmp_path / "nowhere")
    bad = _copy(out, tmp_path / "corrupt")
    raw = bytearray((bad / "model.eqx").read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    (bad / "model.eqx").write_bytes(bytes(raw))
    with pytest.raises(CheckpointError, match="corrupt"):
        load_deceptron(bad)
    trunc = _copy(out, tmp_path / "trunc")
    (trunc / "normaliser.npz").write_bytes(b"PK\x03\x04junk")
    with pytest.raises(CheckpointError, match="corrupt"):
        load_deceptron(trunc)
    card = _copy(out, tmp_path / "card")
    (card / "card.json").write_text("{not json")
    with pytest.raises(CheckpointError, match="JSON"):
        load_deceptron(card)
    dims = _copy(out, tmp_path / "dims")
    c = json.loads((dims / "card.json").read_text())
    c["model"]["x_size"] = N_X + 1
    (dims / "card.json").write_text(json.dumps(c))
    with pytest.raises(CheckpointError, match="does not match"):
        load_deceptron(dims)
    gone = _copy(out, tmp_path / "gone")
    (gone / "model.eqx").unlink()
    with pytest.raises(CheckpointError, match="missing model.eqx"):
        load_deceptron(gone)
    # every message is one line
    try:
        load_deceptron(bad)
    except CheckpointError as e:
        assert "\n" not in str(e)


def test_checkpoint_problem_mismatch(linear_run):
    _, out = linear_run
    heat = invphys.load_problem("heat1d")
    with pytest.raises(CheckpointError, match="size"):
        load_deceptron(out, heat)


# ------------------------------------------------------------------ CLI
def test_cli_train_help(capsys):
    from invphys.cli import build_parser

    with pytest.raises(SystemExit) as e:
        build_parser().parse_args(["train", "--help"])
    assert e.value.code == 0
    text = capsys.readouterr().out
    for flag in ("--model", "--epochs", "--no-jcp", "--tie-v", "--resume", "--out"):
        assert flag in text


def test_cli_flags_become_spec_overrides():
    from invphys.cli import build_parser
    from invphys.commands.train import build_spec

    args = build_parser().parse_args([
        "train", "heat1d", "--out", "x", "--model", "mlp", "--epochs", "7", "--no-jcp",
        "--tie-v", "--seed", "3", "--set", "train.lr=1e-3", "--set", "data.n_train=100",
        "--set", 'train.probe="rademacher"',
    ])
    spec = build_spec(args)
    t = spec["train"]
    assert (t["model"], t["epochs"], t["jcp"], t["tie_v"], t["seed"], t["lr"], t["probe"]) == (
        "mlp", 7, False, True, 3, 1e-3, "rademacher")
    assert spec["data"]["n_train"] == 100


# The tiny spec's [train] equals SMALL and its sizes equal the synthetic data's, so the
# CLI run reuses the compiled epoch of the tests above.
TINY_SPEC = f"""name = "heat1d-tiny"
problem = "heat1d"
[physics]
n = {N_X}
steps = 20
[prior]
n_modes = 3
[noise]
std = 0.02
[bounds]
lower = -3.0
upper = 3.0
pin = [0, {N_X - 1}]
[data]
n_train = 512
n_val = 64
n_test = 64
[train]
epochs = {SMALL.epochs}
batch_size = {SMALL.batch_size}
lr = {SMALL.lr}
jcp_trigger = {SMALL.jcp_trigger}
"""


def test_cli_tiny_train_writes_card(tmp_path, capsys):
    from invphys.cli import main

    spec = tmp_path / "tiny.toml"
    spec.write_text(TINY_SPEC)
    out = tmp_path / "model"
    args = ["train", str(spec), "--out", str(out), "--quiet"]
    assert main(args) == 0
    assert "trained Deceptron on heat1d-tiny" in capsys.readouterr().out
    card = json.loads((out / "card.json").read_text())
    assert card["problem"] == "heat1d-tiny" and card["physics"] == "heat1d"
    assert card["config"] == SMALL.to_dict() and card["spec"]["physics"]["n"] == N_X
    assert {"val_mse", "rjcp", "vw_i_fro", "vw_i_fro_free", "cond_w"} <= set(card["metrics"])
    assert card["metrics"]["jcp_on"] and card["training_time_s"] > 0
    # a second run without --resume refuses, with one line on stderr
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--resume" in err
    assert main([*args, "--resume"]) == 0  # already complete: rewrites the same checkpoint
    # load against problems
    tiny = invphys.load_spec(spec)
    assert load_deceptron(out, tiny).x_size == N_X
    with pytest.raises(CheckpointError, match="trained on 'heat1d'"):
        load_deceptron(out, "oscillator")
    with pytest.raises(CheckpointError, match="physics.steps"):
        load_deceptron(out, tiny.replace({"physics.steps": 10}))
    load_deceptron(out, tiny.replace({"physics.steps": 10}), strict=False)
    load_deceptron(out, tiny.replace({"physics.fidelity": "accurate"}))  # numerics only
    assert main(["train", str(spec), "--out", str(tmp_path / "x"), "--set", "train.nope=1"]) == 2


# ------------------------------------------------------------------ shipped models
MODELS = __import__("pathlib").Path(__file__).resolve().parents[1] / "models"


def _shipped(name):
    if not (MODELS / name / "card.json").is_file():
        pytest.skip(f"models/{name} not present")
    return load_checkpoint(MODELS / name, invphys.load_spec(name.split("-")[0]))


def test_shipped_heat_model_meets_paper_targets():
    ck = _shipped("heat1d-linear")
    m = ck.metrics
    assert isinstance(ck.model, Deceptron) and ck.card["problem"] == "heat1d"
    assert ck.config == TrainConfig.from_spec(invphys.load_spec("heat1d"))
    assert m["val_mse"] < 0.07 and m["jcp_on"] and m["jcp_trigger_epoch"] == 12
    assert m["vw_i_fro"] < 0.25 and 100 < m["cond_w"] < 1000 and m["rjcp"] < 0.1
    assert ck.card["training_time_s"] > 0


def test_shipped_oscillator_model_meets_targets():
    ck = _shipped("oscillator-mlp")
    m = ck.metrics
    assert isinstance(ck.model, MLPDeceptron) and ck.card["problem"] == "oscillator"
    assert m["val_mse"] <= 1e-3 and m["jcp_on"]
    assert max(m["g_median_rel_err"].values()) <= 0.03
    assert set(m["g_median_rel_err"]) == {"c/m", "k/m", "x0", "v0"}
    assert sum(p.stat().st_size for p in (MODELS / "oscillator-mlp").iterdir()) < 5e6


@pytest.mark.slow
def test_retraining_heat_reproduces_the_shipped_card(tmp_path):
    from invphys.learn import train_from_spec

    shipped = _shipped("heat1d-linear").metrics
    m = train_from_spec("heat1d", out=tmp_path / "heat").metrics
    for key in ("val_mse", "rjcp", "vw_i_fro", "cond_w"):
        assert m[key] == pytest.approx(shipped[key], rel=1e-6), key
