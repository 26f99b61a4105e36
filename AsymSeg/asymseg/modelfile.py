"""Model files: a directory with a JSON model card and safetensors weights.

Layout::

    my-model/
        model.json          # the card (format_version 1), validated on load
        model.safetensors   # the weights; their SHA256 is in the card

The card holds everything needed to use the weights: the architecture and its
hyper-parameters, the input channels (names, order, normalisation), the target classes
(names, output values, source labels, which are rare), the provenance (training data,
technique, iterations, base model, validation metrics) and the weights' SHA256. Keys this
version does not know are kept when a card is read and written again.

Loading never unpickles anything: pickle checkpoints (``.pt``, ``.pth``, ``.ckpt``,
``.pkl``), and pickle or zip data in a file named ``model.safetensors``, are refused with a
:class:`~asymseg.errors.ModelError`; the SHA256 is checked before any tensor is parsed.

Example:
    >>> net, card = create_model("deepmedic", ["flair", "t1c"], TargetSpec.tumour_core("brats2017"))
    >>> path = save_model("out/my-model", net, card)           # doctest: +SKIP
    >>> loaded = load_model("out/my-model")                     # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import errno
import hashlib
import json
import logging
import math
import os
import re
import shutil
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from asymseg import jsontext
from asymseg.errors import InputError, ModelError, ResourceError
from asymseg.operating import OperatingPoint
from asymseg.target import TargetSpec

if TYPE_CHECKING:
    import torch

    from asymseg.nets import SegmentationNet

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
SUPPORTED_FORMAT_VERSIONS = frozenset({1})
CARD_FILE = "model.json"
WEIGHTS_FILE = "model.safetensors"
#: Normalisation of a channel when none is given: z-score inside the brain mask.
DEFAULT_NORMALIZATION = "zscore-brain"
#: File suffixes of pickle-based checkpoints (refused).
PICKLE_SUFFIXES = (".pt", ".pth", ".ckpt", ".pkl", ".pickle")
_KNOWN_KEYS = frozenset({"format_version", "name", "description", "created", "architecture", "channels",
                         "target", "provenance", "weights", "operating_point", "spacing",
                         "orientation"})
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
#: Largest model card read, in bytes (cards are a few kilobytes; the starter's is about 20 KB).
MAX_CARD_BYTES = 1_000_000
#: Largest safetensors header accepted (the header lists tensor names, dtypes and offsets).
_MAX_HEADER = 16 * 1024 * 1024


@dataclass(frozen=True)
class ModelCard:
    """The model card (``model.json``).

    Args:
        name: model name (the registry name of an imported model).
        architecture: network architecture (``asymseg.nets.ARCHITECTURES``).
        hparams: the architecture's hyper-parameters (``net.hparams``).
        channels: input channel names, in the network's input order.
        normalization: one normalisation per channel (e.g. "zscore-brain").
        target: the output classes.
        description: free text.
        created: ISO 8601 creation time.
        provenance: training data (case ids), technique, iterations, base model, validation
            metrics, licence note; free-form JSON.
        weights_file: the weights' file name inside the model directory.
        weights_sha256: hex SHA256 of the weights file (set by :func:`save_model`).
        format_version: card format version.
        extra: top-level keys this version does not know, kept as they are.
        operating_point: how dz becomes the mask (:class:`asymseg.operating.OperatingPoint`:
            threshold, post-processing, TTA, and the validation they were chosen on); None =
            the plain argmax.
        spacing: the voxel spacing (mm, x y z) the model was trained at; cases are resampled to it
            in the physical space of their reference channel (:mod:`asymseg.io.resample`). None
            (cards written before it existed) = every case is used at its own spacing.
        orientation: the direction the array axes x, y, z ran in the training data, as 3 letters
            (``"LPS"``: toward Left, Posterior, Superior, ITK's identity direction); cases are
            reoriented to it (axis permutations and flips only). None = cases keep their axes.
    """

    name: str
    architecture: str
    hparams: Mapping[str, Any]
    channels: tuple[str, ...]
    normalization: tuple[str, ...]
    target: TargetSpec
    description: str = ""
    created: str = ""
    provenance: Mapping[str, Any] = field(default_factory=dict)
    weights_file: str = WEIGHTS_FILE
    weights_sha256: str | None = None
    format_version: int = FORMAT_VERSION
    extra: Mapping[str, Any] = field(default_factory=dict)
    operating_point: OperatingPoint | None = None
    spacing: tuple[float, float, float] | None = None
    orientation: str | None = None

    @property
    def in_channels(self) -> int:
        return len(self.channels)

    @property
    def num_classes(self) -> int:
        return self.target.num_classes

    def replace(self, **changes: Any) -> ModelCard:
        """A copy with some fields changed."""
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        """The JSON form (unknown keys from ``extra`` included)."""
        data: dict[str, Any] = dict(self.extra)
        data.update({
            "format_version": self.format_version,
            "name": self.name,
            "description": self.description,
            "created": self.created,
            "architecture": {"name": self.architecture, "hparams": dict(self.hparams)},
            "channels": [{"name": c, "normalization": n} for c, n in zip(self.channels, self.normalization)],
            "target": self.target.to_dict(),
            "provenance": dict(self.provenance),
            "weights": {"file": self.weights_file, "sha256": self.weights_sha256},
        })
        if self.operating_point is not None:
            data["operating_point"] = self.operating_point.to_dict()
        if self.spacing is not None:
            data["spacing"] = list(self.spacing)
        if self.orientation is not None:
            data["orientation"] = self.orientation
        return data

    @classmethod
    def from_dict(cls, data: Any, source: str | os.PathLike = CARD_FILE) -> ModelCard:
        """Validate and build a card.

        Raises:
            ModelError: naming ``source`` and the field: unsupported format_version, unknown
                architecture, no channels, invalid target, bad weights entry.
        """
        from asymseg.nets import ARCHITECTURES

        def fail(where: str, problem: str) -> ModelError:
            return ModelError(f"{source}: {where}: {problem}")

        if not isinstance(data, Mapping):
            raise ModelError(f"{source}: expected a JSON object, got {type(data).__name__}")
        version = data.get("format_version")
        if isinstance(version, bool) or not isinstance(version, int):
            raise fail("format_version", f"expected an integer, got {version!r}")
        if version not in SUPPORTED_FORMAT_VERSIONS:
            newer = " (written by a newer asymseg; upgrade)" if version > max(SUPPORTED_FORMAT_VERSIONS) else ""
            raise fail("format_version", f"{version} is not supported; this asymseg reads "
                       f"{sorted(SUPPORTED_FORMAT_VERSIONS)}{newer}")
        name = data.get("name")
        if not isinstance(name, str) or not name.strip():
            raise fail("name", f"expected a non-empty string, got {name!r}")
        arch = data.get("architecture")
        if not isinstance(arch, Mapping):
            raise fail("architecture", "expected an object {\"name\": ..., \"hparams\": {...}}")
        if arch.get("name") not in ARCHITECTURES:
            raise fail("architecture.name", f"unknown architecture {arch.get('name')!r}; "
                       f"expected one of {list(ARCHITECTURES)}")
        hparams = arch.get("hparams", {})
        if not isinstance(hparams, Mapping):
            raise fail("architecture.hparams", f"expected an object, got {type(hparams).__name__}")
        channels, norms = _parse_channels(data.get("channels"), fail)
        target_data = data.get("target")
        if not isinstance(target_data, Mapping):
            raise fail("target", "expected an object with \"classes\"")
        try:
            target = TargetSpec.from_dict(dict(target_data))
        except (InputError, ValueError) as err:
            raise fail("target", str(err)) from err
        provenance = data.get("provenance", {})
        if not isinstance(provenance, Mapping):
            raise fail("provenance", f"expected an object, got {type(provenance).__name__}")
        weights_file, sha = _parse_weights(data.get("weights", {}) or {}, fail)
        for key in ("description", "created"):
            if not isinstance(data.get(key, ""), str):
                raise fail(key, f"expected a string, got {data[key]!r}")
        point = _parse_operating_point(data.get("operating_point"), fail)
        spacing, orientation = _parse_geometry(data.get("spacing"), data.get("orientation"), fail)
        return cls(
            orientation=orientation,
            name=name, architecture=arch["name"], hparams=dict(hparams), channels=channels, spacing=spacing,
            normalization=norms, target=target, description=data.get("description", ""),
            created=data.get("created", ""), provenance=dict(provenance), weights_file=weights_file,
            weights_sha256=sha, format_version=version,
            extra={k: v for k, v in data.items() if k not in _KNOWN_KEYS}, operating_point=point,
        )


def _parse_weights(weights: Any, fail) -> tuple[str, str | None]:
    """The card's ``weights`` entry: (file name, SHA256 or None)."""
    if not isinstance(weights, Mapping):
        raise fail("weights", "expected an object {\"file\": ..., \"sha256\": ...}")
    weights_file = weights.get("file", WEIGHTS_FILE)
    if (not isinstance(weights_file, str) or not weights_file or weights_file.startswith(".")
            or "/" in weights_file or "\\" in weights_file or not weights_file.endswith(".safetensors")):
        raise fail("weights.file", f"expected a plain *.safetensors file name, got {weights_file!r}")
    sha = weights.get("sha256")
    if sha is not None and (not isinstance(sha, str) or not _SHA256.match(sha)):
        raise fail("weights.sha256", f"expected 64 lowercase hex digits, got {sha!r}")
    return weights_file, sha


def _parse_operating_point(value: Any, fail) -> OperatingPoint | None:
    if value is None:
        return None
    try:
        return OperatingPoint.from_dict(value)
    except InputError as err:
        raise fail("operating_point", str(err)) from err


def _parse_geometry(spacing: Any, orientation: Any, fail) -> tuple[tuple[float, ...] | None, str | None]:
    """The card's training ``spacing`` (three positive mm) and ``orientation`` (e.g. "LPS"), each optional."""
    if spacing is not None:
        if (not isinstance(spacing, list) or len(spacing) != 3
                or not all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and v > 0
                           for v in spacing)):
            raise fail("spacing", f"expected three positive numbers (mm, x y z), got {spacing!r}")
        spacing = tuple(float(v) for v in spacing)
    if orientation is not None:
        from asymseg.io.resample import check_orientation

        given = orientation
        try:
            orientation = check_orientation(orientation) if isinstance(orientation, str) else None
        except ValueError as err:
            raise fail("orientation", str(err)) from err
        if orientation is None:
            raise fail("orientation", f"expected a 3-letter code such as \"LPS\", got {given!r}")
    return spacing, orientation


