"""Model registry: models bundled with the package plus the user's models folder.

- Bundled models live in ``asymseg/models/<name>/`` (read-only, shipped with the package).
- User models live in ``$ASYMSEG_HOME/models/<name>/`` (default ``~/.asymseg/models``);
  :func:`import_model` puts them there.

Name resolution (:func:`find_model`): an argument that is an existing path, or looks like
one (it contains a path separator or starts with ``.`` or ``~``), is a model directory.
Otherwise it is a name, looked up in both folders. Names are unique by construction:
:func:`import_model` refuses a bundled model's name. If the same name nevertheless exists in
both folders (a folder copied by hand), the name is ambiguous and refused: pass the directory.

Archives (.zip, .tar.gz, .tgz, .tar) are unpacked by hand, never with ``extractall``:
absolute paths, ``..`` components, links and special files are refused before anything is
written, and everything is written inside a staging folder that is renamed into place only
after the model (card, SHA256, tensors) has been verified.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import stat
import tarfile
import tempfile
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any

from asymseg.errors import AsymSegError, InputError, ModelError
from asymseg.modelfile import (
    CARD_FILE,
    PICKLE_SUFFIXES,
    LoadedModel,
    ModelCard,
    model_directory,
    pickle_refusal,
    read_card,
    replace_directory,
    write_card,
)
from asymseg.modelfile import load_model as _load_directory

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)

#: Allowed model names: letters, digits, ".", "_", "-"; starting with a letter or digit.
NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
#: Archive suffixes accepted by import and export.
ARCHIVE_SUFFIXES = (".zip", ".tar.gz", ".tgz", ".tar")
#: Upper bound on the unpacked size of an imported archive.
MAX_ARCHIVE_BYTES = 4 * 1024 ** 3
#: Upper bound on the number of entries of an imported archive.
MAX_ARCHIVE_ENTRIES = 256
BUNDLED = "bundled"
USER = "user"


def bundled_models_dir() -> Path:
    """The folder of models shipped with the package."""
    return Path(__file__).resolve().parent / "models"


def user_models_dir() -> Path:
    """The user's models folder: ``$ASYMSEG_HOME/models``, default ``~/.asymseg/models``."""
    home = os.environ.get("ASYMSEG_HOME")
    base = Path(home).expanduser() if home else Path.home() / ".asymseg"
    return base / "models"


def check_model_name(name: str) -> str:
    """Return ``name`` if it is a valid model name.

    Raises:
        InputError: the name is empty, too long or has other characters than letters,
            digits, ".", "_" and "-".
    """
    if not isinstance(name, str) or not NAME_PATTERN.match(name) or name in (".", ".."):
        raise InputError(f"invalid model name {name!r}: use 1-64 letters, digits, '.', '_' or '-', "
                         "starting with a letter or digit")
    return name


@dataclass(frozen=True)
class ModelInfo:
    """One registry entry; ``error`` says why an entry's card could not be read."""

    name: str
    path: Path
    source: str
    card: ModelCard | None
    error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name, "source": self.source, "path": str(self.path)}
        if self.card is not None:
            card = self.card
            out.update({
                "architecture": card.architecture, "channels": list(card.channels),
                "classes": list(card.target.names), "rare": list(card.target.rare),
                "description": card.description, "created": card.created,
                "technique": _technique_name(card.provenance),
            })
        out["error"] = self.error
        return out


def _technique_name(provenance: Mapping[str, Any]) -> str | None:
    """The preset a model was trained with, as its card's provenance records it (a name or the resolved
    preset with its ``name``), or None."""
    technique = provenance.get("technique") if isinstance(provenance, Mapping) else None
    if isinstance(technique, Mapping):
        technique = technique.get("name")
    return technique if isinstance(technique, str) and technique else None


def _scan(folder: Path, source: str) -> list[ModelInfo]:
    if not folder.is_dir():
        return []
    infos = []
    for entry in sorted(folder.iterdir()):
        if entry.name.startswith(".") or not entry.is_dir() or not (entry / CARD_FILE).is_file():
            continue
        try:
            infos.append(ModelInfo(entry.name, entry, source, read_card(entry)))
        except ModelError as err:
            infos.append(ModelInfo(entry.name, entry, source, None, str(err)))
    return infos


def list_models() -> list[ModelInfo]:
    """Bundled and user models, sorted by name (bundled first for equal names).

    Entries whose card is invalid are listed with ``error`` set, not skipped.
    """
    infos = _scan(bundled_models_dir(), BUNDLED) + _scan(user_models_dir(), USER)
    return sorted(infos, key=lambda i: (i.name, i.source != BUNDLED))


