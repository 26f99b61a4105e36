"""Finding a case's files in a folder, whatever naming scheme it uses.

A file's role (a channel, the label or the brain mask) comes from one keyword in its name: the
name without its image extension is split at ``_``, ``-``, ``.`` and spaces, lower-cased, and the
LAST part is looked up, then the FIRST (tokens must match whole, so ``t1`` never matches ``t1ce``).
This covers, without renaming anything:

==================  ===========================================================================
scheme              example names
==================  ===========================================================================
generic             ``flair.nii.gz``, ``T1ce.nrrd``, ``t1.mha``, ``t2w.nii``, ``seg.nii.gz``, ``brainmask.nii.gz``
BraTS 2017-2021     ``<id>_flair``, ``<id>_t1ce``, ``<id>_t1``, ``<id>_t2``, ``<id>_seg``
BraTS 2023+         ``<id>-t2f``, ``<id>-t1c``, ``<id>-t1n``, ``<id>-t2w``, ``<id>-seg``
BraTS-Toolkit       ``<id>_fla``, ``<id>_t1c``, ``<id>_t1``, ``<id>_t2``, each also as ``<id>_fla_bet`` ...
../shared/data      ``Flair_subtrMeanDivStd``, ``T1c_subtrMeanDivStd``, ``OTMultiClass``, ``brainmask``
==================  ===========================================================================

Trailing qualifiers that say a file was skull-stripped (``bet``, ``brain``, ``stripped``,
``skullstripped``) are dropped before the lookup, so ``<id>_fla_bet`` is the FLAIR. When a
folder holds both a skull-stripped and a raw file for one role (``<id>_fla_bet`` and ``<id>_fla``,
as BraTS-Toolkit writes them), the skull-stripped one is taken and the choice is logged.
Files whose name matches no keyword are ignored; any other two files claiming one role are an
error that lists them.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from asymseg import constants as C
from asymseg.errors import InputError
from asymseg.io.images import READ_EXTENSIONS, image_extension, strip_image_extension

log = logging.getLogger(__name__)

LABEL = "label"
MASK = "mask"

#: Name keyword (lower case, whole token) -> canonical channel name, or LABEL / MASK.
ROLE_KEYWORDS: dict[str, str] = {
    "flair": "flair", "t2f": "flair", "t2flair": "flair",
    "t1c": "t1c", "t1ce": "t1c", "t1gd": "t1c",
    "t1": "t1", "t1n": "t1",
    "t2": "t2", "t2w": "t2",
    "seg": LABEL, "segmentation": LABEL, "label": LABEL, "labels": LABEL, "otmulticlass": LABEL,
    "brainmask": MASK, "mask": MASK,
}


#: Further channel keywords (BraTS-Toolkit), accepted like :data:`ROLE_KEYWORDS`.
EXTRA_KEYWORDS: dict[str, str] = {"fla": "flair"}
#: Trailing name tokens that mark a skull-stripped file; dropped before the keyword lookup.
SKULL_STRIPPED_QUALIFIERS: frozenset[str] = frozenset({"bet", "brain", "stripped", "skullstripped"})


def _lookup(token: str) -> str | None:
    return ROLE_KEYWORDS.get(token) or EXTRA_KEYWORDS.get(token)


def _keywords_for(role: str) -> str:
    return "/".join(k for k, v in ROLE_KEYWORDS.items() if v == role)


def looked_for() -> str:
    """Human text listing the keywords discovery looks for, for error messages."""
    channels = ", ".join(_keywords_for(name) for name in C.CHANNEL_NAMES)
    return (f"channel files named {channels}; label {_keywords_for(LABEL)}; mask {_keywords_for(MASK)}; "
            f"extensions {', '.join(READ_EXTENSIONS)}; BraTS-Toolkit names _fla/_t1c/_t1/_t2, each optionally "
            f"followed by _bet)")


def canonical_channel(name: str) -> str:
    """Canonical channel name for a name or alias (``"T1ce"`` -> ``"t1c"``).

    Raises:
        InputError: not a channel name.
    """
    role = _lookup(name.strip().lower())
    if role is None or role in (LABEL, MASK):
        aliases = "; ".join(_keywords_for(n) for n in C.CHANNEL_NAMES)
        raise InputError(f"unknown channel name {name!r}; expected one of {aliases}")
    return role


def _tokens(path: Path) -> list[str]:
    return [t for t in re.split(r"[-_.\s]+", strip_image_extension(path).lower()) if t]


def _role_tokens(path: Path) -> list[str]:
    """The name's tokens without trailing skull-stripped qualifiers (``x_fla_bet`` -> ``[x, fla]``)."""
    tokens = _tokens(path)
    while len(tokens) > 1 and tokens[-1] in SKULL_STRIPPED_QUALIFIERS:
        tokens.pop()
    return tokens