def _parse_channels(value: Any, fail) -> tuple[tuple[str, ...], tuple[str, ...]]:
    if not isinstance(value, list) or not value:
        raise fail("channels", "expected a non-empty list of {\"name\": ..., \"normalization\": ...}")
    names, norms = [], []
    for i, entry in enumerate(value):
        if isinstance(entry, str):
            entry = {"name": entry}
        if not isinstance(entry, Mapping):
            raise fail(f"channels[{i}]", f"expected an object, got {entry!r}")
        name, norm = entry.get("name"), entry.get("normalization", DEFAULT_NORMALIZATION)
        if not isinstance(name, str) or not name.strip():
            raise fail(f"channels[{i}].name", f"expected a non-empty string, got {name!r}")
        if not isinstance(norm, str) or not norm.strip():
            raise fail(f"channels[{i}].normalization", f"expected a non-empty string, got {norm!r}")
        names.append(name)
        norms.append(norm)
    if len(set(names)) != len(names):
        raise fail("channels", f"channel names repeat: {names}")
    return tuple(names), tuple(norms)


@dataclass(frozen=True)
class LoadedModel:
    """A network in eval mode with its card and directory."""

    net: SegmentationNet
    card: ModelCard
    path: Path


# -- reading --------------------------------------------------------------------------------------
def pickle_refusal(path: Path) -> ModelError:
    """The error for a pickle checkpoint."""
    return ModelError(
        f"{path}: pickle checkpoints are refused (they can run code); convert to safetensors with "
        "safetensors.torch.save_file(state_dict, 'model.safetensors') in a trusted environment and "
        "add a model.json (see asymseg models create)")