def _looks_like_path(text: str) -> bool:
    return os.sep in text or "/" in text or text.startswith((".", "~")) or text.endswith(ARCHIVE_SUFFIXES)


def find_model(name_or_path: str | os.PathLike) -> Path:
    """The model directory for a path or a registry name (see the module docstring).

    Raises:
        ModelError: not a model directory, a pickle checkpoint, an unknown name (the message
            lists the available names) or a name found in both folders.
    """
    if isinstance(name_or_path, os.PathLike):
        return model_directory(Path(name_or_path).expanduser())
    text = str(name_or_path)
    if _looks_like_path(text) or Path(text).exists():
        return model_directory(Path(text).expanduser())
    found = [folder / text for folder in (bundled_models_dir(), user_models_dir())
             if NAME_PATTERN.match(text) and (folder / text / CARD_FILE).is_file()]
    if len(found) > 1:
        raise ModelError(f"model name {text!r} is both a bundled model ({found[0]}) and a user model "
                         f"({found[1]}); pass the directory instead")
    if found:
        return model_directory(found[0])
    names = sorted({i.name for i in list_models()})
    available = ", ".join(names) if names else "none installed"
    raise ModelError(f"unknown model {text!r}; available: {available} (see asymseg models list), "
                     "or pass a model directory")


def load_model(name_or_path: str | os.PathLike, *, device: str | torch.device = "cpu") -> LoadedModel:
    """Load a model by registry name or directory (:func:`find_model`) into a network in eval mode.

    Raises:
        ModelError: an unknown or ambiguous name, and everything :func:`asymseg.modelfile.load_model`
            refuses (pickle checkpoint, invalid card, SHA256 mismatch, tensors that do not fit).
    """
    return _load_directory(find_model(name_or_path), device=device)


# -- import ---------------------------------------------------------------------------------------
def _member_path(name: str, archive: Path) -> PurePosixPath | None:
    """The relative path of an archive entry; refuses absolute paths and ``..``."""
    text = name.replace("\\", "/")
    if text.startswith("/") or re.match(r"^[A-Za-z]:", text):
        raise ModelError(f"{archive}: entry {name!r} has an absolute path; refusing the archive")
    parts = [p for p in PurePosixPath(text).parts if p not in ("", ".")]
    if ".." in parts:
        raise ModelError(f"{archive}: entry {name!r} points outside the archive folder ('..'); refusing the archive")
    return PurePosixPath(*parts) if parts else None


def _check_unique(archive: Path, entries: list[tuple[str, PurePosixPath | None, bool]]) -> None:
    """Refuse an archive in which two entries unpack to the same path (the second would replace the
    first, or a file would stand where a folder is needed).

    Args:
        entries: (name in the archive, relative path, is a folder) per entry.
    """
    files: dict[PurePosixPath, str] = {}
    folders: set[PurePosixPath] = set()
    for name, rel, is_dir in entries:
        if rel is None:
            continue
        if is_dir:
            folders.add(rel)
            continue
        if rel in files:
            raise ModelError(f"{archive}: entry {name!r} appears twice; refusing the archive")
        files[rel] = name
        folders.update(rel.parents)
    clash = sorted(set(files) & folders)
    if clash:
        raise ModelError(f"{archive}: entry {files[clash[0]]!r} is both a file and a folder; refusing the archive")


def _check_total(archive: Path, count: int, total: int) -> None:
    if count > MAX_ARCHIVE_ENTRIES:
        raise ModelError(f"{archive}: more than {MAX_ARCHIVE_ENTRIES} entries; not a model archive")
    if total > MAX_ARCHIVE_BYTES:
        raise ModelError(f"{archive}: unpacks to more than {MAX_ARCHIVE_BYTES // 1024 ** 3} GiB; refused")


def _write_member(stream, dest: Path, staging: Path, size: int, archive: Path, name: str) -> None:
    target = staging / dest
    if staging.resolve() not in target.resolve().parents:
        raise ModelError(f"{archive}: entry {name!r} resolves outside the target folder; refusing the archive")
    target.parent.mkdir(parents=True, exist_ok=True)
    written = 0
    with open(target, "xb") as out:  # "x": a repeated entry name fails instead of overwriting
        for chunk in iter(lambda: stream.read(1 << 20), b""):
            written += len(chunk)
            if written > size:
                raise ModelError(f"{archive}: entry {name!r} is larger than its header says; refused")
            out.write(chunk)


