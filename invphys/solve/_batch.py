"""Batching, sharding and compaction: helpers on top of the traceable core.

* :func:`solve_batch`: one jitted, vmapped call of :func:`~invphys.solve.solve_core`
  (differentiable like it).
* :func:`shard_batch`: place the batch axis across devices (padded to a multiple of the
  device count); the same answers as the unsharded call.
* :func:`solve_compacted`: the loop in rounds; between rounds (a host sync) the members
  still running are gathered into smaller batches, so finished members stop costing
  compute. Works with sharding too (sub-batches are padded to a multiple of the devices).
"""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from ._core import Solution, finish, init, run
from ._implicit import solve_core

__all__ = ["shard_batch", "solve_batch", "solve_compacted", "solve_single"]


@eqx.filter_jit
def solve_single(problem, method, rules, y_obs, x0) -> Solution:
    return solve_core(problem.fn, y_obs, x0, cset=problem, method=method, rules=rules)


@eqx.filter_jit
def solve_batch(problem, method, rules, y_obs, x0) -> Solution:
    """The batch as one vmapped loop (every member runs until the slowest stops)."""
    one = lambda y, x: solve_core(problem.fn, y, x, cset=problem, method=method,  # noqa: E731
                                  rules=rules)
    return jax.vmap(one)(y_obs, x0)


@eqx.filter_jit
def _init_batch(problem, method, rules, y_obs, x0):
    return jax.vmap(lambda y, x: init(problem.fn, problem, method, rules, y, x))(y_obs, x0)


@eqx.filter_jit
def _run_batch(problem, method, rules, y_obs, carry, until):
    return jax.vmap(lambda y, c: run(problem.fn, problem, method, rules, y, c, until))(
        y_obs, carry)


@eqx.filter_jit
def _finish_batch(problem, y_obs, carry):
    return jax.vmap(lambda y, c: finish(problem.fn, problem, y, c))(y_obs, carry)


@jax.jit
def _gather(tree, idx):
    return jax.tree.map(lambda a: a[idx], tree)


@jax.jit
def _scatter(tree, idx, sub):
    """``tree[idx] = sub[:len(idx)]`` leaf by leaf (sub may be padded)."""
    return jax.tree.map(lambda a, b: a.at[idx].set(b[: idx.size]), tree, sub)


def sharding_for(shard) -> tuple[jax.sharding.Sharding, int]:
    """The batch-axis sharding (``True``: all devices) and its device count."""
    if isinstance(shard, jax.sharding.Sharding):
        return shard, len(shard.device_set)
    devices = np.array(jax.devices())
    return NamedSharding(Mesh(devices, ("batch",)), PartitionSpec("batch")), devices.size


def shard_batch(y_obs, x0, shard):
    """Place the batch axis across devices; pad the batch to a multiple of the count.
    Returns (y_obs, x0, pad)."""
    sharding, count = sharding_for(shard)
    pad = (-y_obs.shape[0]) % count
    if pad:
        y_obs = jnp.concatenate([y_obs, jnp.repeat(y_obs[-1:], pad, 0)])
        x0 = jnp.concatenate([x0, jnp.repeat(x0[-1:], pad, 0)])
    return jax.device_put(y_obs, sharding), jax.device_put(x0, sharding), pad


def solve_compacted(problem, method, rules, y_obs, x0, round_iters: int,
                    shard=False) -> Solution:
    """A batched solve that stops paying for finished members.

    The loop runs in rounds of ``round_iters`` iterations; between rounds the members
    still running are gathered into a smaller batch. Batch sizes are B, B/4, B/16, ...
    (at least 8, and multiples of the device count when sharded), so at most ~log4(B)
    shapes compile. Each member's iterations are the same as in the one-loop solve.
    """
    count, pad = 1, 0
    if shard:
        sharding, count = sharding_for(shard)
        y_obs, x0, pad = shard_batch(y_obs, x0, shard)
    place = (lambda t: jax.device_put(t, sharding)) if shard else (lambda t: t)  # noqa: E731
    carry = _init_batch(problem, method, rules, y_obs, x0)
    total = y_obs.shape[0]
    up = lambda s: -(-s // count) * count  # noqa: E731
    sizes = [total]
    while sizes[-1] > max(8, count):
        sizes.append(up(max(8, -(-sizes[-1] // 4))))
    until = 0
    while until < rules.max_iter:
        stop, it = jax.device_get((carry.stop, carry.it))
        running = np.flatnonzero(~stop & (it < rules.max_iter))
        if running.size == 0:
            break
        until = min(until + round_iters, rules.max_iter)
        size = min(s for s in sizes if s >= running.size)
        if size == total:
            # nothing to gather yet: the whole batch runs on (stopped members are held
            # by the loop's condition), without copying the carry out and back
            carry = _run_batch(problem, method, rules, y_obs, carry, jnp.asarray(until))
            continue
        take = np.concatenate([running, np.repeat(running[-1:], size - running.size)])
        sub = _run_batch(problem, method, rules, place(y_obs[take]),
                         place(_gather(carry, take)), jnp.asarray(until))
        carry = _scatter(carry, running, sub)
    sol = _finish_batch(problem, y_obs, carry)
    if pad:
        sol = jax.tree.map(lambda a: a[: a.shape[0] - pad], sol)
    return sol
