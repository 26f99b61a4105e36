"""Out-of-memory handling: recognise allocation failures, retry with smaller tiles, then another device."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import TypeVar

import torch

from asymseg import constants as C
from asymseg.errors import ResourceError
from asymseg.events import EventCallback, emit
from asymseg.infer.tiling import Triple, halve_tile

log = logging.getLogger(__name__)

T = TypeVar("T")

#: Lower-case fragments of RuntimeError texts that mean an allocation failed. oneDNN reports a
#: scratchpad it cannot allocate as "could not create a primitive" (seen under RLIMIT_AS).
_OOM_TEXTS = ("out of memory", "can't allocate memory", "failed to allocate", "could not create a primitive")


def is_out_of_memory(err: BaseException) -> bool:
    """True for CUDA out-of-memory errors and CPU allocator failures."""
    oom = getattr(torch.cuda, "OutOfMemoryError", None)
    if oom is not None and isinstance(err, oom):
        return True
    if isinstance(err, MemoryError):
        return True
    if isinstance(err, RuntimeError):
        text = str(err).lower()
        return any(s in text for s in _OOM_TEXTS)
    return False


def run_with_oom_retry(attempt: Callable[[torch.device, Triple], T], *, device: torch.device, tile: Triple,
                       multiple: int, fallback_device: torch.device | None = None,
                       fallback_tile: Callable[[], Triple] | None = None,
                       on_event: EventCallback | None = None, retries: list[str] | None = None
                       ) -> tuple[T, torch.device, Triple]:
    """Call ``attempt(device, tile)``; on out-of-memory halve the tiles, then change device.

    Args:
        attempt: runs the whole job with the given device and tile edge; may raise an
            out-of-memory error (see :func:`is_out_of_memory`); other errors propagate.
        device: the first device.
        tile: the first tile edges (D, H, W).
        multiple: tile edges stay multiples of it.
        fallback_device: where to go once the smallest tiles fail (None: nowhere).
        fallback_tile: the tile edges to start with on the fallback device.
        on_event: receives a ``log`` event per retry.
        retries: if given, a message per retry is appended to it.

    Returns:
        ``(result, device, tile)`` of the attempt that succeeded.

    Raises:
        ResourceError: the smallest tiles ran out of memory on the last device.
    """
    first = tuple(tile)
    while True:
        try:
            return attempt(device, tile), device, tile
        except Exception as err:  # noqa: BLE001 - only out-of-memory errors are handled
            if not is_out_of_memory(err):
                raise
            reason = " ".join(str(err).split())[:200] or type(err).__name__
        # Outside the except block, so the failed attempt's tensors can be freed.
        if device.type == "cuda" and torch.cuda.is_available():
            torch.cuda.empty_cache()
        smaller = halve_tile(tile, multiple)
        if smaller != tuple(tile):
            message = (f"out of memory on {device} with {format_tile(tile)} tiles; retrying with "
                       f"{format_tile(smaller)} tiles ({reason})")
            tile = smaller
        elif fallback_device is not None and fallback_device != device:
            new_tile = fallback_tile() if fallback_tile is not None else tuple(tile)
            message = (f"out of memory on {device} even with {format_tile(tile)} tiles; falling back to "
                       f"{fallback_device} with {format_tile(new_tile)} tiles ({reason})")
            device, tile = fallback_device, new_tile  # type: ignore[assignment]
            fallback_device = None
        else:
            tried = f", lowered automatically from {format_tile(first)}" if tuple(tile) != first else ""
            raise ResourceError(f"out of memory on {device} even with {format_tile(tile)} tiles (the smallest{tried}): "
                                f"free memory or use a machine with more ({reason})")
        log.warning("%s", message)
        if retries is not None:
            retries.append(message)
        emit(on_event, C.EVENT_LOG, stage="infer", message=message, level="warning", device=str(device),
             tile=list(tile))


def format_tile(tile: Sequence[int]) -> str:
    return "x".join(str(int(t)) for t in tile)