def _zip_declared_entries(archive: Path) -> int | None:
    """The entry count the zip's end-of-central-directory record declares (None: no record found).

    Read before ``zipfile`` loads the central directory, so an archive declaring a flood of
    entries is refused without building them all in memory. A zip64 archive declares 0xFFFF here.
    """
    with open(archive, "rb") as handle:
        handle.seek(0, os.SEEK_END)
        size = handle.tell()
        tail_size = min(size, 22 + 0xFFFF)  # the record is 22 bytes plus a comment of up to 64 KiB
        handle.seek(size - tail_size)
        tail = handle.read(tail_size)
    at = tail.rfind(b"PK\x05\x06")
    if at < 0 or at + 22 > len(tail):
        return None
    return int.from_bytes(tail[at + 10:at + 12], "little")


def _unpack_zip(archive: Path, staging: Path) -> None:
    declared = _zip_declared_entries(archive)
    if declared is not None:
        _check_total(archive, declared, 0)
    with zipfile.ZipFile(archive) as zf:
        entries = []
        for info in zf.infolist():
            mode = info.external_attr >> 16
            kind = stat.S_IFMT(mode)
            if stat.S_ISLNK(mode):
                raise ModelError(f"{archive}: entry {info.filename!r} is a symbolic link; refusing the archive")
            if kind and not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)):
                raise ModelError(f"{archive}: entry {info.filename!r} is a special file; refusing the archive")
            rel = _member_path(info.filename, archive)
            entries.append((info, rel))
        _check_total(archive, len(entries), sum(i.file_size for i, _ in entries))
        _check_unique(archive, [(i.filename, rel, i.is_dir()) for i, rel in entries])
        for info, rel in entries:
            if rel is None or info.is_dir():
                continue
            with zf.open(info) as stream:
                _write_member(stream, rel, staging, info.file_size, archive, info.filename)


def _unpack_tar(archive: Path, staging: Path) -> None:
    with tarfile.open(archive, "r:*") as tf:
        entries = []
        for m in tf:  # streamed: a bomb of entries is refused at entry MAX_ARCHIVE_ENTRIES + 1
            if len(entries) >= MAX_ARCHIVE_ENTRIES:
                _check_total(archive, len(entries) + 1, 0)
            if m.issym() or m.islnk():
                raise ModelError(f"{archive}: entry {m.name!r} is a {'symbolic' if m.issym() else 'hard'} link; "
                                 "refusing the archive")
            if not (m.isfile() or m.isdir()):
                raise ModelError(f"{archive}: entry {m.name!r} is a special file; refusing the archive")
            entries.append((m, _member_path(m.name, archive)))
        _check_total(archive, len(entries), sum(m.size for m, _ in entries if m.isfile()))
        _check_unique(archive, [(m.name, rel, m.isdir()) for m, rel in entries])
        for m, rel in entries:
            if rel is None or m.isdir():
                continue
            stream = tf.extractfile(m)
            if stream is None:
                raise ModelError(f"{archive}: entry {m.name!r} cannot be read")
            with stream:
                _write_member(stream, rel, staging, m.size, archive, m.name)


def _model_root(folder: Path, source: Path) -> Path:
    """The folder holding model.json: the top of the unpacked archive, or its single subfolder."""
    if (folder / CARD_FILE).is_file():
        return folder
    subdirs = [p for p in folder.iterdir() if p.is_dir()]
    files = [p for p in folder.iterdir() if p.is_file()]
    if len(subdirs) == 1 and not files and (subdirs[0] / CARD_FILE).is_file():
        return subdirs[0]
    pickles = sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in PICKLE_SUFFIXES)
    if pickles:
        raise pickle_refusal(source / pickles[0].relative_to(folder))
    raise ModelError(f"{source}: no {CARD_FILE} at the top of the archive or in a single top folder")


