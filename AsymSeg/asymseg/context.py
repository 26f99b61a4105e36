"""What the command-line layer hands to the code it runs: streams, the cancel token, the progress
renderer (:class:`CommandContext`), and the help formatter every parser uses.

Below both ``asymseg.cli`` (which builds them) and the library code with its own entry points
(``python -m asymseg.bench.<topic>``), so neither has to import the other.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field
from typing import TextIO

from asymseg.events import CancelToken, make_renderer


@dataclass
class CommandContext:
    """What a command gets from ``main``: streams, the cancel token and the event renderer."""

    stdout: TextIO
    stderr: TextIO
    cancel: CancelToken = field(default_factory=CancelToken)
    progress: str = "tqdm"
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


__all__ = ["CommandContext", "HelpFormatter"]
