"""Run ``asymseg ARGS`` with an address-space limit a fixed amount above what the process already maps.

Usage: ``python memory_limit.py EXTRA_MB ARGS...``. The modules a command needs are imported first,
then RLIMIT_AS is set to the current virtual size plus EXTRA_MB, so the limit bites in the command's
own work (reading images, inference tiles, writing) however much address space the libraries map
on this machine. Run it with OMP_NUM_THREADS=1 and MALLOC_ARENA_MAX=1 so no thread stacks or malloc
arenas appear after the limit is set.
"""

from __future__ import annotations

import gc
import resource
import sys


def run_python_limited(code: str, limit_bytes: int, *args: str, timeout: float = 120):
    """Run ``code`` in a fresh interpreter whose address space is limited to ``limit_bytes`` from its
    first line, so that a regression that reads or builds something huge fails the test instead
    of exhausting the machine. Returns the ``subprocess.CompletedProcess`` (text output)."""
    import subprocess
    import textwrap

    prologue = f"import resource\nresource.setrlimit(resource.RLIMIT_AS, ({limit_bytes}, {limit_bytes}))\n"
    return subprocess.run([sys.executable, "-c", prologue + textwrap.dedent(code), *args], capture_output=True,
                          text=True, timeout=timeout)


def _virtual_size() -> int:
    with open("/proc/self/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("VmSize:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmSize in /proc/self/status")


def main() -> None:
    extra = int(float(sys.argv[1]) * 1024 * 1024)
    import numpy  # noqa: F401
    import safetensors.torch  # noqa: F401
    import SimpleITK  # noqa: F401
    import torch

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot  # noqa: F401

    import asymseg.commands.analyze  # noqa: F401
    import asymseg.commands.segment  # noqa: F401
    import asymseg.diagnostics  # noqa: F401
    import asymseg.diagnostics.plots  # noqa: F401
    import asymseg.infer.cases  # noqa: F401
    import asymseg.infer.engine  # noqa: F401
    import asymseg.infer.tta  # noqa: F401
    import asymseg.operating  # noqa: F401
    import asymseg.io  # noqa: F401
    import asymseg.modelfile  # noqa: F401
    from asymseg.__main__ import _run

    # Start the libraries' thread pools and lazy initialisation before the limit: ITK's thread
    # pool, created on a filter's first use, waits forever when it cannot start its threads.
    SimpleITK.BinaryFillhole(SimpleITK.Image([4, 4, 4], SimpleITK.sitkUInt8))
    torch.nn.functional.conv3d(torch.zeros(1, 1, 4, 4, 4), torch.zeros(1, 1, 3, 3, 3)).sum()
    gc.collect()
    limit = _virtual_size() + extra
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    sys.argv = ["asymseg", *sys.argv[2:]]
    sys.exit(_run())


if __name__ == "__main__":
    main()