def _is_pickle_name(path: Path) -> bool:
    return path.suffix.lower() in PICKLE_SUFFIXES


def model_directory(path: str | os.PathLike) -> Path:
    """Check that ``path`` is a model directory and return it.

    Raises:
        ModelError: a pickle checkpoint (file, or a directory holding only such files), an
            archive (import it first), or a directory without model.json.
    """
    path = Path(path)
    if path.is_file():
        if _is_pickle_name(path):
            raise pickle_refusal(path)
        if path.name == CARD_FILE:
            return path.parent
        if path.name.endswith((".zip", ".tar.gz", ".tgz", ".tar")):
            raise ModelError(f"{path}: this is an archive; import it first with: asymseg models import {path}")
        raise ModelError(f"{path}: expected a model directory ({CARD_FILE} + {WEIGHTS_FILE})")
    if not path.is_dir():
        raise ModelError(f"{path}: no such model directory")
    if not (path / CARD_FILE).is_file():
        pickles = sorted(p for p in path.iterdir() if p.is_file() and _is_pickle_name(p))
        if pickles:
            raise pickle_refusal(pickles[0])
        raise ModelError(f"{path}: not a model directory (no {CARD_FILE})")
    return path


def read_card(path: str | os.PathLike) -> ModelCard:
    """Read and validate the card of a model directory (or a model.json path)."""
    directory = model_directory(path)
    card_path = directory / CARD_FILE
    try:
        size = card_path.stat().st_size
    except OSError as err:
        raise ModelError(f"{card_path}: cannot read the card ({err.strerror or err})") from err
    if size > MAX_CARD_BYTES:
        raise ModelError(f"{card_path}: the card is {size:,} bytes, above the limit of {MAX_CARD_BYTES:,} "
                         "(a card is a small JSON description)")
    try:
        text = card_path.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise ModelError(f"{card_path}: not UTF-8 text ({err.reason})") from err
    try:
        data = jsontext.loads(text)
    except json.JSONDecodeError as err:
        raise ModelError(f"{card_path}: invalid JSON at line {err.lineno} column {err.colno}: {err.msg}") from err
    except ValueError as err:
        raise ModelError(f"{card_path}: invalid card: {err}") from err
    return ModelCard.from_dict(data, source=card_path)


