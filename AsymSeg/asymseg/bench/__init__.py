"""Benchmarks, one topic per module (``asymseg.bench.<topic>``).

Each module provides ``add_arguments(parser)`` and ``run(args, ctx) -> dict``: it measures in
one process against a reference run (ratios, not absolute times), prints a table (or one JSON
object with ``--json``) to ``ctx.stdout`` and returns the result. Each can also run standalone
with ``python -m asymseg.bench.<topic>``.
"""
