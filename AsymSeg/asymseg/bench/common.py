"""What every benchmark module shares: writing its result and running standalone."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from typing import Any


def write_result(ctx, result: dict[str, Any], *, as_json: bool, text: Callable[[dict[str, Any]], str]) -> None:
    """Print ``result`` to ``ctx.stdout``: one strict JSON object (NaN -> null) or the module's text."""
    from asymseg.events import json_safe

    ctx.stdout.write(json.dumps(json_safe(result), allow_nan=False) + "\n" if as_json else text(result))
    ctx.stdout.flush()


def standalone_main(topic: str, description: str, add_arguments: Callable[[argparse.ArgumentParser], None],
                    run: Callable[[argparse.Namespace, Any], Any], argv: list[str] | None = None) -> int:
    """``python -m asymseg.bench.<topic>``: the same arguments as ``asymseg bench <topic>``, the same
    one-line errors and exit codes."""
    from asymseg.context import CommandContext, HelpFormatter, plain_text
    from asymseg.errors import AsymSegError

    parser = argparse.ArgumentParser(prog=f"python -m asymseg.bench.{topic}", description=plain_text(description),
                                     formatter_class=HelpFormatter)
    add_arguments(parser)
    args = parser.parse_args(argv)
    try:
        run(args, CommandContext(stdout=sys.stdout, stderr=sys.stderr))
    except AsymSegError as err:
        sys.stderr.write(f"error: {err}\n")
        return err.exit_code
    return 0
