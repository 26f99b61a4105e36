"""Run asymseg commands in one interpreter that refuses and records every network access.

Usage: ``python socket_guard.py LOG.jsonl COMMANDS.json``. The guard is installed before anything
else is imported, so import-time access counts too. It replaces ``socket.socket.connect``,
``connect_ex``, ``sendto``, ``sendmsg``, ``socket.create_connection`` and ``socket.getaddrinfo``
(name lookups) with functions that append one JSON line to LOG and raise ``OSError``.
COMMANDS is a JSON list of argument lists for ``asymseg.cli.main``; the exit codes are printed
as one JSON list on the last stdout line. ``["--probe-network"]`` runs a real urllib request to
127.0.0.1 instead, so a test can check that the guard is active.
"""

from __future__ import annotations

import errno
import json
import socket
import sys

LOG = sys.argv[1]


def _record(kind: str, detail: object) -> None:
    with open(LOG, "a", encoding="utf-8") as handle:
        handle.write(json.dumps({"call": kind, "detail": repr(detail)}) + "\n")


def _refusing(kind: str):
    def refuse(*args, **kwargs):
        _record(kind, args[1:] if args and isinstance(args[0], socket.socket) else args)
        raise OSError(errno.ENETUNREACH, f"network access refused by the test guard ({kind})")

    return refuse


for _name in ("connect", "connect_ex", "sendto", "sendmsg"):
    setattr(socket.socket, _name, _refusing(f"socket.{_name}"))
socket.create_connection = _refusing("create_connection")
socket.getaddrinfo = _refusing("getaddrinfo")


def main() -> None:
    commands = json.loads(open(sys.argv[2], encoding="utf-8").read())
    codes = []
    for argv in commands:
        if argv == ["--probe-network"]:
            import urllib.request

            try:
                urllib.request.urlopen("http://127.0.0.1:9/", timeout=2)
                codes.append(0)
            except OSError:
                codes.append(-1)
            continue
        from asymseg.cli import main as cli_main

        codes.append(cli_main([str(a) for a in argv]))
    print(json.dumps(codes))


if __name__ == "__main__":
    main()
