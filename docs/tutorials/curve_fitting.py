# %% [markdown]
# # Certified curve fitting with `least_squares`
#
# `invphys.least_squares` fits a residual function under box bounds and says *why* it
# stopped. This tutorial fits NIST's Misra1a dataset (dental research, y = b1 (1 -
# exp(-b2 x))), checks the digits against NIST's certified values, reads the result
# fields, and differentiates the fitted parameters with respect to the data (implicit
# gradients: no backpropagation through the iterations).
#
# Run it: `python docs/tutorials/curve_fitting.py [--small] [--out DIR]`.

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
from invphys.certify import load_nist, lre  # noqa: E402

parser = argparse.ArgumentParser()
parser.add_argument("--small", action="store_true", help="test sizes (the same here)")
parser.add_argument("--out", type=Path, default=Path("out/tutorials/curve_fitting"))
args, _ = parser.parse_known_args()
args.out.mkdir(parents=True, exist_ok=True)

# %% [markdown]
# ## The fit
#
# The residual takes the parameters and, through `args`, the data: whatever flows in
# through `args` can be differentiated later.

# %%
nist = load_nist("Misra1a")
x_data, y_data = jnp.asarray(nist.x), jnp.asarray(nist.y)


def residual(b, y):
    return b[0] * (1.0 - jnp.exp(-b[1] * x_data)) - y


start = jnp.asarray(nist.starts[0])            # NIST's far start
sol = invphys.least_squares(residual, start, y_data, lower=0.0)
print(f"success={bool(sol.success)} ({sol.message}); steps={int(sol.steps)}, "
      f"nfev={int(sol.nfev)}, njev={int(sol.njev)}")
print("b =", np.asarray(sol.x), " certified:", nist.certified)
print(f"correct digits (LRE): {lre(sol.x, nist.certified):.1f}; "
      f"RSS {2 * float(sol.cost):.10e} vs certified {nist.certified_rss:.10e}")

# %% [markdown]
# The result fields (`x`, `cost`, `fun`, `success`, `result`, `message`, `steps`,
# `nfev`, `njev`, `accepted`, `rejected`, `grad_inf`, `active`, `x0_projected`) are
# listed in [result codes and fields](../concepts/results.md). `success` is True only for
# a certified stop: a small Gauss-Newton step, a zero gradient, a vanished residual or
# the precision limit; never for the iteration limit or a degenerate plateau.
#
# ## Implicit gradients through the fit
#
# How does the fitted b move when one measurement moves? `jax.jacobian` of the solution
# with respect to `y` is computed from the optimality conditions at the solution (the
# implicit function theorem), so it costs one linear solve, not a replay of the
# iterations. Check one column against a finite difference:

# %%
def fitted(y):
    return invphys.least_squares(residual, start, y, lower=0.0).x


sens = jax.jacobian(fitted)(y_data)            # (2, n): d b / d y_i
i, h = 5, 1e-4
fd = (fitted(y_data.at[i].add(h)) - fitted(y_data.at[i].add(-h))) / (2 * h)
print("d b / d y_5: implicit", np.asarray(sens[:, i]), " finite difference", np.asarray(fd))

# %%
fig, (ax0, ax1) = plt.subplots(1, 2, figsize=(11, 3.8), layout="constrained")
grid = jnp.linspace(float(x_data.min()), float(x_data.max()), 200)
b = sol.x
ax0.plot(x_data, y_data, "k.", label="NIST Misra1a data")
ax0.plot(grid, b[0] * (1 - jnp.exp(-b[1] * grid)), "C1", label="least_squares fit")
ax0.set_xlabel("volume x (NIST units)")
ax0.set_ylabel("pressure y (NIST units)")
ax0.set_title(f"fit: {lre(sol.x, nist.certified):.1f} certified digits")
ax0.legend(fontsize=8)
ax1.plot(x_data, sens[0], "o-", label="d b1 / d y_i")
ax1.plot(x_data, sens[1] * 1e3, "s-", label="d b2 / d y_i  (x 1e3)")
ax1.set_xlabel("x of the moved measurement")
ax1.set_ylabel("sensitivity of the fit (per unit of y)")
ax1.set_title("implicit gradients through the fit")
ax1.legend(fontsize=8)
fig.savefig(args.out / "curve_fitting.png", dpi=110)
print("wrote", args.out / "curve_fitting.png")
