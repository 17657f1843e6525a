"""Spec validation, the Problem abstraction's errors, datasets and the normaliser."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import invphys
from invphys import BoundsError, NonFiniteError, ShapeError, SpecError
from invphys._spec import bundled_specs, load_spec

GOOD = """name = "t"
problem = "oscillator"
[noise]
std = 0.01
[bounds]
lower = [0.5, 0.0, 0.5, -2.0, -2.0]
upper = [2.0, 1.0, 5.0, 2.0, 2.0]
"""


@pytest.mark.parametrize("name", ["heat1d", "oscillator"])
def test_bundled_specs_load_by_name_and_path(name):
    s = load_spec(name)
    assert s.problem == name
    assert load_spec(bundled_specs()[name]).sections == s.sections


def test_good_spec_and_replace(tmp_path):
    p = tmp_path / "s.toml"
    p.write_text(GOOD)
    s = load_spec(p)
    assert s["noise"]["std"] == 0.01 and s["data"]["n_train"] == 5000
    s2 = s.replace({"physics.fidelity": "accurate"})
    assert s2["physics"]["fidelity"] == "accurate" and s["physics"]["fidelity"] == "paper"
    with pytest.raises(SpecError, match="physics.fidelity"):
        s.replace({"physics.fidelity": "bogus"})


BAD = [
    (GOOD.replace("std = 0.01", "std = 0.01\nfoo = 1"), "noise.foo"),  # unknown key
    (GOOD + "[physics]\nn_obs = 'many'\n", "physics.n_obs"),  # wrong type
    (GOOD.replace("std = 0.01", "std = -0.1"), "noise.std"),  # impossible value
    (GOOD.replace("lower = [0.5", "lower = [3.0"), "bounds.lower"),  # lower > upper
    (GOOD + "[data]\nn_train = 0\n", "data.n_train"),
    (GOOD + "[physics]\nfidelity = 'fast'\n", "physics.fidelity"),
    (GOOD + "[nonsense]\na = 1\n", "nonsense"),
    (GOOD.replace('problem = "oscillator"', 'problem = "wave"'), "problem"),
    (GOOD.replace("std = 0.01", "std = nan"), "noise.std"),
    ("this is = = not toml", "not valid TOML"),
]


@pytest.mark.parametrize("text,key", BAD)
def test_bad_spec_is_one_line_error_naming_the_key(tmp_path, text, key):
    p = tmp_path / "bad.toml"
    p.write_text(text)
    with pytest.raises(SpecError, match=key.replace(".", r"\.")) as e:
        load_spec(p)
    assert "\n" not in str(e.value)


def test_missing_spec_file():
    with pytest.raises(SpecError, match="not found"):
        load_spec("/nonexistent/dir/x.toml")
    with pytest.raises(SpecError, match="bundled"):
        load_spec("no_such_problem")


# ------------------------------------------------------------------ Problem
def test_problem_errors():
    p = invphys.load_problem("oscillator")
    with pytest.raises(ShapeError, match="shape"):
        p.forward(jnp.zeros(4))
    with pytest.raises(NonFiniteError):
        p.forward(jnp.array([1.0, 0.1, 1.0, jnp.nan, 0.0]))
    with pytest.raises(BoundsError, match="lower > upper"):
        invphys.Problem(lambda x: x, lower=jnp.array([0.0, 2.0]), upper=jnp.array([1.0, 1.0]))
    with pytest.raises(ShapeError):
        invphys.Problem(lambda x: x, lower=jnp.zeros(3), upper=jnp.ones(2))


def test_projection_is_idempotent_and_feasible():
    p = invphys.load_problem("heat1d")
    x = 5.0 * jax.random.normal(jax.random.key(0), (10, 64))
    px = p.project(x)
    assert bool(jnp.all(p.is_feasible(px)))
    np.testing.assert_array_equal(p.project(px), px)
    assert float(jnp.max(jnp.abs(px))) <= 3.0 and bool(jnp.all(px[:, [0, -1]] == 0))


def test_starts_follow_the_spec():
    np.testing.assert_array_equal(invphys.load_problem("heat1d").start(), np.zeros(64))
    np.testing.assert_allclose(invphys.load_problem("oscillator").start(),
                               [1.25, 0.5, 2.75, 0.0, 0.0])


def test_user_problem_same_concept():
    A = jnp.array([[2.0, 1.0], [0.0, 1.0], [1.0, 1.0]])
    p = invphys.Problem(forward=lambda x: A @ x, lower=-1.0, upper=1.0, x_size=2)
    assert p.y_shape() == (3,)
    np.testing.assert_allclose(p.project(jnp.array([3.0, -3.0])), [1.0, -1.0])


# --------------------------------------------------------------- datasets
def test_dataset_is_seeded_split_and_normalised():
    p = invphys.load_problem("heat1d")
    d1 = invphys.make_dataset(p, 0, n_train=300, n_val=20, n_test=10)
    d2 = invphys.make_dataset(p, 0, n_train=300, n_val=20, n_test=10)
    assert d1.x_train.shape == (300, 64) and d1.y_val.shape == (20, 64)
    assert d1.digest() == d2.digest()
    assert d1.digest() != invphys.make_dataset(p, 1, n_train=300, n_val=20, n_test=10).digest()
    z = d1.normaliser.transform(d1.y_train)
    np.testing.assert_allclose(jnp.mean(z, 0), 0.0, atol=1e-12)
    np.testing.assert_allclose(jnp.std(z, 0), 1.0, atol=1e-12)
    # pinned endpoints carry noise only: flagged as no-signal, interior as signal
    assert not bool(d1.normaliser.signal[0]) and not bool(d1.normaliser.signal[-1])
    assert bool(jnp.all(d1.normaliser.signal[5:-5]))


def test_normaliser_never_divides_by_zero():
    y = jnp.concatenate([jnp.zeros((50, 1)), jnp.arange(50.0)[:, None]], axis=1)
    n = invphys.Normaliser.fit(y)
    assert bool(jnp.all(jnp.isfinite(n.transform(y))))
    assert not bool(n.signal[0]) and bool(n.signal[1])
    np.testing.assert_allclose(n.inverse(n.transform(y)), y, rtol=1e-14, atol=1e-13)


# ------------------------------------------------------------ the physics registry
def test_registry_holds_the_simulators_and_validates_their_specs():
    from invphys.physics import REGISTRY, load_problem

    assert {"heat1d", "oscillator", "deblur2d"} <= set(REGISTRY)
    assert invphys.load_problem is load_problem
    with pytest.raises(SpecError, match="unknown problem 'nope'"):
        invphys._spec.spec_from_dict({"problem": "nope"})


def test_a_registered_problem_is_a_valid_spec(monkeypatch):
    from invphys import _spec
    from invphys.physics import REGISTRY, register

    for table in (REGISTRY, _spec._PROBLEM_SCHEMAS):  # undone after the test
        monkeypatch.setitem(table, "toy", None)
    schema = {"physics": {"n": _spec.Key(int, default=3, check=_spec.positive)}}
    register("toy", schema, lambda s: invphys.Problem(
        lambda x: 2 * x, x_size=s["physics"]["n"], name=s.name, spec=s))
    p = invphys.load_problem(_spec.spec_from_dict({"problem": "toy", "noise": {"std": 0.0}}),
                             {"physics.n": 4})
    assert p.x_size == 4 and p.identifiable is None
    with pytest.raises(SpecError, match="physics.n"):
        _spec.spec_from_dict({"problem": "toy", "noise": {"std": 0.0}, "physics": {"n": 0}})
