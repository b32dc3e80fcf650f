"""``blemore synth``: write a synthetic BlEmoRe release (docs/ARCHITECTURE.md section 2.4).

Example::

    blemore synth --profile demo --out blemore_data/demo --seed 0
    blemore synth --profile full --out /data/blemore_full --encoders imagebind,wavlm
"""

from __future__ import annotations

import argparse


def register(subparsers) -> None:
    """Add the ``synth`` subcommand to the ``blemore`` parser."""
    p = subparsers.add_parser(
        "synth",
        help="write a synthetic BlEmoRe release (tiny | demo | full)",
        description="Write a synthetic BlEmoRe release in the organisers' layout, plus test_labels.csv and "
        "manifest.json (the generator's ground truth). Same profile and seed -> same bytes.",
    )
    p.add_argument("--profile", choices=("tiny", "demo", "full"), default="demo",
                   help="tiny: unit tests (seconds); demo: real composition, reduced dims; full: real dims and rates")
    p.add_argument("--out", required=True,
                   help="output directory (an existing one is replaced only when it is a synthetic release or "
                   "empty, unless --overwrite)")
    p.add_argument("--seed", type=int, default=0, help="generator seed (default 0)")
    p.add_argument("--encoders", default=None,
                   help="comma-separated encoder keys to write (default: all 8), e.g. imagebind,wavlm")
    p.add_argument("--overwrite", "--force", dest="overwrite", action="store_true",
                   help="replace an existing --out whatever it holds (--force: the former name)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=handler)


def handler(args: argparse.Namespace) -> int:
    """Run ``blemore synth``; returns 0 on success; invalid input raises ``InputError`` (exit 2)."""
    from blemore_core.data import generate_release
    from search.safety import check_output

    check_output(args.out, "release", overwrite=args.overwrite)
    encoders = None
    if args.encoders:
        encoders = [e.strip() for e in args.encoders.split(",") if e.strip()]
    try:
        out = generate_release(args.out, args.profile, seed=args.seed, encoders=encoders,
                               progress=not args.quiet, overwrite=True)
    except (ValueError, FileExistsError) as e:
        from search.errors import InputError

        raise InputError(str(e)) from None
    print(f"wrote {args.profile} release (seed {args.seed}) to {out}")
    return 0
