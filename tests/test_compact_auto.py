"""``invphys.solve(..., compact="auto")``, the default: batches of at least
COMPACT_AUTO_MIN members are compacted between rounds, smaller ones run as one loop,
and either way each member's answer is the one-loop answer."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import invphys
from invphys.solve import _protocol


def _linear_batch(count: int):
    k1, k2 = jax.random.split(jax.random.key(0))
    A = jax.random.normal(k1, (8, 4))
    p = invphys.Problem(forward=lambda x: A @ x, lower=-0.5 * jnp.ones(4),
                        upper=0.5 * jnp.ones(4))
    ys = jax.random.normal(k2, (count, 8))
    return p, ys


@pytest.mark.parametrize("count,expect", [(_protocol.COMPACT_AUTO_MIN, True),
                                          (_protocol.COMPACT_AUTO_MIN - 1, False)])
def test_auto_compacts_large_batches_only(monkeypatch, count, expect):
    p, ys = _linear_batch(count)
    rules = invphys.Rules(max_iter=12)
    calls = []
    real = _protocol.solve_compacted

    def spy(*args, **kwargs):
        calls.append(args[3].shape[0])
        return real(*args, **kwargs)

    monkeypatch.setattr(_protocol, "solve_compacted", spy)
    auto = invphys.solve(p, ys, jnp.zeros(4), method="lm", rules=rules)
    assert bool(calls) == expect
    one = invphys.solve(p, ys, jnp.zeros(4), method="lm", rules=rules, compact=False)
    assert len(calls) == int(expect)  # compact=False never compacts
    np.testing.assert_array_equal(np.asarray(auto.steps), np.asarray(one.steps))
    np.testing.assert_allclose(np.asarray(auto.x), np.asarray(one.x), rtol=0, atol=1e-12)


def test_auto_is_harmless_for_a_single_problem_and_rejects_other_strings():
    p, ys = _linear_batch(2)
    sol = invphys.solve(p, ys[0], jnp.zeros(4), method="lm")  # no batch: one solve
    assert sol.x.shape == (4,)
    with pytest.raises(ValueError, match="compact"):
        invphys.solve(p, ys, jnp.zeros(4), compact="always")
