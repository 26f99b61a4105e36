"""Command-line options shared by the commands that read cases or need a target.

``add_case_arguments`` adds ``--case DIR`` (repeatable), ``--cases-from FILE``, ``--channel
NAME=PATH`` (repeatable), ``--label PATH`` and ``--mask PATH``; ``case_files_from_args`` turns them
into :class:`~asymseg.io.CaseFiles`. ``add_target_arguments``/``target_from_args`` do the same for
``--label-convention`` and ``--foreground-labels``. ``check_output_path`` refuses an output that
cannot be created, before any work is done.
"""

from __future__ import annotations

import argparse
import logging
import os
from collections.abc import Iterable
from pathlib import Path

from asymseg import constants as C
from asymseg.errors import InputError
from asymseg.io.discovery import CaseFiles, canonical_channel, discover_case
from asymseg.target import TargetSpec, resolve_target

log = logging.getLogger(__name__)


def _channel_argument(text: str) -> tuple[str, str]:
    name, sep, path = text.partition("=")
    if not sep or not name.strip() or not path.strip():
        raise argparse.ArgumentTypeError(f"expected NAME=PATH (e.g. flair=case1/FLAIR.nii.gz), got {text!r}")
    try:
        return canonical_channel(name), path.strip()
    except InputError as err:
        raise argparse.ArgumentTypeError(str(err)) from err


def _channel_name(text: str) -> str:
    try:
        return canonical_channel(text)
    except InputError as err:
        raise argparse.ArgumentTypeError(str(err)) from err


def parse_label_list(text: str) -> tuple[int, ...]:
    """``"1,3,4"`` -> ``(1, 3, 4)`` (argparse type for ``--foreground-labels``)."""
    try:
        values = tuple(int(part) for part in text.replace(" ", "").split(",") if part)
    except ValueError as err:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers such as 1,3,4, got {text!r}") from err
    if not values or any(v <= 0 for v in values):
        raise argparse.ArgumentTypeError(f"expected positive label values such as 1,3,4, got {text!r}")
    return values


def add_case_arguments(parser: argparse.ArgumentParser, *, multiple: bool = True, positional: bool = False) -> None:
    """Add the case options to ``parser``.

    Args:
        parser: the command's parser.
        multiple: accept several cases (``--case`` repeatable and ``--cases-from``).
        positional: take the case folder as an optional positional ``CASE`` instead of ``--case``
            (single case only; used by ``asymseg info CASE``).
    """
    group = parser.add_argument_group("case files")
    if positional:
        group.add_argument("case", nargs="?", metavar="CASE",
                           help="case folder; files are found by name (flair, t1c/t1ce, t1, t2, seg, brainmask, "
                                "BraTS names)")
    elif multiple:
        group.add_argument("--case", action="append", metavar="DIR", default=None,
                           help="case folder (repeat for several cases); files are found by name")
        group.add_argument("--cases-from", metavar="FILE", default=None,
                           help="text file with one case folder per line (# starts a comment; relative paths "
                                "are relative to the file's folder)")
    else:
        group.add_argument("--case", metavar="DIR", default=None,
                           help="case folder; files are found by name")
    group.add_argument("--channel", action="append", type=_channel_argument, metavar="NAME=PATH", default=None,
                       help="explicit channel file, e.g. flair=FLAIR.nii.gz (repeatable); overrides the file found "
                            "in the single case folder, or forms a case on its own")
    group.add_argument("--label", metavar="PATH", default=None, help="explicit label file (single case)")
    group.add_argument("--mask", metavar="PATH", default=None,
                       help="explicit brain mask file (single case; nonzero = brain); without it the case's "
                            "brainmask file is used, else the mask is derived from the background")
    add_reference_channel_argument(group)
    group.add_argument("--strict", action="store_true",
                       help="refuse a case whose plausibility checks fail (brain mask larger than a brain, "
                            "slices far thicker than the model's, CT-like intensities) instead of warning")


def add_reference_channel_argument(parser: argparse.ArgumentParser | argparse._ArgumentGroup) -> None:
    """``--reference-channel NAME`` (segment, info, finetune, analyze): one text, one meaning."""
    parser.add_argument("--reference-channel", type=_channel_name, metavar="NAME", default=None,
                        help="channel whose physical space and grid each case is processed in and the results are "
                             "written on (default: the first channel the model takes); other channels are "
                             "resampled onto it by their own geometry")


