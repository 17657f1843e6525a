# %% [markdown]
# # Bring your own simulator
#
# Any jax-traceable map x -> y is a forward model. This tutorial wraps a diffrax ODE of
# its own, the Lotka-Volterra predator-prey system, as an `invphys.Problem` with box
# bounds, a prior and a noise model, and fits its four rate constants with projected
# gradient (PG), Gauss-Newton (GN) and Levenberg-Marquardt (LM) under the shared
# protocol: same start, same backtracking search, same stopping rule, same iteration
# budget. A learned inverse and D-IPG follow in
# [the next tutorial](surrogate_inverse.md).
#
# Run it: `python docs/tutorials/own_simulator.py [--small] [--out DIR]`.

# %%
import argparse
from pathlib import Path

import jax
import jax.numpy as jnp
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

jax.config.update("jax_enable_x64", True)
import invphys  # noqa: E402

parser = argparse.ArgumentParser()
parser.add_argument("--small", action="store_true", help="test sizes")
parser.add_argument("--out", type=Path, default=Path("out/tutorials/own_simulator"))
args, _ = parser.parse_known_args()
args.out.mkdir(parents=True, exist_ok=True)
count = 6 if args.small else 40

# %% [markdown]
# ## The simulator
#
# x = (alpha, beta, delta, gamma): prey growth, predation, predator growth per prey
# eaten, predator death. Prey and predators start at (1, 0.5) and are counted at 20
# times on [0, 10]; y stacks both series (40 numbers). The integrator here is a
# fixed-step RK4 in `lax.scan` (fast to compile, differentiable both ways). With
# `diffrax.diffeqsolve` instead, pass `adjoint=diffrax.DirectAdjoint()`: PG takes
# vector-Jacobian products and GN/LM Jacobian-vector products, and diffrax's default
# adjoint supports reverse mode only (`ForwardMode()` forward only). It works, at
# several times the compile time.

# %%
ts = jnp.linspace(0.0, 10.0, 21)[1:]


def field(t, u, x):
    alpha, beta, delta, gamma = x
    prey, pred = u
    return jnp.stack([alpha * prey - beta * prey * pred, delta * prey * pred - gamma * pred])


DT = 0.1


def lotka_volterra(x):
    """The populations at ``ts``: classical RK4 at a fixed dt = 0.1 (error ~1e-5, below
    the noise) inside ``lax.scan``, differentiable in forward and reverse mode."""

    def step(u, t):
        k1 = field(t, u, x)
        k2 = field(t + DT / 2, u + DT / 2 * k1, x)
        k3 = field(t + DT / 2, u + DT / 2 * k2, x)
        k4 = field(t + DT, u + DT * k3, x)
        u = u + DT / 6 * (k1 + 2 * k2 + 2 * k3 + k4)
        return u, u

    u0 = jnp.array([1.0, 0.5], dtype=x.dtype)
    _, us = jax.lax.scan(step, u0, jnp.arange(100) * DT)
    return us[4::5].T.ravel()          # every 0.5: prey at 20 times, then predators


lower = jnp.array([0.5, 0.5, 0.5, 0.5])
upper = jnp.array([1.5, 1.5, 1.5, 1.5])


def prior(key, n):
    return jax.random.uniform(key, (n, 4), minval=lower, maxval=upper)


problem = invphys.Problem(lotka_volterra, lower, upper, sampler=prior, noise=0.02,
                          x0="midpoint", name="lotka-volterra")

# %% [markdown]
# `Problem` checks the bounds, projects a start onto them, draws x from `sampler` and
# adds the noise in `observe`. Everything is jax: `jax.jit`, `jax.vmap`, `jax.jvp` and
# `jax.vjp` work through `problem.forward`.

# %%
x_true = problem.sample(jax.random.key(0), count)
y_clean, y_obs = problem.observe(jax.random.key(1), x_true)

# %% [markdown]
# ## The shared protocol
#
# `invphys.solve` runs every method under one `Rules`: a method only *proposes* a
# step; the same backtracking search accepts or shrinks it, the same termination
# stops it, and all start from the problem's fixed start (the box midpoint here).
# Differences in the table are then differences of the methods, not of their
# tuning. The residual is in the units of y; divide by the noise std so that
# eps = 1.1 is the discrepancy principle (stop at the noise level).

# %%
sigma = 0.02
target = problem.with_forward(lambda x: lotka_volterra(x) / sigma)
rules = invphys.Rules(eps=1.1, max_iter=60 if args.small else 200)
results = {}
for method in ("pg", "gn", "lm"):
    sol = invphys.solve(target, y_obs / sigma, method=method, rules=rules)
    err = np.linalg.norm(sol.x - x_true, axis=1) / np.linalg.norm(x_true, axis=1)
    results[method] = sol
    print(f"{method:3s}: reached eps in {int(sol.converged.sum())}/{count}, "
          f"steps to eps (median) {np.median(np.asarray(sol.stats['steps_to_eps'])):.0f}, "
          f"median relative x error {np.median(err):.3f}")

# %% [markdown]
# PG needs many small steps on this curved, badly scaled objective; GN and LM use the
# Jacobian and reach the noise level in a few. The batch (a leading axis on `y_obs`)
# is one jitted, vmapped solve. `sol.history["rmse"]` holds the RMSE per iteration,
# NaN after a problem's last step.

# %%
fig, (ax0, ax1) = plt.subplots(1, 2, figsize=(11, 3.8), layout="constrained")
for i, (name, sol) in enumerate(results.items()):
    h = np.asarray(sol.history["rmse"])
    for j, row in enumerate(h):
        ax0.semilogy(row, color=f"C{i}", lw=1, label=name if j == 0 else None)
ax0.axhline(1.1, color="k", ls="--", lw=0.8, label="eps = 1.1 (noise level)")
ax0.set_xlabel("iteration")
ax0.set_ylabel("residual RMSE (noise std units)")
ax0.set_title("Lotka-Volterra: one line per problem")
ax0.legend(fontsize=8)
x_fit = np.asarray(results["lm"].x[0])
ax1.plot(ts, y_obs[0, :20], "C0.", label="prey (observed)")
ax1.plot(ts, y_obs[0, 20:], "C3.", label="predators (observed)")
fit = np.asarray(lotka_volterra(jnp.asarray(x_fit)))
ax1.plot(ts, fit[:20], "C0-", lw=1, label="LM fit")
ax1.plot(ts, fit[20:], "C3-", lw=1)
ax1.set_xlabel("time t (model units)")
ax1.set_ylabel("population (model units)")
ax1.set_title("problem 0: data and LM fit")
ax1.legend(fontsize=8)
fig.savefig(args.out / "own_simulator.png", dpi=110)
print("wrote", args.out / "own_simulator.png")
