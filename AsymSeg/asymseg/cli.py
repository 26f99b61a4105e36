"""The ``asymseg`` command line.

Each subcommand lives in ``asymseg/commands/<name>.py`` and defines::

    def register(subparsers) -> argparse.ArgumentParser   # adds its parser, sets func=run
    def run(args, ctx: CommandContext) -> int              # calls one API function

The common options (``--threads``, ``--debug``, ``--progress``: :func:`add_common_arguments`) are
accepted before the command name and after it, by every command and action alike.

``main`` owns the process: it parses, configures logging (stderr) and threads, installs
SIGINT/SIGTERM handlers and the cancel-file watcher (``ASYMSEG_CANCEL_FILE``) that cancel the
job's token (both undone on return), and maps exceptions to one line on stderr and a documented
exit code (see ``constants.EXIT_*``). ``--debug`` shows tracebacks.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import signal
import sys
from collections.abc import Sequence
from typing import TextIO

from asymseg import __version__
from asymseg import constants as C
from asymseg.cancelfile import watch_cancel_file
from asymseg.context import CommandContext, HelpFormatter
from asymseg.errors import AsymSegError, InputError
from asymseg.events import PROGRESS_MODES, CancelToken

#: Subcommand modules under asymseg.commands, in the order ``--help`` lists them.
COMMANDS: tuple[str, ...] = (
    "demo",
    "info",
    "phantom",
    "models",
    "segment",
    "operating-point",
    "evaluate",
    "finetune",
    "analyze",
    "experiment",
    "bench",
)

log = logging.getLogger("asymseg")


#: The options every command takes, before or after its name (see :func:`add_common_arguments`).
COMMON_OPTIONS: tuple[str, ...] = ("--threads", "--debug", "--progress")


def add_common_arguments(parser: argparse.ArgumentParser, *, in_command: bool) -> None:
    """Add ``--threads``, ``--debug`` and ``--progress`` to ``parser``.

    The top-level parser holds their defaults; a command's parser (``in_command=True``) adds them
    with no default of its own, so a value given before the command name is kept unless it is
    given again after it.
    """
    def default(value):
        return argparse.SUPPRESS if in_command else value

    group = parser.add_argument_group("options every command takes (before or after its name)")
    group.add_argument("--threads", type=int, default=default(None), metavar="N",
                       help="CPU threads for torch (default: all cores, or $ASYMSEG_THREADS)")
    group.add_argument("--debug", action="store_true", default=default(False),
                       help="show tracebacks and debug logs")
    group.add_argument("--progress", choices=PROGRESS_MODES, default=default("auto"),
                       help="progress display: auto (tqdm bars on a terminal, plain lines in a file or pipe), "
                            "tqdm (bars always), plain, jsonl (one JSON object per line on stdout), or none; "
                            "commands without long work show none")


class CommandParser(argparse.ArgumentParser):
    """The parser of a command or action: it takes the common options too (and so do its actions,
    whose parsers are of the same class)."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        add_common_arguments(self, in_command=True)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="asymseg",
        description="Brain-tumour segmentation for small data with asymmetric losses "
        "(Li, Kamnitsas & Glocker, MICCAI 2019).",
        formatter_class=HelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"asymseg {__version__}")
    add_common_arguments(parser, in_command=False)
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True,
                                       parser_class=CommandParser)
    for name in COMMANDS:
        module = importlib.import_module(f"asymseg.commands.{name.replace('-', '_')}")
        module.register(subparsers)
    return parser


def _configure_logging(debug: bool) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger("asymseg")
    root.handlers[:] = [handler]
    root.setLevel(logging.DEBUG if debug else logging.INFO)
    root.propagate = False


def _configure_threads(threads: int | None) -> None:
    if threads is None and os.environ.get("ASYMSEG_THREADS", "").strip():
        text = os.environ["ASYMSEG_THREADS"].strip()
        if not text.isdigit() or int(text) < 1:
            raise InputError(f"ASYMSEG_THREADS={text[:40]!r}: expected a whole number of threads >= 1")
        threads = int(text)
    if threads is not None:
        if threads < 1:
            raise InputError(f"--threads must be >= 1, got {threads}")
        import torch

        torch.set_num_threads(threads)