def import_model(source: str | os.PathLike, *, name: str | None = None, overwrite: bool = False) -> Path:
    """Copy a model (directory or archive) into the user's models folder, after verifying it.

    Args:
        source: a model directory, or a .zip / .tar.gz / .tgz / .tar archive holding one
            (at its top or in a single top folder).
        name: the registry name; default the card's name. The card's name is set to it.
        overwrite: replace an existing user model of that name.

    Returns:
        The new model directory.

    Raises:
        ModelError: unsafe archive entries (absolute paths, ``..``, links, special files), an
            invalid card, a SHA256 mismatch, tensors that do not fit, a pickle checkpoint, or
            a name that exists already (or belongs to a bundled model).
        InputError: an invalid name.
    """
    source = Path(source).expanduser()
    if not source.exists():
        raise InputError(f"{source}: no such file or directory")
    dest_root = user_models_dir()
    dest_root.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".import.", suffix=".tmp", dir=dest_root))
    try:
        return _import_staged(source, staging, dest_root, name=name, overwrite=overwrite)
    except AsymSegError as err:
        # Errors found in the unpacked copy name the archive's member, not the staging folder.
        text = str(err).replace(str(staging / "unpacked"), str(source)).replace(str(staging / "model"), str(source))
        if text == str(err):
            raise
        raise type(err)(text) from err
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _import_staged(source: Path, staging: Path, dest_root: Path, *, name: str | None, overwrite: bool) -> Path:
    """Unpack (archives), verify and install ``source`` using the staging folder ``staging``."""
    unpacked = staging / "unpacked"
    unpacked.mkdir()
    if source.is_dir():
        root = model_directory(source)
    elif source.name.lower().endswith(ARCHIVE_SUFFIXES):
        try:
            if source.name.lower().endswith(".zip"):
                _unpack_zip(source, unpacked)
            else:
                _unpack_tar(source, unpacked)
        except (zipfile.BadZipFile, tarfile.TarError, EOFError) as err:
            raise ModelError(f"{source}: unreadable archive: {err}") from err
        root = _model_root(unpacked, source)
    elif source.suffix.lower() in PICKLE_SUFFIXES:
        raise pickle_refusal(source)
    else:
        raise ModelError(f"{source}: expected a model directory or a {', '.join(ARCHIVE_SUFFIXES)} archive")
    card = read_card(root)
    model_name = check_model_name(name if name is not None else card.name)
    if (bundled_models_dir() / model_name).exists():
        raise ModelError(f"{model_name!r} is the name of a bundled model; import under another name (--name)")
    target = dest_root / model_name
    if target.exists() and not overwrite:
        raise ModelError(f"{target}: a user model named {model_name!r} exists already; "
                         "choose another name (--name) or replace it (--overwrite)")
    # Copy exactly the card and the weights, then verify the copy (not the source).
    final = staging / "model"
    final.mkdir()
    shutil.copyfile(root / CARD_FILE, final / CARD_FILE)
    shutil.copyfile(root / card.weights_file, final / card.weights_file)
    if model_name != card.name:
        write_card(final, read_card(final).replace(name=model_name))
    _load_directory(final)
    replace_directory(final, target)
    log.info("imported model %s from %s to %s", model_name, source, target)
    return target


# -- export ---------------------------------------------------------------------------------------
def export_model(name_or_path: str | os.PathLike, out_path: str | os.PathLike, *, overwrite: bool = False) -> Path:
    """Write a model (verified first) as a .zip or .tar.gz archive with one top folder.

    Raises:
        InputError: the output suffix is not .zip/.tar.gz/.tgz, or the file exists.
        ModelError: the model is invalid (card, SHA256, tensors).
    """
    out = Path(out_path).expanduser()
    lower = out.name.lower()
    if not lower.endswith((".zip", ".tar.gz", ".tgz")):
        raise InputError(f"{out}: the archive name must end in .zip or .tar.gz")
    if out.exists() and not overwrite:
        raise InputError(f"{out}: exists already; choose another name or replace it (--overwrite)")
    loaded = load_model(name_or_path)
    directory, card = loaded.path, loaded.card
    folder = directory.name if NAME_PATTERN.match(directory.name) else check_model_name(card.name)
    files = [CARD_FILE, card.weights_file]
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        if lower.endswith(".zip"):
            with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED) as zf:
                for name in files:
                    zf.write(directory / name, f"{folder}/{name}")
        else:
            with tarfile.open(tmp, "w:gz") as tf:
                for name in files:
                    info = tf.gettarinfo(str(directory / name), arcname=f"{folder}/{name}")
                    info.uid = info.gid = 0
                    info.uname = info.gname = ""
                    info.mode = 0o644
                    with open(directory / name, "rb") as handle:
                        tf.addfile(info, handle)
        os.replace(tmp, out)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    log.info("exported model %s to %s", card.name, out)
    return out


__all__ = [
    "ModelInfo", "bundled_models_dir", "check_model_name", "export_model", "find_model", "import_model",
    "list_models", "load_model", "user_models_dir",
]
