"""Exceptions the CLI turns into one line on stderr and a documented exit code."""

from __future__ import annotations

from asymseg import constants as C


class AsymSegError(Exception):
    """Base class for errors a user can act on. The message is one line naming the file and problem."""

    exit_code: int = C.EXIT_USAGE


class InputError(AsymSegError):
    """Bad input: a missing or unreadable file, mismatched geometry, unknown labels, bad options."""

    exit_code = C.EXIT_USAGE


class ModelError(AsymSegError):
    """A model file is invalid, untrusted (pickle, checksum mismatch) or incompatible with the input."""

    exit_code = C.EXIT_MODEL


class ResourceError(AsymSegError):
    """The machine ran out of memory or disk space."""

    exit_code = C.EXIT_RESOURCES


class Cancelled(AsymSegError):
    """The work was cancelled (SIGINT/SIGTERM or a cancel token); the last good outputs are kept."""

    exit_code = C.EXIT_CANCELLED
