"""``invphys train SPEC --out DIR``: train a Deceptron and write a checkpoint with its card."""

from __future__ import annotations

import argparse
import sys
import tomllib
from pathlib import Path

from .._configs import OPTIMIZER_NAMES
from .._errors import NonFiniteError, SpecError
from .._io import check_output_dir
from .._spec import load_spec
from ..learn import train_from_spec, train_net_from_spec
from ._checks import at_least


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "train", help="train a Deceptron (learned forward surrogate + local inverse)",
        description="Simulate the spec's dataset and train a Deceptron with the paper's "
        "protocol (the spec's [train] section). Writes model.eqx, normaliser.npz, "
        "card.json (config, metrics, data digest, versions, training time), the "
        "resumable training state and a per-epoch log.jsonl to --out, atomically.",
        epilog="Exit status: 0 trained; 1 the training diverged (a non-finite loss: it "
        "stops at once, keeps the state saved after the last good epoch and says so); "
        "2 bad input (nothing computed).",
    )
    p.add_argument("spec", help="bundled spec name (heat1d, oscillator, deblur2d) or a "
                   ".toml path; a deblur2d spec trains DeceptronNet v0")
    p.add_argument("--out", type=Path, required=True, help="checkpoint folder")
    p.add_argument("--model", choices=("linear", "mlp"), help="override train.model")
    p.add_argument("--epochs", type=int, help="override train.epochs")
    p.add_argument("--optimizer", choices=OPTIMIZER_NAMES,
                   help="override train.optimizer (adam: the protocol; gn, gn-layerwise, "
                   "sgn: the Gauss-Newton family of invphys.optim)")
    p.add_argument("--no-jcp", action="store_true",
                   help="train without the Jacobian Composition Penalty (ablation)")
    p.add_argument("--tie-v", action="store_true", help="tie V = W^T (affine model ablation)")
    p.add_argument("--seed", type=int, help="override train.seed")
    p.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                   help="override any spec key (TOML value), e.g. --set train.lr=1e-3 "
                   "--set data.n_train=1000; repeatable")
    p.add_argument("--resume", action="store_true",
                   help="continue the run saved in --out from its last completed epoch")
    p.add_argument("--force", action="store_true",
                   help="start afresh even if --out already holds a run")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(run=run)


def parse_set(items: list[str]) -> dict:
    """``["train.lr=1e-3", "train.model=mlp"]`` -> ``{"train.lr": 0.001, ...}``."""
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or "." not in key:
            raise SpecError(f"--set {item!r}: expected SECTION.KEY=VALUE")
        try:
            out[key.strip()] = tomllib.loads(f"v = {value.strip()}")["v"]
        except tomllib.TOMLDecodeError:
            out[key.strip()] = value.strip()  # a bare string
    return out


def build_spec(args: argparse.Namespace):
    """The spec with the command line's overrides applied (and validated)."""
    at_least("--epochs", args.epochs, 1)
    at_least("--seed", args.seed, 0)
    overrides = parse_set(args.set)
    if args.model:
        overrides["train.model"] = args.model
    if args.epochs is not None:
        overrides["train.epochs"] = args.epochs
    if args.seed is not None:
        overrides["train.seed"] = args.seed
    if args.optimizer:
        overrides["train.optimizer"] = args.optimizer
    if args.no_jcp:
        overrides["train.jcp"] = False
    if args.tie_v:
        overrides["train.tie_v"] = True
    if args.resume and args.force:
        raise SpecError("--resume and --force exclude each other")
    spec = load_spec(args.spec)
    return spec.replace(overrides) if overrides else spec


def run(args: argparse.Namespace) -> int:
    check_output_dir(args.out, what="--out")
    spec = build_spec(args)
    try:
        if spec.problem == "deblur2d":
            return run_deceptronnet(spec, args)
        return run_deceptron(spec, args)
    except NonFiniteError as e:  # the run started and diverged: not a bad input
        print(f"invphys train: error: {' '.join(str(e).split())}", file=sys.stderr)
        return 1


def run_deceptron(spec, args: argparse.Namespace) -> int:
    ckpt = train_from_spec(spec, out=args.out, resume=args.resume, overwrite=args.force,
                           progress=not args.quiet)
    m, card = ckpt.metrics, ckpt.card
    parts = [f"val_mse={m['val_mse']:.3g}", f"rjcp={m['rjcp']:.3g}"]
    if "vw_i_fro" in m:
        parts += [f"||VW-I||_F={m['vw_i_fro']:.3g}", f"cond(W)={m['cond_w']:.3g}"]
    if "g_median_rel_err_max" in m:
        parts.append(f"g median rel. err. (identifiable) <= {m['g_median_rel_err_max']:.3g}")
    parts.append(f"JCP {'on from epoch ' + str(m['jcp_trigger_epoch']) if m['jcp_on'] else 'off'}")
    print(f"trained {card['model']['class']} on {card['problem']} with "
          f"{card['config']['optimizer']} "
          f"({card['epochs_completed']} epochs, {card['training_time_s']:.1f} s): "
          + ", ".join(parts) + f" -> {args.out}/")
    return 0


def run_deceptronnet(spec, args: argparse.Namespace) -> int:
    """A deblur2d spec trains DeceptronNet v0 (same checkpoint, card and resume rules)."""
    ckpt = train_net_from_spec(spec, out=args.out, resume=args.resume, overwrite=args.force,
                               progress=not args.quiet)
    m, card = ckpt.metrics, ckpt.card
    print(f"trained DeceptronNet on {card['problem']} ({card['epochs_completed']} epochs, "
          f"{card['training_time_s']:.1f} s): val x-RMSE {m['val_x_rmse']:.4g}, "
          f"test x-RMSE {m['test_x_rmse']:.4g} (start {m['test_start_x_rmse']:.4g}) "
          f"-> {args.out}/")
    return 0