def sha256_file(path: str | os.PathLike) -> str:
    """Hex SHA256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def check_safetensors_bytes(data: bytes, path: Path) -> None:
    """Refuse pickle/zip data and anything that does not start like a safetensors file.

    Pickles of protocol 2+ start with 0x80, torch.save's zip container with ``PK``; older
    pickle protocols are text ending in the STOP opcode ``.``.
    """
    if data[:2] in (b"\x80\x02", b"\x80\x03", b"\x80\x04", b"\x80\x05") or data[:4] == b"PK\x03\x04":
        raise pickle_refusal(path)
    header = int.from_bytes(data[:8], "little") if len(data) >= 10 else -1
    if not 0 < header <= min(_MAX_HEADER, len(data) - 8) or data[8:9] != b"{":
        if data.rstrip()[-1:] == b".":
            raise pickle_refusal(path)
        raise ModelError(f"{path}: not a safetensors file (bad header)")


def read_weights(directory: Path, card: ModelCard) -> dict[str, torch.Tensor]:
    """Read the weights file after checking its SHA256 against the card."""
    import safetensors.torch

    weights = directory / card.weights_file
    if not weights.is_file():
        raise ModelError(f"{weights}: the weights file named in {CARD_FILE} is missing")
    if card.weights_sha256 is None:
        raise ModelError(f"{directory / CARD_FILE}: weights.sha256 is missing; refusing unverified weights")
    size = weights.stat().st_size
    limit = 8 * max_parameters() + _MAX_HEADER
    if size > limit:
        raise ModelError(f"{weights}: {size:,} bytes, more than a network within the parameter limit can hold "
                         f"({limit:,}; set {MAX_PARAMETERS_ENV} to allow more)")
    data = weights.read_bytes()
    check_safetensors_bytes(data, weights)
    actual = hashlib.sha256(data).hexdigest()
    if actual != card.weights_sha256:
        raise ModelError(f"{weights}: SHA256 mismatch: {CARD_FILE} expects {card.weights_sha256[:16]}..., "
                         f"the file has {actual[:16]}... (corrupted or modified)")
    try:
        return safetensors.torch.load(data)
    except Exception as err:  # safetensors raises its own SafetensorError and others
        raise ModelError(f"{weights}: unreadable safetensors data: {err}") from err


#: Largest network a card may describe, in parameters (the original DeepMedic has 0.6 M, the
#: TMI DeepMedic 2 M), unless ``ASYMSEG_MAX_PARAMETERS`` says more.
DEFAULT_MAX_PARAMETERS = 100_000_000
MAX_PARAMETERS_ENV = "ASYMSEG_MAX_PARAMETERS"


def max_parameters() -> int:
    """The parameter cap for networks built from cards (``ASYMSEG_MAX_PARAMETERS`` or the default)."""
    text = os.environ.get(MAX_PARAMETERS_ENV, "").strip()
    if not text:
        return DEFAULT_MAX_PARAMETERS
    if not text.isdigit() or int(text) < 1:
        raise InputError(f"{MAX_PARAMETERS_ENV}={text[:40]!r}: expected a positive whole number of parameters")
    return int(text)


def build_from_card(card: ModelCard, source: Path | str = CARD_FILE) -> SegmentationNet:
    """An untrained network with the card's architecture, channels and classes.

    The network is first built on PyTorch's "meta" device (shapes only, no memory) to count its
    parameters; a card describing more than :func:`max_parameters` is refused before anything
    is allocated.

    Raises:
        ModelError: invalid hyper-parameters, or a network above the parameter cap.
    """
    import torch

    from asymseg.nets import build_network

    try:
        with torch.device("meta"):
            probe = build_network(card.architecture, card.in_channels, card.num_classes, **dict(card.hparams))
        count = sum(p.numel() for p in probe.parameters())
        del probe
        limit = max_parameters()
        if count > limit:
            raise ModelError(f"{source}: architecture.hparams describe a network of {count:,} parameters, above the "
                             f"limit of {limit:,} (set {MAX_PARAMETERS_ENV} to allow more)")
        return build_network(card.architecture, card.in_channels, card.num_classes, **dict(card.hparams))
    except (TypeError, ValueError, OverflowError, RuntimeError) as err:
        raise ModelError(f"{source}: architecture.hparams: {' '.join(str(err).split())[:300]}") from err


def load_model(path: str | os.PathLike, *, device: str | torch.device = "cpu") -> LoadedModel:
    """Load a model directory into a network in eval mode (by name: :func:`asymseg.registry.load_model`).

    Args:
        path: a model directory or its model.json.
        device: where to put the network.

    Returns:
        ``LoadedModel(net, card, path)``.

    Raises:
        ModelError: pickle checkpoint, invalid card, SHA256 mismatch, missing or extra
            tensors, or shapes that do not fit the architecture.
    """
    folder = Path(path).expanduser()
    if not folder.exists() and len(folder.parts) == 1:
        raise ModelError(f"{path}: no such model folder (to load a model by name, use asymseg.registry.load_model)")
    directory = model_directory(folder)
    card = read_card(directory)
    tensors = read_weights(directory, card)
    card_path = directory / CARD_FILE
    net = build_from_card(card, card_path)
    expected = net.state_dict()
    missing = sorted(set(expected) - set(tensors))
    extra = sorted(set(tensors) - set(expected))
    where = f"{directory / card.weights_file}"
    if missing or extra:
        parts = []
        if missing:
            parts.append(f"missing {len(missing)} tensor(s) ({', '.join(missing[:4])}{', ...' if len(missing) > 4 else ''})")
        if extra:
            parts.append(f"{len(extra)} unexpected tensor(s) ({', '.join(extra[:4])}{', ...' if len(extra) > 4 else ''})")
        raise ModelError(f"{where}: does not fit {card.architecture} with {card.in_channels} channel(s) and "
                         f"{card.num_classes} classes: {'; '.join(parts)}")
    for key, ref in expected.items():
        if tuple(tensors[key].shape) != tuple(ref.shape):
            raise ModelError(f"{where}: tensor {key} has shape {tuple(tensors[key].shape)}, the architecture "
                             f"needs {tuple(ref.shape)}")
        if tensors[key].is_floating_point() != ref.is_floating_point():
            raise ModelError(f"{where}: tensor {key} has dtype {tensors[key].dtype}, expected {ref.dtype}")
    net.load_state_dict({k: v.to(expected[k].dtype) for k, v in tensors.items()}, strict=True)
    net.eval()
    try:
        net.to(device)
    except (RuntimeError, AssertionError) as err:
        raise InputError(f"device {device!r} is not usable: {err}") from err
    log.debug("loaded %s (%s, %d channel(s), %d classes) from %s", card.name, card.architecture,
              card.in_channels, card.num_classes, directory)
    return LoadedModel(net=net, card=card, path=directory)


# -- writing --------------------------------------------------------------------------------------
def now_iso() -> str:
    """The current UTC time, ISO 8601 to the second."""
    return _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat()


def write_card(directory: Path, card: ModelCard) -> None:
    """Write model.json atomically (temp file + rename)."""
    from asymseg.events import json_safe

    text = json.dumps(json_safe(card.to_dict()), indent=2, allow_nan=False) + "\n"
    tmp = directory / f".{CARD_FILE}.tmp"
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, directory / CARD_FILE)


def save_model(directory: str | os.PathLike, net: SegmentationNet, card: ModelCard, *,
               overwrite: bool = False) -> Path:
    """Write a model directory atomically: a temp directory beside it, then a rename.

    The card's architecture and hparams are taken from ``net``; the weights' SHA256 and (when
    empty) the creation time are filled in.

    Args:
        directory: the model directory to create.
        net: the network (any device, any memory format).
        card: its card (channels and target must fit the network).
        overwrite: replace an existing model directory.

    Returns:
        The model directory.

    Raises:
        ModelError: the directory exists (without ``overwrite``, or it is not a model
            directory), or the card does not fit the network.
    """
    directory = Path(directory)
    if card.in_channels != net.in_channels or card.num_classes != net.num_classes:
        raise ModelError(f"{directory}: the card has {card.in_channels} channel(s) and {card.num_classes} classes, "
                         f"the network {net.in_channels} and {net.num_classes}")
    if directory.exists():
        if not overwrite:
            raise ModelError(f"{directory}: already exists; choose another directory or replace it (--overwrite)")
        if not directory.is_dir() or (any(directory.iterdir()) and not (directory / CARD_FILE).is_file()):
            raise ModelError(f"{directory}: exists and is not a model directory; refusing to replace it")
    directory.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{directory.name}.", suffix=".tmp", dir=directory.parent))
    try:
        state = {k: v.detach().to("cpu").contiguous() for k, v in net.state_dict().items()}
        write_safetensors(state, tmp / WEIGHTS_FILE, metadata={"format": "pt", "asymseg_format_version": "1"},
                          shown_as=directory / WEIGHTS_FILE)
        card = card.replace(architecture=net.architecture, hparams=dict(net.hparams), weights_file=WEIGHTS_FILE,
                            weights_sha256=sha256_file(tmp / WEIGHTS_FILE), format_version=FORMAT_VERSION,
                            created=card.created or now_iso())
        write_card(tmp, card)
        os.chmod(tmp, 0o755)  # mkdtemp makes a private (0700) folder; a model folder is an ordinary one
        replace_directory(tmp, directory)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    log.debug("saved model %s to %s", card.name, directory)
    return directory


_OS_ERROR = re.compile(r"\(os error (\d+)\)")
_RESOURCE_ERRNOS = frozenset({errno.ENOSPC, errno.EFBIG, errno.EDQUOT})


def write_safetensors(tensors: Mapping[str, torch.Tensor], path: str | os.PathLike, *,
                      metadata: Mapping[str, str] | None = None, shown_as: str | os.PathLike | None = None) -> None:
    """``safetensors.torch.save_file`` with its I/O failures turned into errors that name the file.

    safetensors reports a full disk or a file size limit as a ``SafetensorError`` whose text ends in
    ``(os error 28)``; the CLI would call that an internal error.

    Args:
        tensors: name -> CPU tensor (contiguous).
        path: the file to write.
        metadata: string metadata stored in the header.
        shown_as: the path error messages name (e.g. the final path of a file written under a
            temporary name); default ``path``.

    Raises:
        ResourceError: out of disk space, over the file size limit or the disk quota.
        OSError: any other I/O error, naming the file.
    """
    from safetensors import SafetensorError
    from safetensors.torch import save_file

    try:
        save_file(dict(tensors), str(path), metadata=dict(metadata) if metadata is not None else None)
        os.chmod(path, 0o644)  # safetensors creates 0600 files
    except SafetensorError as err:
        Path(path).unlink(missing_ok=True)
        match = _OS_ERROR.search(str(err))
        if match is None:
            raise
        code = int(match.group(1))
        shown = shown_as if shown_as is not None else path
        if code in _RESOURCE_ERRNOS:
            raise ResourceError(f"{shown}: cannot write: {os.strerror(code)} (out of disk space or over the "
                                "file size limit)") from err
        raise OSError(code, os.strerror(code), str(shown)) from err


def replace_directory(new: Path, target: Path) -> None:
    """Rename ``new`` to ``target``; an existing ``target`` is moved aside first, then removed."""
    if not target.exists():
        os.rename(new, target)
        return
    old = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".old", dir=target.parent))
    os.rename(target, old / target.name)
    try:
        os.rename(new, target)
    except BaseException:
        os.rename(old / target.name, target)
        raise
    finally:
        shutil.rmtree(old, ignore_errors=True)


def create_model(architecture: str, channels: Sequence[str], target: TargetSpec, *, seed: int = 0,
                 name: str = "untrained", description: str = "",
                 normalization: str | Sequence[str] = DEFAULT_NORMALIZATION,
                 **hparams: Any) -> tuple[SegmentationNet, ModelCard]:
    """An untrained network and its card (weights initialised from ``seed``).

    Args:
        architecture: "deepmedic", "deepmedic-tmi" or "unet".
        channels: input channel names, in order (e.g. ["flair", "t1c"]).
        target: the output classes.
        seed: seed of the initial weights.
        name: the card's name.
        description: the card's description.
        normalization: one normalisation for all channels, or one per channel.
        **hparams: architecture hyper-parameters overriding the defaults.

    Raises:
        InputError: unknown architecture, bad hyper-parameters or channels.
    """
    import torch

    from asymseg.nets import ARCHITECTURES, build_network

    channels = tuple(str(c) for c in channels)
    if not channels or any(not c.strip() for c in channels) or len(set(channels)) != len(channels):
        raise InputError(f"channels must be distinct non-empty names, got {list(channels)}")
    norms = (normalization,) * len(channels) if isinstance(normalization, str) else tuple(normalization)
    if len(norms) != len(channels):
        raise InputError(f"{len(norms)} normalisations given for {len(channels)} channels")
    if architecture not in ARCHITECTURES:
        raise InputError(f"unknown architecture {architecture!r}; expected one of {list(ARCHITECTURES)}")
    try:
        net = build_network(architecture, len(channels), target.num_classes,
                            generator=torch.Generator().manual_seed(int(seed)), **hparams)
    except (TypeError, ValueError) as err:
        raise InputError(f"{architecture}: {err}") from err
    card = ModelCard(
        name=name, architecture=architecture, hparams=dict(net.hparams), channels=channels, normalization=norms,
        target=target, description=description, created=now_iso(),
        provenance={"data": [], "technique": None, "iterations": 0, "base_model": None, "init_seed": int(seed)},
    )
    return net, card


__all__ = [
    "CARD_FILE", "DEFAULT_NORMALIZATION", "FORMAT_VERSION", "LoadedModel", "ModelCard", "WEIGHTS_FILE",
    "create_model", "load_model", "model_directory", "read_card", "save_model", "sha256_file", "write_safetensors",
]
