"""``asymseg bench TOPIC``: run a benchmark from ``asymseg.bench.<topic>``.

Each topic module provides ``add_arguments(parser)`` and ``run(args, ctx) -> dict``; it prints
its own table (or JSON with ``--json``). Benchmarks need the ``bench`` extra
(``pip install asymseg[bench]``: monai, psutil).
"""

from __future__ import annotations

import argparse
import importlib

from asymseg import constants as C
from asymseg.context import HelpFormatter, plain_text

#: Benchmark topics, each a module ``asymseg.bench.<topic>``; topics whose module is not
#: installed are left out of the parser.
TOPICS: tuple[str, ...] = ("losses", "inference", "training")


class _HelpFormatter(HelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Defaults in the option help; the module docstring kept as written."""


def register(subparsers) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "bench",
        help=f"benchmarks: {', '.join(TOPICS)} (needs the 'bench' extra)",
        description=plain_text(__doc__.splitlines()[0])
        + " Benchmarks measure against a reference run on the same machine.",
        formatter_class=HelpFormatter,
    )
    topics = parser.add_subparsers(dest="topic", metavar="TOPIC", required=True)
    for name in TOPICS:
        try:
            module = importlib.import_module(f"asymseg.bench.{name}")
        except ModuleNotFoundError as err:
            if err.name == f"asymseg.bench.{name}":
                continue
            raise
        text = plain_text(module.__doc__ or name)
        sub = topics.add_parser(name, help=" ".join(text.strip().split("\n\n")[0].split()), description=text,
                                formatter_class=_HelpFormatter)
        module.add_arguments(sub)
        sub.set_defaults(func=run, bench_module=module.__name__)
    return parser


def run(args: argparse.Namespace, ctx) -> int:
    module = importlib.import_module(args.bench_module)
    module.run(args, ctx)
    return C.EXIT_OK
