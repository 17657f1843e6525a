# %% [markdown]
# # Gauss-Newton optimizers for training
#
# `invphys.optim` holds the Gauss-Newton family as optax transformations. They need
# more than a gradient: the model on the batch as a function of the parameters
# (`model_fn`) and the loss as a function of the model's outputs (`loss_fn`), passed as
# extra keyword arguments to `update`. `invphys.optim.extra_args` builds them, so a plain
# optax loop runs `gauss_newton()` and `optax.adam` alike. This page fits a small MLP
# with both; the same optimizers train a Deceptron from the command line:
#
# ```bash
# invphys train oscillator --set train.model=mlp --optimizer gn --out out/osc-gn
# ```
#
# (`--optimizer` takes `adam`, `sgd`, `gn`, `gn-layerwise`, `sgn`; in a spec,
# `[train] optimizer`.)
#
# Run it: `python docs/tutorials/gauss_newton_optimizer.py [--small] [--out DIR]`.

# %%
import argparse
from pathlib import Path

import equinox as eqx
import jax
import jax.numpy as jnp
import matplotlib
import optax

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

jax.config.update("jax_enable_x64", True)
from invphys import optim  # noqa: E402

parser = argparse.ArgumentParser()
parser.add_argument("--small", action="store_true", help="test sizes")
parser.add_argument("--out", type=Path, default=Path("out/tutorials/gauss_newton"))
args, _ = parser.parse_known_args()
args.out.mkdir(parents=True, exist_ok=True)
steps = 30 if args.small else 200

# %% [markdown]
# ## Data and model
#
# Fit y = sin(3 x) + noise with a 1-32-32-1 tanh MLP (Equinox).

# %%
key_data, key_noise, key_model = jax.random.split(jax.random.key(0), 3)
x = jnp.linspace(-1.0, 1.0, 128)[:, None]
y = jnp.sin(3 * x) + 0.05 * jax.random.normal(key_noise, x.shape)
model = eqx.nn.MLP(1, 1, 32, 2, activation=jnp.tanh, key=key_model)
params0, static = eqx.partition(model, eqx.is_inexact_array)


def model_fn(p):
    return jax.vmap(eqx.combine(p, static))(x)


def loss_fn(out):
    return 0.5 * jnp.mean((out - y) ** 2)


# %% [markdown]
# ## One plain optax loop for every optimizer
#
# `extra_args` returns the loss, its gradient and the keywords; optax's own optimizers
# ignore the extra keywords.

# %%
def train(opt, n_steps):
    @jax.jit
    def step(p, state, key):
        value, grads, kw = optim.extra_args(model_fn, loss_fn, p, key)
        updates, state = opt.update(grads, state, p, **kw)
        return optax.apply_updates(p, updates), state, value

    p, state, losses = params0, opt.init(params0), []
    for k in jax.random.split(jax.random.key(1), n_steps):
        p, state, value = step(p, state, k)
        losses.append(float(value))
    return p, losses


results = {"adam (lr 1e-2)": train(optax.adam(1e-2), steps),
           "gauss_newton()": train(optim.gauss_newton(), steps)}
for name, (_, losses) in results.items():
    print(f"{name:16s} loss after {steps} steps: {losses[-1]:.2e}")

# %% [markdown]
# Each Gauss-Newton step solves the damped GN system (matrix-free, lineax CG) and
# line-searches along it, so it costs several Adam steps, and needs far fewer of them.
# `gauss_newton(mode="layerwise")` keeps only the GN matrix's blocks per layer.

# %%
fig, (ax0, ax1) = plt.subplots(1, 2, figsize=(11, 3.8), layout="constrained")
for name, (p, losses) in results.items():
    ax0.semilogy(losses, label=name)
    ax1.plot(x[:, 0], model_fn(p)[:, 0], label=name)
ax0.set_xlabel("optimizer step")
ax0.set_ylabel("training loss (0.5 x MSE)")
ax0.set_title("the same loop, two optimizers")
ax0.legend(fontsize=8)
ax1.plot(x[:, 0], y[:, 0], "k.", ms=3, label="data")
ax1.set_xlabel("input x")
ax1.set_ylabel("output y")
ax1.set_title(f"fits after {steps} steps")
ax1.legend(fontsize=8)
fig.savefig(args.out / "gauss_newton_optimizer.png", dpi=110)
print("wrote", args.out / "gauss_newton_optimizer.png")
