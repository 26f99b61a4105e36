"""Assign scene volumes to a model's input channels by name.

A model lists its channels by canonical name (``flair``, ``t1c``, ``t1``, ``t2``). Volume names
in a scene vary: ``Flair_subtrMeanDivStd``, ``BraTS-GLI-00001-000-t2f``, ``T1 post-contrast``,
``case3_t1ce``. Each channel has a few patterns; a name is given to the first channel (in the
order flair, t1c, t2, t1, so that ``t2-flair`` is FLAIR and ``t1ce`` is not plain T1) whose pattern
it contains as a separate word.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence

#: Display names of the canonical channels.
CHANNEL_TITLES: dict[str, str] = {
    "flair": "FLAIR",
    "t1c": "T1 post-contrast",
    "t1": "T1",
    "t2": "T2",
}

# Words are separated by anything that is not a letter or digit; a pattern must match whole words.
_B = r"(?<![a-z0-9])"
_E = r"(?![a-z0-9])"

#: Name patterns per channel (lower-case regular expressions), most specific channel first.
CHANNEL_PATTERNS: dict[str, tuple[str, ...]] = {
    "flair": (
        _B + r"(?:t2[-_ ]?)?flair" + _E,
        _B + r"t2f" + _E,
    ),
    "t1c": (
        _B + r"t1[-_ ]?(?:c|ce|gd|post|contrast|\+c|w?[-_ ]?(?:ce|gd|c))" + _E,
        r"post[-_ ]?contrast",
        r"gadolinium",
        _B + r"gd" + _E,
    ),
    "t2": (
        _B + r"t2[-_ ]?(?:w|weighted)?" + _E,
    ),
    "t1": (
        _B + r"t1[-_ ]?(?:n|w|native|pre|weighted)?" + _E,
        _B + r"mprage" + _E,
    ),
}

#: The order in which channels claim a name.
MATCH_ORDER: tuple[str, ...] = ("flair", "t1c", "t2", "t1")

_COMPILED = {name: tuple(re.compile(p) for p in patterns) for name, patterns in CHANNEL_PATTERNS.items()}


def _normalise(name: str) -> str:
    # Split camel case ("T1cPost" -> "t1c post") only at lower->upper transitions so "T1CE" stays whole.
    spaced = re.sub(r"(?<=[a-z])(?=[A-Z])", " ", name)
    return spaced.lower()


def channelOfName(name: str) -> str | None:
    """The canonical channel a volume name denotes, or None.

    Example:
        >>> channelOfName("Flair_subtrMeanDivStd"), channelOfName("BraTS-00001-t1c")
        ('flair', 't1c')
        >>> channelOfName("T1 post-contrast"), channelOfName("case_t2w"), channelOfName("mask")
        ('t1c', 't2', None)
    """
    text = _normalise(name)
    for channel in MATCH_ORDER:
        if any(pattern.search(text) for pattern in _COMPILED[channel]):
            return channel
    return None


def canonicalChannel(channel: str) -> str:
    """Map a model's channel name to a canonical one where it is an alias (``t1ce`` -> ``t1c``)."""
    found = channelOfName(channel)
    return found if found is not None else channel.lower()


def assignChannels(channels: Sequence[str], volumeNames: Iterable[str]) -> dict[str, str | None]:
    """Assign volumes to channels by name.

    Args:
        channels: the model's channel names, in model order (aliases such as ``t1ce`` accepted).
        volumeNames: candidate volume names, in scene order; each is used at most once.

    Returns:
        ``{channel: volume name or None}`` in the order of ``channels``. A channel gets the first
        unused volume whose name denotes it; when exactly one channel and one volume are left
        unmatched, they are paired (a one-channel model with one volume in the scene).
    """
    names = list(volumeNames)
    used: set[int] = set()
    result: dict[str, str | None] = {}
    for channel in channels:
        wanted = canonicalChannel(channel)
        result[channel] = None
        for index, name in enumerate(names):
            if index not in used and channelOfName(name) == wanted:
                result[channel] = name
                used.add(index)
                break
    missing = [c for c, v in result.items() if v is None]
    unused = [i for i in range(len(names)) if i not in used and channelOfName(names[i]) is None]
    if len(missing) == 1 and len(unused) == 1 and len(channels) == 1:
        result[missing[0]] = names[unused[0]]
    return result


def channelTitle(channel: str) -> str:
    """A display name for a channel (``t1c`` -> ``T1 post-contrast``)."""
    return CHANNEL_TITLES.get(canonicalChannel(channel), channel)