def read_case_list(path: str | Path) -> list[Path]:
    """Case folders listed in a text file, one per line; blank lines and ``#`` comments are skipped.

    Raises:
        InputError: the file cannot be read.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError as err:
        raise InputError(f"{path}: no such case list file") from err
    except (OSError, UnicodeDecodeError) as err:
        raise InputError(f"{path}: cannot read the case list: {err}") from err
    folders = []
    for line in text.splitlines():
        entry = line.split("#", 1)[0].strip()
        if entry:
            folder = Path(entry).expanduser()
            folders.append(folder if folder.is_absolute() else path.parent / folder)
    return folders


def case_files_from_args(args: argparse.Namespace) -> list[CaseFiles]:
    """The cases named by the options of :func:`add_case_arguments`.

    Raises:
        InputError: no case given, per-case options with several cases, a missing folder or file,
            or a discovery problem.
    """
    case = getattr(args, "case", None)
    folders: list[Path] = [Path(c) for c in ([case] if isinstance(case, str) else (case or []))]
    if getattr(args, "cases_from", None):
        listed = read_case_list(args.cases_from)
        if not listed:
            raise InputError(f"{args.cases_from}: the case list names no case folder")
        folders.extend(listed)
    unique: list[Path] = []
    for folder in folders:
        if folder in unique:
            log.warning("case %s is listed twice; using it once", folder)
        else:
            unique.append(folder)
    channel_items = list(getattr(args, "channel", None) or [])
    channels: dict[str, str] = {}
    for name, path in channel_items:
        if name in channels:
            raise InputError(f"--channel {name} is given twice ({channels[name]}, {path})")
        channels[name] = path
    label, mask = getattr(args, "label", None), getattr(args, "mask", None)
    per_case = [opt for opt, value in (("--channel", channels), ("--label", label), ("--mask", mask)) if value]
    if per_case and len(unique) > 1:
        raise InputError(f"{', '.join(per_case)} apply to a single case, but {len(unique)} cases were given")
    if not unique:
        if not channels:
            if label or mask:
                raise InputError("--label/--mask need a case: pass a case folder or the channel files with "
                                 "--channel NAME=PATH")
            raise InputError("no case given: pass a case folder (--case DIR), --cases-from FILE, or "
                             "--channel NAME=PATH")
        found = [discover_case(None, channels=channels, label=label, mask=mask)]
    else:
        found = [discover_case(folder, channels=channels or None, label=label, mask=mask) if index == 0
                 else discover_case(folder) for index, folder in enumerate(unique)]
    reference = getattr(args, "reference_channel", None)
    for files in found:
        files.use_reference_channel(reference)
    return found


def add_target_arguments(parser: argparse.ArgumentParser) -> None:
    """Add ``--label-convention`` and ``--foreground-labels`` (mutually exclusive)."""
    group = parser.add_argument_group("target (what counts as tumour)").add_mutually_exclusive_group()
    group.add_argument("--label-convention", choices=sorted(C.TUMOUR_CORE_LABELS), default=None,
                       help="BraTS label convention giving the tumour core: brats2015 {1,3,4}, brats2017 {1,4}, "
                            "brats2023 {1,3}; without it (and without --foreground-labels) the convention is guessed from "
                            "the label values where that is unambiguous")
    group.add_argument("--foreground-labels", type=parse_label_list, metavar="L1,L2,...", default=None,
                       help="explicit label values that form the foreground, e.g. 1,3,4")


def target_from_args(args: argparse.Namespace, label_values: Iterable[int] | None = None,
                     source: str = "label") -> TargetSpec:
    """The target from ``--label-convention``/``--foreground-labels``, else guessed from ``label_values``.

    Raises:
        InputError: nothing given and the values fit no convention or several that disagree.
    """
    return resolve_target(convention=getattr(args, "label_convention", None),
                          foreground_labels=getattr(args, "foreground_labels", None),
                          label_values=None if label_values is None else list(label_values), source=str(source))


def target_was_guessed(args: argparse.Namespace) -> bool:
    """True when neither ``--label-convention`` nor ``--foreground-labels`` was given."""
    return not getattr(args, "label_convention", None) and not getattr(args, "foreground_labels", None)


def check_output_path(path: Path, option: str, *, folder: bool) -> None:
    """Refuse an output (a file, or a folder with ``folder=True``) that cannot be created, before any
    work is done: a file where the folder itself or one of its parent folders should be.

    Raises:
        InputError: naming the path, the option and the file in the way.
    """
    if folder and path.exists() and not path.is_dir():
        raise InputError(f"{path}: {option} must be a folder, but this is a file")
    for parent in path.parents:
        if parent.exists():
            if not parent.is_dir():
                action = f"cannot create the {option} folder" if folder else f"cannot write {option} here"
                raise InputError(f"{path}: {action}: {parent} is a file, not a folder")
            break


def _same_file(a: Path, b: Path) -> bool:
    """The same file: equal resolved paths, or one inode (hard links, other spellings)."""
    try:
        if a.resolve() == b.resolve():
            return True
        return a.exists() and b.exists() and os.path.samefile(a, b)
    except OSError:
        return False


def refuse_input_overwrite(outputs: Iterable[tuple[Path, str]], inputs: Iterable[tuple[Path, str]]) -> None:
    """Refuse to run when an output file would replace one of the run's input files.

    Args:
        outputs: (path, option) of every file the run will write.
        inputs: (path, what it is) of every file the run reads, e.g. ("a_flair.nii.gz", "the flair
            channel of case a").

    Raises:
        InputError: naming the output, its option and the input it would overwrite.
    """
    inputs = [(Path(p), what) for p, what in inputs if p is not None]
    for path, option in outputs:
        if path is None:
            continue
        for source, what in inputs:
            if _same_file(Path(path), source):
                raise InputError(f"{path}: {option} would overwrite {what} ({source}), an input of this run; "
                                 "choose another output path")


def case_inputs(files: object) -> list[tuple[Path, str]]:
    """(path, description) of every file a case reads (:class:`~asymseg.io.CaseFiles`)."""
    case_id = getattr(files, "case_id", "?")
    out = [(Path(p), f"the {name} channel of case {case_id}") for name, p in getattr(files, "channels", {}).items()]
    for role in ("label", "mask"):
        path = getattr(files, role, None)
        if path is not None:
            out.append((Path(path), f"the {role} of case {case_id}"))
    return out


def _positive_ints(text: str, option: str, count: int) -> tuple[int, ...]:
    parts = [p.strip() for p in text.replace("x", ",").split(",") if p.strip()]
    if len(parts) == 1:
        parts = parts * count
    if len(parts) != count:
        raise InputError(f"{option} {text!r}: expected one number or {count} comma-separated numbers")
    try:
        values = tuple(int(p) for p in parts)
    except ValueError as err:
        raise InputError(f"{option} {text!r}: not an integer") from err
    return values


def parse_size(text: str) -> tuple[int, int, int]:
    """``"48"`` -> (48, 48, 48); ``"240,240,155"`` -> (240, 240, 155) (x, y, z)."""
    return _positive_ints(text, "--size", 3)  # type: ignore[return-value]
