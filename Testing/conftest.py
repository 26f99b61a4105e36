"""Shared fixtures: the CLI in-process and as a real subprocess, and the optional BraTS data."""

from __future__ import annotations

import io
import os
from pathlib import Path

import pytest

from helpers.engine import run_asymseg

REPO = Path(__file__).resolve().parents[1]
SHARED_BRATS = REPO.parent / "shared" / "data" / "brats2015"

# Keep test runs lean and predictable on shared 2-core machines.
os.environ.setdefault("OMP_NUM_THREADS", "2")


@pytest.fixture(scope="session")
def brats2015() -> Path:
    """../shared/data/brats2015 (two real cases); the test is skipped when it is absent."""
    if not SHARED_BRATS.is_dir():
        pytest.skip("../shared/data/brats2015 is not present")
    return SHARED_BRATS


@pytest.fixture
def one_torch_thread():
    """One torch thread for the test: tiny networks gain nothing from more, and shared CPUs lose a lot."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


class CliResult:
    def __init__(self, code: int, out: str, err: str) -> None:
        self.code, self.out, self.err = code, out, err

    def __repr__(self) -> str:
        return f"CliResult(code={self.code}, out={self.out!r}, err={self.err!r})"


@pytest.fixture
def cli():
    """Run ``asymseg ARGS`` in-process; returns CliResult(code, out, err)."""
    from asymseg.cli import main

    def run(*args: object) -> CliResult:
        out, err = io.StringIO(), io.StringIO()
        code = main([str(a) for a in args], stdout=out, stderr=err)
        return CliResult(code, out.getvalue(), err.getvalue())

    return run


@pytest.fixture
def asymseg_proc():
    """The :func:`run_asymseg` helper as a fixture."""
    return run_asymseg
