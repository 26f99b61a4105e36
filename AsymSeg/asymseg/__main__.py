"""``python -m asymseg``: the command-line interface."""

import signal
import sys

# A supervisor may stop the engine at any moment, also while it is still importing (about a
# second with torch): from here on SIGINT/SIGTERM are recorded, and ``main`` turns a signal that
# came before its own handlers into the documented "cancelled" exit instead of dying by it.
_EARLY_SIGNALS: list = []
for _number in (signal.SIGINT, signal.SIGTERM):
    signal.signal(_number, lambda signum, frame: _EARLY_SIGNALS.append(signum))

from asymseg.cli import main  # noqa: E402  (after the handlers above, on purpose)


def _run() -> int:
    code = main(early_signals=_EARLY_SIGNALS)
    # The work is over and the exit code decided. Tearing the interpreter down (torch's atexit
    # hooks, module cleanup) takes a moment; a signal arriving then (a second Ctrl-C, a supervisor
    # repeating SIGTERM) must neither print a traceback from an atexit hook nor end the process by
    # the signal instead of the documented exit code. Python restores the default action of
    # signals with Python handlers at shutdown, but leaves ignored signals ignored.
    for number in (signal.SIGINT, signal.SIGTERM):
        signal.signal(number, signal.SIG_IGN)
    return code


if __name__ == "__main__":
    sys.exit(_run())
