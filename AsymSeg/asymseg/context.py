"""What the command-line layer hands to the code it runs: streams, the cancel token, the progress
renderer (:class:`CommandContext`), the help formatter every parser uses, and the option helpers
shared by commands and benchmarks (``--network-param``, help text from docstrings).

Below both ``asymseg.cli`` (which builds them) and the library code with its own entry points
(``python -m asymseg.bench.<topic>``), so neither has to import the other.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, TextIO

from asymseg.errors import InputError
from asymseg.events import CancelToken, make_renderer


@dataclass
class CommandContext:
    """What a command gets from ``main``: streams, the cancel token and the event renderer."""

    stdout: TextIO
    stderr: TextIO
    cancel: CancelToken = field(default_factory=CancelToken)
    progress: str = "auto"
    debug: bool = False

    def renderer(self):
        """The event callback for ``--progress`` (call ``.close()`` when done)."""
        return make_renderer(self.progress, stdout=self.stdout, stderr=self.stderr)


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows an option's default in its help, except where there is nothing to show (None, False)."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        if action.default is None or action.default is False or action.default == []:
            return action.help
        return super()._get_help_string(action)


def plain_text(docstring: str) -> str:
    """A docstring as help text: reStructuredText markup removed (``:func:`x``` and ````x```` give
    ``x``; a literal-block ``::`` gives ``:``)."""
    import re

    text = re.sub(r":[a-z]+:`~?([^`]+)`", r"\1", docstring)
    text = re.sub(r"``([^`]+)``", r"\1", text)
    return re.sub(r"::$", ":", text, flags=re.M)


def add_network_param_argument(parser, help: str) -> None:
    """Add ``--network-param KEY=VALUE`` (repeatable; read with :func:`network_params`) and
    ``--hparam``, its former name in ``models create`` and ``bench inference``, kept out of the
    help so that existing scripts keep working."""
    parser.add_argument("--network-param", action="append", default=None, metavar="KEY=VALUE", help=help)
    parser.add_argument("--hparam", action="append", dest="network_param", help=argparse.SUPPRESS)


def network_params(items: Sequence[str] | None) -> dict[str, Any] | None:
    """The ``--network-param KEY=VALUE`` items as a dict (None when none were given). VALUE is JSON
    (``[64,64]``, ``5``, ``0.5``, ``true``); a bare word (``relu``) is a string.

    Raises:
        InputError: an item without ``=`` or a key, or a value that looks like JSON but is not.
    """
    import json

    if not items:
        return None
    out: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise InputError(f"--network-param {item!r}: expected KEY=VALUE (e.g. fc_features=[64,64])")
        try:
            out[key.strip()] = json.loads(value)
        except json.JSONDecodeError as err:
            if value.strip()[:1] in '[{"-.0123456789' or not value.strip():
                raise InputError(f"--network-param {item!r}: the value is not JSON ({err.msg})") from err
            out[key.strip()] = value.strip()
    return out


__all__ = ["CommandContext", "HelpFormatter", "add_network_param_argument", "network_params", "plain_text"]
