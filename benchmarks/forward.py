"""Forward, JVP and VJP throughput of the simulators, per problem, against the batch size.

    python -m benchmarks.forward [--batches 16 200 1000] [--fidelity paper accurate adaptive]

For each problem and fidelity: compile time and run time apart (best of ``--repeats``
runs), per problem, at every batch size; then the *ratio table*: each fidelity's cost
per problem over the paper fidelity's, op by op, at the largest batch (the issue's
"accurate within 5x of paper" is the ``accurate`` forward row there). ``peak RSS`` is the
process's peak resident memory (``resource.getrusage``) after that problem's largest
batch: a running maximum over the process, so a later row is never below an earlier
one.

Fidelities: *paper* (the paper's fixed-step schemes), *accurate* (the exact linear
flows: the closed-form 2 x 2 matrix exponential, the heat equation's sine-transform
propagator), *adaptive* (diffrax Tsit5 with tight tolerances: what *accurate* meant
before the exact flows).
"""

from __future__ import annotations

import os
import sys

if __package__ in (None, ""):  # python benchmarks/forward.py
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# first: caps BLAS threads before numpy loads, switches x64 on
from benchmarks._common import device_line, peak_rss_mib, recorded  # noqa: E402

# isort: split
import argparse  # noqa: E402

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402

import invphys  # noqa: E402
from invphys.experiments.timing import time_call  # noqa: E402

OPS = ("forward", "jvp", "vjp")


def time_ops(p: invphys.Problem, batch: int, repeats: int) -> dict[str, tuple[float, float]]:
    """``{op: (compile s, run s per problem)}`` for a batch of prior samples."""
    xs = p.sample(jax.random.key(0), batch)
    vs = jax.random.normal(jax.random.key(1), xs.shape)
    ws = jax.random.normal(jax.random.key(2), jax.vmap(p.fn)(xs[:1]).shape[1:])
    ws = jnp.broadcast_to(ws, (batch, *ws.shape))
    f = p.fn
    ops = {
        "forward": (jax.vmap(f), (xs,)),
        "jvp": (jax.vmap(lambda x, v: jax.jvp(f, (x,), (v,))[1]), (xs, vs)),
        "vjp": (jax.vmap(lambda x, w: jax.vjp(f, x)[1](w)[0]), (xs, ws)),
    }
    out = {}
    for op, (fn, a) in ops.items():
        t = time_call(fn, *a, repeats=repeats, aot=True)
        out[op] = (t.compile_s, t.run_s / batch)
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batches", type=int, nargs="+", default=[16, 200, 1000])
    ap.add_argument("--batch", type=int, default=None, help="one batch size (overrides --batches)")
    ap.add_argument("--fidelity", nargs="+", default=["paper", "accurate", "adaptive"])
    ap.add_argument("--problems", nargs="+", default=["heat1d", "oscillator"])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--readme", help="also write the output into this README's generated "
                    "section <!-- results:bench-forward:start/end -->")
    args = ap.parse_args(argv)
    with recorded("forward", argv, args.readme):
        run(args)


def run(args) -> None:
    batches = [args.batch] if args.batch else sorted(args.batches)
    print(device_line())
    print("times: compile (s); run per problem (us), best of "
          f"{args.repeats}, at batch sizes {batches}\n")
    print("| problem | fidelity | op | compile s | " +
          " | ".join(f"us/problem @ {b}" for b in batches) + " |")
    print("|---|---|---|---|" + "---|" * len(batches))
    per, rss = {}, {}
    for name in args.problems:
        for fid in args.fidelity:
            p = invphys.load_problem(name, {"physics.fidelity": fid})
            rows = {b: time_ops(p, b, args.repeats) for b in batches}
            for op in OPS:
                cells = " | ".join(f"{rows[b][op][1] * 1e6:.2f}" for b in batches)
                print(f"| {name} | {fid} | {op} | {rows[batches[-1]][op][0]:.2f} | {cells} |",
                      flush=True)
            per[name, fid] = {op: rows[batches[-1]][op][1] for op in OPS}
        rss[name] = peak_rss_mib()
    big = batches[-1]
    if "paper" in args.fidelity:
        print(f"\n## cost per problem relative to the paper fidelity (batch {big})\n")
        print("| problem | fidelity | forward | jvp | vjp | peak RSS MiB (process) |")
        print("|---|---|---|---|---|---|")
        for name in args.problems:
            ref = per[name, "paper"]
            for fid in args.fidelity:
                r = " | ".join(f"{per[name, fid][op] / ref[op]:.2f}x" for op in OPS)
                print(f"| {name} | {fid} | {r} | {rss[name]:.0f} |")


if __name__ == "__main__":
    main()
