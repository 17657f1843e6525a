"""Forward, JVP and VJP throughput of the simulators on a batch (default 1000 problems).

    python -m benchmarks.forward [--batch 1000] [--fidelity paper accurate]

Prints compile time and run time separately (best of 5 runs), per problem.
"""

from __future__ import annotations

import argparse

import jax  # noqa: E402  (after _common: x64 and BLAS caps)
import jax.numpy as jnp  # noqa: E402

import invphys  # noqa: E402
from benchmarks._common import device_line
from invphys.experiments.timing import time_call


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--batch", type=int, default=1000)
    ap.add_argument("--fidelity", nargs="+", default=["paper", "accurate"])
    ap.add_argument("--problems", nargs="+", default=["heat1d", "oscillator"])
    args = ap.parse_args(argv)
    print(device_line())
    print(f"batch = {args.batch} problems; times: compile (s), run for the batch (ms), "
          "run per problem (us)")
    print(f"{'problem':<11} {'fidelity':<9} {'op':<8} {'compile s':>10} {'batch ms':>10} "
          f"{'us/problem':>11}")
    for name in args.problems:
        for fid in args.fidelity:
            p = invphys.load_problem(name, {"physics.fidelity": fid})
            xs = p.sample(jax.random.key(0), args.batch)
            vs = jax.random.normal(jax.random.key(1), xs.shape)
            ws = jax.random.normal(jax.random.key(2), jax.vmap(p.fn)(xs[:1]).shape[1:])
            ws = jnp.broadcast_to(ws, (args.batch, *ws.shape))
            ops = {
                "forward": (jax.vmap(p.fn), (xs,)),
                "jvp": (jax.vmap(lambda x, v, f=p.fn: jax.jvp(f, (x,), (v,))[1]), (xs, vs)),
                "vjp": (jax.vmap(lambda x, w, f=p.fn: jax.vjp(f, x)[1](w)[0]), (xs, ws)),
            }
            for op, (fn, a) in ops.items():
                t = time_call(fn, *a, repeats=5, aot=True)
                c, r = t.compile_s, t.run_s
                print(f"{name:<11} {fid:<9} {op:<8} {c:>10.2f} {r * 1e3:>10.2f} "
                      f"{r / args.batch * 1e6:>11.2f}", flush=True)


if __name__ == "__main__":
    main()
