"""The one training harness: the extra-args contract, optimizers plugged in by name,
divergence, the shared checkpoint store, and the config <-> schema single source."""

import dataclasses
import json
import math

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from invphys import CheckpointError, Dataset, NonFiniteError, Normaliser, SpecError
from invphys._configs import OPTIMIZER_NAMES, NetTrainConfig, TrainConfig
from invphys._spec import COMMON_SCHEMA
from invphys.learn import (
    DeceptronTask,
    fit,
    load_checkpoint,
    make_optimizer,
    matches,
    train_deceptron,
)
from invphys.learn._store import check_sections, load_state, save_state
from invphys.learn._train import task_data
from invphys.physics import deblur2d

N_X, N_Y = 6, 5


def synthetic(n_train=256, n_eval=32, seed=0, noise=0.01) -> Dataset:
    rng = np.random.default_rng(seed)
    A = rng.normal(size=(N_Y, N_X)) / math.sqrt(N_X)
    x = rng.normal(size=(n_train + 2 * n_eval, N_X))
    y = x @ A.T + noise * rng.normal(size=(x.shape[0], N_Y))
    a, b = n_train, n_train + n_eval
    j = jnp.asarray
    return Dataset(x_train=j(x[:a]), y_train=j(y[:a]), x_val=j(x[a:b]), y_val=j(y[a:b]),
                   x_test=j(x[b:]), y_test=j(y[b:]), y_test_clean=j(y[b:]),
                   normaliser=Normaliser.fit(j(y[:a]), noise))


CFG = TrainConfig(epochs=2, batch_size=64, lr=2e-3, jcp_trigger=10.0, jcp_start=0.0)


@pytest.fixture(scope="module")
def data():
    return synthetic()


def test_config_is_the_schema():
    """The [train] schema is derived from the config dataclasses: same keys and defaults."""
    for cfg_cls, schema in ((TrainConfig, COMMON_SCHEMA["train"]),
                            (NetTrainConfig, deblur2d.SCHEMA["train"])):
        fields = {f.name: f.default for f in dataclasses.fields(cfg_cls)}
        assert {k: v.default for k, v in schema.items()} == fields
    with pytest.raises(SpecError, match="train.optimizer must be one of"):
        TrainConfig(optimizer="lbfgs-typo")
    with pytest.raises(SpecError, match="train.epochs must be > 0"):
        TrainConfig(epochs=0)


class Spy(eqx.Module):
    """An optimizer that checks the loop's extra arguments and takes an SGD step."""

    lr: float

    def init(self, params):
        return jnp.zeros((), jnp.int32)

    def update(self, grads, state, params, *, model_fn, loss_fn, value, grad, value_fn, key):
        # model_fn then loss_fn is the loss the gradient was taken of
        v = loss_fn(model_fn(params))
        g = jax.grad(lambda p: loss_fn(model_fn(p)))(params)
        ok = jnp.abs(v - value) <= 1e-12 * jnp.abs(value)
        ok &= jnp.abs(value_fn(params) - value) <= 1e-12 * jnp.abs(value)
        err = jax.tree.map(lambda a, b: jnp.max(jnp.abs(a - b)), g, grads)
        ok &= jnp.max(jnp.stack(jax.tree_util.tree_leaves(err))) <= 1e-12
        ok &= jax.random.key_data(key).size > 0
        ok = eqx.error_if(ok, ~ok, "extra args disagree with value and grads")
        return jax.tree.map(lambda a: -self.lr * a * ok, grads), state + 1


def test_extra_args_contract(data):
    """Every step hands the optimizer model_fn / loss_fn whose composition is the loss
    the loop differentiated, value_fn, and a key; a custom optimizer needs no loop change."""
    spy = Spy(1e-2)
    opt = optax.GradientTransformationExtraArgs(spy.init, spy.update)
    ck = train_deceptron(data, CFG, optimizer=opt)
    assert ck.card["epochs_completed"] == CFG.epochs
    assert np.isfinite(ck.metrics["val_mse"])


