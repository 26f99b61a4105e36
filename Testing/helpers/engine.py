"""Run the real engine as a subprocess (``python -m asymseg``), for tests and fixtures.

Test modules import it from here rather than from ``conftest``: with several conftest files in the
suite, ``import conftest`` can resolve to another folder's conftest.
"""

from __future__ import annotations

import os
import subprocess
import sys


def run_asymseg(*args: object, timeout: float = 600, env: dict | None = None,
                **kwargs) -> subprocess.CompletedProcess:
    """Run ``python -m asymseg ARGS`` as a real subprocess (text mode, captured output)."""
    full_env = dict(os.environ)
    if env:
        full_env.update(env)
    return subprocess.run([sys.executable, "-m", "asymseg", *map(str, args)], capture_output=True,
                          text=True, timeout=timeout, env=full_env, **kwargs)