def is_skull_stripped_name(path: str | os.PathLike[str]) -> bool:
    """Whether the file name ends in a skull-stripped qualifier (``_bet``, ``_brain`` ...)."""
    tokens = _tokens(Path(path))
    return len(tokens) > 1 and tokens[-1] in SKULL_STRIPPED_QUALIFIERS


def role_of(path: str | os.PathLike[str]) -> str | None:
    """The role a file name suggests (a canonical channel name, ``"label"``, ``"mask"``), or None."""
    path = Path(path)
    if image_extension(path) is None:
        return None
    tokens = _role_tokens(path)
    if not tokens or tokens[-1] in SKULL_STRIPPED_QUALIFIERS:
        return None
    return _lookup(tokens[-1]) or _lookup(tokens[0])


@dataclass
class CaseFiles:
    """The files of one case.

    Args:
        case_id: the folder name, or the BraTS id shared by the file names.
        folder: the case folder (None when every file was given explicitly).
        channels: canonical channel name -> file, in ``constants.CHANNEL_NAMES`` order.
        label: the label map, if any.
        mask: the brain mask, if any (nonzero = brain).
    """

    case_id: str
    folder: Path | None
    channels: dict[str, Path]
    label: Path | None = None
    mask: Path | None = None
    #: How each file was found: "discovered" or "given", by role.
    origin: dict[str, str] = field(default_factory=dict)
    #: The channel whose physical space (and original grid) the case is processed in and whose
    #: grid the results are written on; None = the first channel the model takes.
    reference_channel: str | None = None

    @property
    def where(self) -> str:
        """The folder, or the first channel file: what error messages name."""
        if self.folder is not None:
            return str(self.folder)
        first = next(iter(self.channels.values()), None)
        return str(first) if first is not None else self.case_id

    def use_reference_channel(self, name: str | None, role: str = "case") -> None:
        """Set :attr:`reference_channel` (None: the default), refusing a channel the case lacks.

        Raises:
            InputError: the case has no ``name`` channel (``role`` names the case in the message).
        """
        if name is not None and name not in self.channels:
            raise InputError(f"{self.where}: --reference-channel {name}: the {role} has no {name} channel "
                             f"(found: {', '.join(self.channels)})")
        self.reference_channel = name

    def to_dict(self) -> dict[str, object]:
        return {
            "case_id": self.case_id,
            "folder": str(self.folder) if self.folder is not None else None,
            "channels": {k: str(v) for k, v in self.channels.items()},
            "label": str(self.label) if self.label is not None else None,
            "mask": str(self.mask) if self.mask is not None else None,
            "reference_channel": self.reference_channel,
        }


def _check_file(path: str | os.PathLike[str], what: str) -> Path:
    path = Path(path)
    if not path.exists():
        raise InputError(f"{path}: no such {what} file")
    if path.is_dir():
        raise InputError(f"{path}: is a folder, expected a {what} image file")
    return path


def _shared_id(paths: list[Path]) -> str | None:
    """The id before the role keyword when every file shares it (``BraTS-GLI-00000-000``)."""
    ids = set()
    if not paths:
        return None
    for path in paths:
        stem = strip_image_extension(path)
        if is_skull_stripped_name(path):
            stem = re.sub(r"[-_.\s]+[^-_.\s]+$", "", stem)
        match = re.match(r"^(.*?)[-_.\s]+[^-_.\s]+$", stem)
        if not match or _lookup(_role_tokens(path)[-1]) is None:
            return None
        ids.add(match.group(1))
    return ids.pop() if len(ids) == 1 else None


