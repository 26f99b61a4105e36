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
../shared/data      ``Flair_subtrMeanDivStd``, ``T1c_subtrMeanDivStd``, ``OTMultiClass``, ``brainmask``
==================  ===========================================================================

Files whose name matches no keyword are ignored; two files claiming one role are an error.
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


def _keywords_for(role: str) -> str:
    return "/".join(k for k, v in ROLE_KEYWORDS.items() if v == role)


def looked_for() -> str:
    """Human text listing the keywords discovery looks for, for error messages."""
    channels = ", ".join(_keywords_for(name) for name in C.CHANNEL_NAMES)
    return (f"channel files named {channels}; label {_keywords_for(LABEL)}; mask {_keywords_for(MASK)}; "
            f"extensions {', '.join(READ_EXTENSIONS)}")


def canonical_channel(name: str) -> str:
    """Canonical channel name for a name or alias (``"T1ce"`` -> ``"t1c"``).

    Raises:
        InputError: not a channel name.
    """
    role = ROLE_KEYWORDS.get(name.strip().lower())
    if role is None or role in (LABEL, MASK):
        aliases = "; ".join(_keywords_for(n) for n in C.CHANNEL_NAMES)
        raise InputError(f"unknown channel name {name!r}; expected one of {aliases}")
    return role


def _tokens(path: Path) -> list[str]:
    return [t for t in re.split(r"[-_.\s]+", strip_image_extension(path).lower()) if t]


def role_of(path: str | os.PathLike[str]) -> str | None:
    """The role a file name suggests (a canonical channel name, ``"label"``, ``"mask"``), or None."""
    path = Path(path)
    if image_extension(path) is None:
        return None
    tokens = _tokens(path)
    if not tokens:
        return None
    return ROLE_KEYWORDS.get(tokens[-1]) or ROLE_KEYWORDS.get(tokens[0])


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

    @property
    def where(self) -> str:
        """The folder, or the first channel file: what error messages name."""
        if self.folder is not None:
            return str(self.folder)
        first = next(iter(self.channels.values()), None)
        return str(first) if first is not None else self.case_id

    def to_dict(self) -> dict[str, object]:
        return {
            "case_id": self.case_id,
            "folder": str(self.folder) if self.folder is not None else None,
            "channels": {k: str(v) for k, v in self.channels.items()},
            "label": str(self.label) if self.label is not None else None,
            "mask": str(self.mask) if self.mask is not None else None,
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
        match = re.match(r"^(.*?)[-_.\s]+[^-_.\s]+$", stem)
        if not match or ROLE_KEYWORDS.get(_tokens(path)[-1]) is None:
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
