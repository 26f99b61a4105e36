"""The result of a logit analysis: numbers per rare class, JSON and PNG output, and the array API."""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import re
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from asymseg.diagnostics.stats import DEFAULT_BINS, QUANTILES, SampleLike, class_statistics
from asymseg.errors import InputError
from asymseg.events import json_safe

log = logging.getLogger(__name__)

#: ``format`` field of analysis.json.
ANALYSIS_FORMAT = "asymseg-logit-analysis"
ANALYSIS_VERSION = 1
ANALYSIS_FILE = "analysis.json"
FIGURE_FILE = "logits.png"
DZ_DEFINITION = ("dz = z_c - max_{k != c} z_k for rare class c (binary: z_fg - z_bg); boundary dz = 0; "
                 "rare = ground truth c, nonrare = ground truth in a non-rare class")


def _write_temporary(path: Path, data: bytes) -> Path:
    """Write ``data`` to a new hidden temporary file beside ``path`` (flushed, mode 0644); return it.

    Raises:
        OSError: naming ``path`` (disk full, file size limit, permissions ...); nothing is left behind.
    """
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as err:
        raise OSError(err.errno, err.strerror, str(path)) from err
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o644)  # mkstemp makes 0600 files; outputs are ordinary files
    except BaseException as err:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(err, OSError) and err.filename is None:
            raise OSError(err.errno, err.strerror, str(path)) from err
        raise
    return Path(tmp)


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to a temporary file beside ``path`` and rename it into place."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _write_temporary(path, data)
    try:
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_all_or_nothing(files: Mapping[Path, bytes]) -> None:
    """Write several files so that either all of them are replaced or none is.

    Every file goes to a temporary name first; only when all are complete are they renamed into
    place. On a failure (disk full, file size limit) the temporary files are removed and the
    destinations keep their previous content, if any.

    Raises:
        OSError: naming the file that could not be written.
    """
    temporaries: list[tuple[Path, Path]] = []
    try:
        for path, data in files.items():
            temporaries.append((_write_temporary(Path(path), data), Path(path)))
        for tmp, path in temporaries:
            os.replace(tmp, path)
    finally:
        for tmp, _ in temporaries:
            tmp.unlink(missing_ok=True)