def discover_case(folder: str | os.PathLike[str] | None, *, channels: Mapping[str, str | os.PathLike[str]] | None = None,
                  label: str | os.PathLike[str] | None = None,
                  mask: str | os.PathLike[str] | None = None) -> CaseFiles:
    """Find a case's channel, label and mask files.

    Args:
        folder: the case folder; None when ``channels`` lists every channel file.
        channels: explicit files by channel name or alias (``{"t1ce": path}``); they replace the
            discovered file of the same channel, other discovered channels are kept.
        label: explicit label file (replaces discovery of the label).
        mask: explicit brain mask file (replaces discovery of the mask).

    Returns:
        The :class:`CaseFiles`; channels in ``constants.CHANNEL_NAMES`` order.

    Raises:
        InputError: the folder is missing or not a folder, two files claim one role, an explicit
            file is missing, or no channel was found (the message lists what was looked for).
    """
    explicit = {canonical_channel(name): _check_file(path, f"{canonical_channel(name)} channel")
                for name, path in (channels or {}).items()}
    label_path = _check_file(label, "label") if label is not None else None
    mask_path = _check_file(mask, "mask") if mask is not None else None
    found: dict[str, list[Path]] = {}
    folder_path: Path | None = None
    if folder is not None:
        folder_path = Path(folder)
        if not folder_path.exists():
            raise InputError(f"{folder_path}: no such case folder")
        if not folder_path.is_dir():
            raise InputError(f"{folder_path}: is not a folder (expected a case folder with {looked_for()})")
        for entry in sorted(folder_path.iterdir()):
            if entry.name.startswith(".") or not entry.is_file():
                continue
            role = role_of(entry)
            if role is not None:
                found.setdefault(role, []).append(entry)
    origin: dict[str, str] = {}
    for role, paths in found.items():
        stripped = [p for p in paths if is_skull_stripped_name(p)]
        if len(paths) > 1 and len(stripped) == 1:
            log.info("%s: %s is the skull-stripped %s; %s not used", folder_path, stripped[0].name, role,
                     ", ".join(p.name for p in paths if p is not stripped[0]))
            found[role] = paths = stripped
        overridden = role in explicit or (role == LABEL and label_path) or (role == MASK and mask_path)
        if len(paths) > 1 and not overridden:
            option = {LABEL: "--label PATH", MASK: "--mask PATH"}.get(role, f"--channel {role}=PATH")
            raise InputError(f"{folder_path}: several files look like the {role}: "
                             f"{', '.join(p.name for p in paths)}; pass {option}")
    chosen: dict[str, Path] = {}
    for name in C.CHANNEL_NAMES:
        if name in explicit:
            chosen[name], origin[name] = explicit[name], "given"
        elif name in found:
            chosen[name], origin[name] = found[name][0], "discovered"
    if label_path is None and LABEL in found:
        label_path, origin[LABEL] = found[LABEL][0], "discovered"
    elif label_path is not None:
        origin[LABEL] = "given"
    if mask_path is None and MASK in found:
        mask_path, origin[MASK] = found[MASK][0], "discovered"
    elif mask_path is not None:
        origin[MASK] = "given"
    if not chosen:
        where = folder_path if folder_path is not None else "case"
        raise InputError(f"{where}: no image channels found (looked for {looked_for()})")
    if folder_path is not None:
        case_id = _shared_id([p for r, p in chosen.items() if origin[r] == "discovered"]) or folder_path.resolve().name
    else:
        case_id = _shared_id(list(chosen.values())) or strip_image_extension(next(iter(chosen.values())))
    log.debug("case %s: channels %s, label %s, mask %s", case_id, list(chosen), label_path, mask_path)
    return CaseFiles(case_id=case_id, folder=folder_path, channels=chosen, label=label_path, mask=mask_path,
                     origin=origin)
