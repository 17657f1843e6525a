"""Memory and per-iteration cost of the Gauss-Newton products (issue 14).

    python -m benchmarks.gn_memory [--sizes 64 300 256 10] [--batch 256] [--skip-timing]

1. **Memory at ~1e5 parameters.** One Gauss-Newton step on a tanh MLP (digits inputs,
   64-300-256-10 = 99,126 parameters, batch 256, cross-entropy, float64), three ways:

   * ``matrix-free``: :func:`invphys.optim.gauss_newton` (``G v`` by ``jax.linearize``,
     CG; nothing of size ``outputs x P`` or ``P x P``);
   * ``dense-J``: the same CG but with the ``(batch * classes) x P`` Jacobian
     materialised (``jax.jacrev``) and ``G v = J^T H (J v)`` from it;
   * ``dense-G``: the GN matrix ``J^T H J`` formed (``P x P``) and solved by Cholesky.

   Reported: XLA's memory accounting of the compiled step (arguments + outputs +
   temporaries, :func:`invphys.experiments._gn_bench.peak_bytes`; compile only, so the
   dense GN matrix is accounted without being allocated) and, for the variants that fit
   in this machine's memory, the peak resident set size of a fresh subprocess that runs
   the step twice, minus that of the same subprocess that only builds the data and
   parameters (the baseline: Python, JAX, the data).

2. **Layer-wise block products.** Per-CG-step time of the layer-wise direction, the old
   definition (each block's product a full ``G v`` with zeros in the other blocks) against
   the current one (each block linearised over its own leaves,
   :func:`invphys.optim._gauss_newton._block_operators`), on the digits MLP at two sizes,
   fixed CG steps (tolerance 0), best of 5, in one process, alternating.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time

if __package__ in (None, ""):  # python benchmarks/gn_memory.py
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# first: caps BLAS threads before numpy loads, switches x64 on
from benchmarks._common import device_line, peak_rss_mib  # noqa: E402

# isort: split
import jax  # noqa: E402
import jax.flatten_util  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import lineax as lx  # noqa: E402
import numpy as np  # noqa: E402

from invphys import optim  # noqa: E402
from invphys.experiments import _gn_bench as gb  # noqa: E402
from invphys.experiments.full_gn import mlp  # noqa: E402

VARIANTS = ("matrix-free", "dense-J", "dense-G")


def _problem(sizes, batch):
    pr = mlp.digits()
    x, y = pr.x[:batch], pr.y[:batch]
    return gb.init_mlp(jax.random.key(0), sizes), x, y


def _step_fn(variant: str):
    """``(params, x, y) -> new params``: one damped GN step (lambda 1e-3, 50 CG steps)."""
    lam = 1e-3
    opt = optim.gauss_newton(lam, line_search=False, cg_max_steps=50, cg_atol=1e-12)

    def matrix_free(p, x, y):
        model_fn = lambda q: gb.mlp_apply(q, x)
        loss_fn = lambda o: gb.cross_entropy(o, y)
        _, g, kw = optim.extra_args(model_fn, loss_fn, p)
        upd, _ = opt.update(g, opt.init(p), p, **kw)
        return jax.tree.map(jnp.add, p, upd)

    return {"matrix-free": matrix_free,
            "dense-J": gb.dense_gn_step(gb.mlp_apply, gb.cross_entropy, form_g=False),
            "dense-G": gb.dense_gn_step(gb.mlp_apply, gb.cross_entropy, form_g=True)}[variant]


def _child(variant: str, sizes, batch) -> None:
    """Run in a fresh process: build, optionally run the step twice, print the peak RSS."""
    p, x, y = _problem(sizes, batch)
    jax.block_until_ready((p, x, y))
    if variant != "baseline":
        f = jax.jit(_step_fn(variant))
        p = f(p, x, y)
        p = f(p, x, y)
        jax.block_until_ready(p)
    print(f"RSS {peak_rss_mib():.1f}")


def _rss(variant: str, sizes, batch) -> float | None:
    cmd = [sys.executable, "-m", "benchmarks.gn_memory", "--child", variant, "--batch",
           str(batch), "--sizes", *map(str, sizes)]
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    r = subprocess.run(cmd, capture_output=True, text=True, cwd=root)
    for line in r.stdout.splitlines():
        if line.startswith("RSS "):
            return float(line.split()[1])
    print(f"  ({variant} subprocess failed: {r.stderr.strip().splitlines()[-1:]})")
    return None


def memory(sizes, batch, avail_gib: float) -> None:
    p, x, y = _problem(sizes, batch)
    n = gb.num_params(p)
    m = batch * sizes[-1]
    print(f"## memory: MLP {'-'.join(map(str, sizes))}, {n} parameters, batch {batch} "
          f"({m} outputs), float64")
    print(f"   sizes for reference: J {m * n * 8 / 2**20:.0f} MiB, G {n * n * 8 / 2**30:.1f} GiB")
    base = _rss("baseline", sizes, batch)
    print(f"{'variant':<12} {'XLA peak MiB':>13} {'XLA temp MiB':>13} {'compile s':>10} "
          f"{'peak RSS - baseline MiB':>24}")
    for v in VARIANTS:
        t0 = time.perf_counter()
        b = gb.peak_bytes(_step_fn(v), p, x, y)
        ct = time.perf_counter() - t0
        fits = b.get("peak", 0) < 0.5 * avail_gib * 2**30
        rss = _rss(v, sizes, batch) if fits else None
        extra = f"{rss - base:.0f}" if rss is not None and base is not None else (
            "not run (does not fit)" if not fits else "-")
        print(f"{v:<12} {b.get('peak', float('nan')) / 2**20:>13.1f} "
              f"{b.get('temp', float('nan')) / 2**20:>13.1f} {ct:>10.1f} {extra:>24}")


def _old_layerwise(model_fn, loss_fn, params, grads, lam, blocks, cg):
    """The previous layer-wise direction: per block, a full ``G v`` zero-padded."""
    ggn = optim.linearize_ggn(model_fn, loss_fn, params)
    leaves, treedef = jax.tree.flatten(params)
    rhs = [-leaf for leaf in jax.tree.leaves(grads)]
    d, steps = [None] * len(leaves), 0
    for idx in blocks:
        def mv(vb, idx=idx):
            full = [jnp.zeros_like(leaf) for leaf in leaves]
            for j, i in enumerate(idx):
                full[i] = vb[j]
            gv = jax.tree.leaves(ggn.matvec(jax.tree.unflatten(treedef, full)))
            return tuple(gv[i] + lam * vb[j] for j, i in enumerate(idx))

        op = lx.FunctionLinearOperator(
            mv, tuple(jax.ShapeDtypeStruct(leaves[i].shape, leaves[i].dtype) for i in idx),
            tags=(lx.symmetric_tag, lx.positive_semidefinite_tag))
        sol = lx.linear_solve(op, tuple(rhs[i] for i in idx), cg, throw=False)
        for j, i in enumerate(idx):
            d[i] = sol.value[j]
        steps = steps + sol.stats["num_steps"]
    return jax.tree.unflatten(treedef, d), steps


def timing(sizes_list, cg_steps: int = 30, repeats: int = 5) -> None:
    from invphys.optim._gauss_newton import _blocks

    pr = mlp.digits()
    print(f"## layer-wise direction, per CG step (digits, {pr.x.shape[0]} samples, "
          f"{cg_steps} CG steps per block, tolerance 0)")
    print(f"{'MLP':<22} {'params':>7} {'blocks':>6} {'full ms/step':>13} "
          f"{'old ms/step':>12} {'new ms/step':>12} {'old/new':>8} {'max|d_old-d_new|/max|d|':>24}")
    cg = lx.CG(rtol=1e-30, atol=1e-300, max_steps=cg_steps)
    for sizes in sizes_list:
        p = gb.init_mlp(jax.random.key(0), sizes)
        blocks = _blocks(p, optim.by_layer)

        def direction(p, x, y, which, blocks=blocks):
            model_fn = lambda q: gb.mlp_apply(q, x)
            loss_fn = lambda o: gb.cross_entropy(o, y)
            g = jax.grad(lambda q: loss_fn(model_fn(q)))(p)
            if which == "old":
                return _old_layerwise(model_fn, loss_fn, p, g, 1e-3, blocks, cg)
            mode = "full" if which == "full" else "layerwise"
            kw = {"groups": optim.by_layer} if mode == "layerwise" else {}
            return optim.gauss_newton_direction(model_fn, loss_fn, p, g, 1e-3, mode=mode,
                                                cg_max_steps=cg_steps, cg_rtol=1e-30,
                                                cg_atol=1e-300, **kw)

        fns = {w: jax.jit(lambda p, x, y, w=w: direction(p, x, y, w))
               for w in ("full", "old", "new")}
        outs = {w: f(p, pr.x, pr.y) for w, f in fns.items()}
        jax.block_until_ready(outs)
        best = {w: np.inf for w in fns}
        for _ in range(repeats):
            for w, f in fns.items():
                t0 = time.perf_counter()
                jax.block_until_ready(f(p, pr.x, pr.y))
                best[w] = min(best[w], time.perf_counter() - t0)
        per = {w: 1e3 * best[w] / int(outs[w][1]) for w in fns}
        old, new = (jax.flatten_util.ravel_pytree(outs[w][0])[0] for w in ("old", "new"))
        diff = float(jnp.max(jnp.abs(old - new)) / jnp.max(jnp.abs(new)))
        print(f"{'-'.join(map(str, sizes)):<22} {gb.num_params(p):>7} {len(blocks):>6} "
              f"{per['full']:>13.2f} {per['old']:>12.2f} {per['new']:>12.2f} "
              f"{per['old'] / per['new']:>8.2f} {diff:>24.2e}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[64, 300, 256, 10])
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--skip-timing", action="store_true")
    ap.add_argument("--skip-memory", action="store_true")
    ap.add_argument("--child", choices=("baseline", *VARIANTS), help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.child:
        _child(a.child, tuple(a.sizes), a.batch)
        return
    print(device_line())
    avail = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_AVPHYS_PAGES") / 2**30
    print(f"available memory {avail:.1f} GiB, load {os.getloadavg()[0]:.2f}")
    if not a.skip_memory:
        memory(tuple(a.sizes), a.batch, avail)
    if not a.skip_timing:
        timing([(64, 64, 64, 10), (64, 256, 256, 256, 10)])


if __name__ == "__main__":
    main()