def safe_name(name: str) -> str:
    """A file-name-safe form of a class name."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("_") or "class"


@dataclass
class AnalysisResult:
    """Numbers of the logit diagnostic for each rare class.

    Attributes:
        classes: class name -> numbers: ``groups`` (per group and side: count, mean, std, min, max,
            quantiles, wrong-side fraction; non-rare totals before/after the cap), ``shift``
            (``rare``/``nonrare``: mean_test - mean_train), ``histogram`` (common ``edges``, per group
            and side ``counts``/``density``/``below``/``above``), ``cases`` (the same per case) and
            ``class_index``.
        settings: max_nonrare, seed, bins, reference and compare groups.
        meta: provenance (model, case folders, device); free-form, JSON-safe.
    """

    classes: dict[str, dict[str, Any]]
    settings: dict[str, Any]
    meta: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """The strict-JSON form written to ``analysis.json`` (no NaN: missing numbers are null)."""
        return json_safe({
            "format": ANALYSIS_FORMAT,
            "version": ANALYSIS_VERSION,
            "decision_variable": DZ_DEFINITION,
            "quantiles_percent": list(QUANTILES),
            "settings": self.settings,
            "meta": self.meta,
            "classes": self.classes,
        })

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], source: str = "analysis") -> AnalysisResult:
        """Read the form written by :meth:`to_dict`.

        Raises:
            InputError: the data is not an analysis of a known version.
        """
        if data.get("format") != ANALYSIS_FORMAT or data.get("version") != ANALYSIS_VERSION:
            raise InputError(f"{source}: not an {ANALYSIS_FORMAT} v{ANALYSIS_VERSION} file")
        return cls(dict(data["classes"]), dict(data.get("settings", {})), dict(data.get("meta", {})))

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> AnalysisResult:
        """Read ``analysis.json`` (or the folder holding it)."""
        path = Path(path)
        if path.is_dir():
            path = path / ANALYSIS_FILE
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as err:
            raise InputError(f"{path}: cannot read analysis: {err}") from err
        return cls.from_dict(data, str(path))

    def shift(self, side: str = "rare", class_name: str | None = None) -> float | None:
        """mean_test(dz) - mean_train(dz) of ``side`` for a class (default: the first rare class)."""
        name = class_name if class_name is not None else next(iter(self.classes))
        return self.classes[name]["shift"][side]

    def figure(self, title: str | None = None):
        """All classes in one figure (see :func:`asymseg.diagnostics.plots.logit_figure`)."""
        from asymseg.diagnostics.plots import logit_figure

        return logit_figure(self.classes, title=title)

    def save(self, out_dir: str | os.PathLike[str], *, title: str | None = None) -> dict[str, Path]:
        """Write ``analysis.json`` and ``logits.png`` (all classes), all or nothing; with several rare
        classes also ``logits_<class>.png`` per class.

        Returns:
            Written paths by role: "json", "figure" and, for several classes, "figure_<class>".
        """
        from asymseg.diagnostics.plots import logit_figure

        out_dir = Path(out_dir)
        figures = {"figure": (FIGURE_FILE, self.classes)}
        for name, numbers in (self.classes.items() if len(self.classes) > 1 else ()):
            figures[f"figure_{name}"] = (f"logits_{safe_name(name)}.png", {name: numbers})
        written: dict[str, Path] = {}
        contents: dict[Path, bytes] = {}
        for role, (filename, classes) in figures.items():
            buffer = io.BytesIO()
            logit_figure(classes, title=title).savefig(buffer, format="png", dpi=110)
            contents[out_dir / filename] = buffer.getvalue()
            written[role] = out_dir / filename
        payload = json.dumps(self.to_dict(), indent=1, allow_nan=False) + "\n"
        contents[out_dir / ANALYSIS_FILE] = payload.encode("utf-8")
        written["json"] = out_dir / ANALYSIS_FILE
        created = not out_dir.exists()
        out_dir.mkdir(parents=True, exist_ok=True)
        try:
            write_all_or_nothing(contents)  # a failure leaves no partial set of outputs
        except BaseException:
            if created:
                with contextlib.suppress(OSError):
                    out_dir.rmdir()
            raise
        return written

    def summary_lines(self) -> list[str]:
        """One human-readable line per class and group, then the shifts."""
        lines = []
        for name, numbers in self.classes.items():
            for group, stats in numbers["groups"].items():
                rare, nonrare = stats["rare"], stats["nonrare"]
                lines.append(
                    f"{name} {group}: rare n={rare['count']} mean {_num(rare['mean'])} "
                    f"wrong side {_pct(rare['wrong_side'])}; non-rare n={nonrare['count']} "
                    f"(of {stats['nonrare_total']}) mean {_num(nonrare['mean'])} "
                    f"wrong side {_pct(nonrare['wrong_side'])}")
            shift = numbers["shift"]
            lines.append(f"{name} shift test - train: rare {_num(shift['rare'])}, "
                         f"non-rare {_num(shift['nonrare'])}")
        return lines


def _num(value: float | None) -> str:
    return "n/a" if value is None else f"{value:+.3f}"


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{100 * value:.2f}%"


def analyze_classes(
    per_class: Mapping[str, Mapping[str, Sequence[SampleLike]]],
    *,
    max_nonrare: int | None = None,
    seed: int = 0,
    bins: int = DEFAULT_BINS,
    reference: str = "train",
    compare: str = "test",
    class_indices: Mapping[str, int] | None = None,
    meta: Mapping[str, Any] | None = None,
) -> AnalysisResult:
    """The logit diagnostic for several rare classes, on dz arrays.

    Args:
        per_class: rare-class name -> group name -> one ``(dz, is_rare)`` or
            :class:`~asymseg.diagnostics.stats.CaseSample` per case.
        max_nonrare: cap on the pooled non-rare voxels of each group and class (None: keep all);
            the cap is split over cases in proportion to their non-rare voxels.
        seed: seeds the subsample (the same seed picks the same voxels).
        bins: histogram bins between common edges.
        reference, compare: the shift is ``mean_compare - mean_reference``.
        class_indices: class name -> class index, recorded in the output.
        meta: provenance recorded as is.

    Returns:
        An :class:`AnalysisResult`.

    Raises:
        ValueError: a bad cap or bin count, or malformed arrays.
    """
    if max_nonrare is not None and max_nonrare < 1:
        raise ValueError(f"max_nonrare must be >= 1 or None, got {max_nonrare}")
    classes: dict[str, dict[str, Any]] = {}
    for position, (name, groups) in enumerate(per_class.items()):
        index = (class_indices or {}).get(name, position + 1)
        rng = np.random.default_rng([int(seed), int(index)])
        numbers = class_statistics(groups, max_nonrare=max_nonrare, rng=rng, bins=bins,
                                   reference=reference, compare=compare)
        classes[name] = {"class_index": int(index), **numbers}
    settings = {"max_nonrare": max_nonrare, "seed": int(seed), "bins": int(bins),
                "reference": reference, "compare": compare}
    return AnalysisResult(classes, settings, dict(meta or {}))


def analyze_logits(
    groups: Mapping[str, Sequence[SampleLike]],
    *,
    class_name: str = "rare",
    max_nonrare: int | None = None,
    seed: int = 0,
    bins: int = DEFAULT_BINS,
    reference: str = "train",
    compare: str = "test",
    meta: Mapping[str, Any] | None = None,
) -> AnalysisResult:
    """The logit diagnostic for one rare class, on dz arrays (pure; no files, no network).

    Args:
        groups: group name ("train", "test") -> one ``(dz (N,), is_rare (N,) bool)`` per case.
        class_name: the name the class is reported under.
        max_nonrare, seed, bins, reference, compare, meta: as in :func:`analyze_classes`.

    Returns:
        An :class:`AnalysisResult` with one class.

    Example:
        >>> import numpy as np
        >>> r = analyze_logits({"train": [(np.full(4, 2.0), np.ones(4, bool))],
        ...                     "test": [(np.array([-1.0, 1.0, 3.0]), np.ones(3, bool))]})
        >>> r.shift("rare"), r.classes["rare"]["groups"]["test"]["rare"]["wrong_side"]
        (-1.0, 0.3333333333333333)
    """
    return analyze_classes({class_name: groups}, max_nonrare=max_nonrare, seed=seed, bins=bins,
                           reference=reference, compare=compare, class_indices={class_name: 1}, meta=meta)