def _install_signal_handlers(token: CancelToken) -> dict[int, object]:
    """SIGINT/SIGTERM cancel ``token`` (a second one stops at once); returns the previous handlers."""
    def handler(signum: int, frame: object) -> None:
        name = signal.Signals(signum).name
        if token.cancelled:  # a second signal: stop now
            raise KeyboardInterrupt
        token.cancel(f"cancelled by {name}")

    return {number: signal.signal(number, handler) for number in (signal.SIGINT, signal.SIGTERM)}


#: Longest error line written (characters); longer messages keep their start and end.
MAX_ERROR_CHARS = 1000


def one_line(message: str) -> str:
    """``message`` on one line, at most :data:`MAX_ERROR_CHARS` long: a value a user or a crafted
    file put into an error (a huge option, a path, a parser's quote) cannot flood the terminal."""
    text = " ".join(str(message).split())
    if len(text) <= MAX_ERROR_CHARS:
        return text
    cut = len(text) - MAX_ERROR_CHARS + 40
    head = (MAX_ERROR_CHARS - 40) * 2 // 3
    return f"{text[:head]} ...[{cut:,} characters]... {text[head + cut:]}"


def main(argv: Sequence[str] | None = None, *, stdout: TextIO | None = None,
         stderr: TextIO | None = None, early_signals: Sequence[int] = ()) -> int:
    """Run the CLI; returns the exit code (``constants.EXIT_*``).

    ``early_signals``: SIGINT/SIGTERM numbers recorded before ``main`` ran (``python -m asymseg``
    records them from its first line, still appending until ``main`` installs its own handlers):
    the command is then not started and the exit is "cancelled". The signal handlers ``main``
    installs are restored when it returns.
    """
    stdout = stdout or sys.stdout
    stderr = stderr or sys.stderr
    parser = build_parser()
    args = parser.parse_args(argv)
    _configure_logging(args.debug)
    ctx = CommandContext(stdout=stdout, stderr=stderr, progress=args.progress,
                         debug=args.debug)
    previous: dict[int, object] = {}
    watcher = None
    try:
        previous = _install_signal_handlers(ctx.cancel)
        if early_signals:
            names = ", ".join(sorted({signal.Signals(n).name for n in early_signals}))
            stderr.write(f"asymseg {args.command}: cancelled by {names} before the work started\n")
            return C.EXIT_CANCELLED
        _configure_threads(args.threads)
        watcher = watch_cancel_file(ctx.cancel)  # ASYMSEG_CANCEL_FILE: one graceful stop on every platform
        return int(args.func(args, ctx) or 0)
    except AsymSegError as err:
        if args.debug:
            log.exception("error")
        stderr.write(f"asymseg {args.command}: error: {one_line(str(err))}\n")
        return err.exit_code
    except KeyboardInterrupt:
        stderr.write(f"asymseg {args.command}: cancelled\n")
        return C.EXIT_CANCELLED
    except MemoryError:
        advice = "free memory or lower --tile" if hasattr(args, "tile") else "free memory"
        stderr.write(f"asymseg {args.command}: error: out of memory; {advice}\n")
        return C.EXIT_RESOURCES
    except OSError as err:
        if args.debug:
            log.exception("error")
        import errno

        code = C.EXIT_RESOURCES if err.errno in (errno.ENOSPC, errno.EFBIG, errno.EDQUOT) else C.EXIT_USAGE
        where = f"{err.filename}: " if getattr(err, "filename", None) else ""
        stderr.write(f"asymseg {args.command}: error: {one_line(where + (err.strerror or str(err)))}\n")
        return code
    except Exception as err:  # a bug: say so in one line; --debug shows the traceback
        if args.debug:
            log.exception("internal error")
        stderr.write(f"asymseg {args.command}: internal error: {type(err).__name__}: {one_line(str(err))} "
                     "(run with --debug for the traceback)\n")
        return C.EXIT_INTERNAL
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)
        if watcher is not None:
            watcher.stop()


if __name__ == "__main__":
    sys.exit(main())
