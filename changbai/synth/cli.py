"""`changbai synth`: write a synthetic Jilin province as FHIR NDJSON with its ground truth."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

DEFAULT_RESIDENTS = 2000


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("synth", help="generate a synthetic Jilin province (FHIR NDJSON + ground truth)")
    p.add_argument("--residents", type=int, default=DEFAULT_RESIDENTS, help=f"residents (default {DEFAULT_RESIDENTS})")
    p.add_argument("--seed", type=int, default=1, help="random seed: the same seed gives the same bytes (default 1)")
    p.add_argument("--out", type=Path, required=True, help="output directory (one .ndjson file per resource type)")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from changbai.synth import generate

    began = time.perf_counter()

    def progress(done: int) -> None:
        if sys.stderr.isatty():
            print(f"\r{done}/{args.residents} residents", end="", file=sys.stderr, flush=True)

    counts = generate(args.out, args.residents, args.seed, progress)
    if sys.stderr.isatty():
        print(file=sys.stderr)
    seconds = time.perf_counter() - began
    total = sum(counts.values())
    width = max(len(t) for t in counts)
    for rtype, n in counts.items():
        print(f"{rtype:<{width}}  {n:>9,}")
    print(f"{'total':<{width}}  {total:>9,}  in {seconds:.1f} s ({total / seconds:,.0f} resources/s)")
    print(f"NDJSON in {args.out}/, ground truth in {args.out}/ground-truth/")
    return 0