# gn-layerwise and sgn are covered at small size in test_optim*; here with `make test-all`
@pytest.mark.parametrize("name", [
    pytest.param(n, marks=pytest.mark.slow) if n in ("gn-layerwise", "sgn") else n
    for n in OPTIMIZER_NAMES])
def test_every_named_optimizer_trains(data, name):
    """Each optimizer the spec can name runs in the same loop and lowers the loss."""
    cfg = CFG.replace(optimizer=name, epochs=3, model="mlp", width=16, depth=1, jcp=False,
                      lr=3e-2 if name == "sgd" else 3e-3)
    task = DeceptronTask(cfg=cfg, n_train=256, x_size=N_X, y_size=N_Y)
    arrays = task_data(data, jnp.float64)
    _, history = fit(task, arrays, make_optimizer(name, lr=cfg.lr, clip_norm=0.5),
                     epochs=cfg.epochs, config=cfg.to_dict(), digest="d")
    losses = [h["loss"] for h in history]
    assert all(np.isfinite(losses)) and losses[-1] < losses[0]


def test_optimizer_objects_are_cached():
    """The same settings give the same optimizer (so a rerun reuses the compiled epoch)."""
    assert make_optimizer("adam", lr=1e-3) is make_optimizer("adam", lr=1e-3)
    assert make_optimizer("adam", lr=1e-3) is not make_optimizer("adam", lr=2e-3)
    with pytest.raises(SpecError, match="unknown optimizer"):
        make_optimizer("adamw")


def test_divergence_is_a_clear_error_and_keeps_the_last_good_state(data, tmp_path):
    def bad_init(params):
        return optax.EmptyState()

    def bad_update(grads, state, params=None, **extra):
        return jax.tree.map(lambda g: g * jnp.nan, grads), state

    bad = optax.GradientTransformationExtraArgs(bad_init, bad_update)
    with pytest.raises(NonFiniteError, match="diverged in epoch 1"):
        train_deceptron(data, CFG, optimizer=bad, out=tmp_path)
    assert not (tmp_path / "state.eqx").exists()  # nothing half-good was saved


def test_store_state_round_trip_and_mismatch(tmp_path):
    state = {"epoch": jnp.int32(3), "elapsed_s": jnp.zeros(2, jnp.float32),
             "w": jnp.arange(4.0)}

    class S(eqx.Module):
        epoch: jax.Array
        elapsed_s: jax.Array
        w: jax.Array

    s = S(**state)
    save_state(tmp_path, s, [{"epoch": 3}], {"lr": 1.0}, "abc")
    like = lambda: S(jnp.int32(0), jnp.zeros(2, jnp.float32), jnp.zeros(4))  # noqa: E731
    loaded, history = load_state(tmp_path, like, {"lr": 1.0}, "abc")
    assert int(loaded.epoch) == 3 and history == [{"epoch": 3}]
    np.testing.assert_array_equal(loaded.w, s.w)
    with pytest.raises(CheckpointError, match=r"config differs \(lr\)"):
        load_state(tmp_path, like, {"lr": 2.0}, "abc")
    with pytest.raises(CheckpointError, match="different data"):
        load_state(tmp_path, like, {"lr": 1.0}, "xyz")
    with pytest.raises(CheckpointError, match=r"trained with train\.lr=1, the spec has 2"):
        check_sections("checkpoint c", {"train": {"lr": 2}}, {"train": {"lr": 1}}, ("train",))


def test_card_without_a_newer_field_still_matches(data, tmp_path):
    """A card written before ``optimizer`` existed reads as the default (adam)."""
    ck = train_deceptron(data, CFG, out=tmp_path)
    card = json.loads((tmp_path / "card.json").read_text())
    del card["config"]["optimizer"]
    (tmp_path / "card.json").write_text(json.dumps(card))
    loaded = load_checkpoint(tmp_path)
    assert matches(loaded, CFG, data.digest())
    assert not matches(loaded, CFG.replace(optimizer="gn"), data.digest())
    assert ck.config == loaded.config
