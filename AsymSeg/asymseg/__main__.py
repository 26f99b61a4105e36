"""``python -m asymseg``: the command-line interface."""

import signal
import sys

from asymseg.cli import main


def _run() -> int:
    code = main()
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
