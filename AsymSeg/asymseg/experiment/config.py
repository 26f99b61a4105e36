"""The experiment configuration: a grid of training-set sizes x techniques x seeds, validated on load.

A config is a JSON (or, with PyYAML, YAML) mapping. Bundled configs are addressed by name
(``smoke``, ``paper-mini``, ``brats2015-pair``); anything else is a file path. Example::

    {
      "name": "my-study",
      "phantom": {"train": 12, "test": 6, "size": [40, 40, 40], "channels": ["flair", "t1c"], "seed": 0},
      "fractions": [0.17, 0.34, 1.0],
      "techniques": ["ce", "a-focal"],
      "seeds": [0, 1],
      "model": {"architecture": "deepmedic",
                "network": {"normal_features": [8, 8, 8, 8], "lowres_features": [8, 8, 8, 8]}},
      "train": {"iterations": 300, "batch_size": 4, "lr": 0.001},
      "technique_overrides": {"a-focal": {"gamma": 2}},
      "analyze": {"max_nonrare": 50000}
    }

Instead of ``phantom``, ``train_cases``/``test_cases`` list case folders (relative to the file);
instead of ``fractions``, ``train_sizes`` gives case counts. Every problem is reported as one
line naming the config file and the key (:mod:`asymseg.experiment.validate`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from asymseg.errors import InputError

#: Fallback cost model for --dry-run when nothing was measured yet (2-core CPU, tiny nets).
DEFAULT_SECONDS_PER_UPDATE = 0.5
DEFAULT_SECONDS_PER_CASE = 1.0


@dataclass(frozen=True)
class PhantomData:
    """Phantom training pool and test set generated for the experiment.

    Args:
        train: number of training-pool cases.
        test: number of test cases (a disjoint set: other seeds).
        size: volume size (x, y, z) in voxels.
        channels: channel names.
        seed: the phantom folder seed; training cases are indices 0..train-1 of it, test cases the
            next ``test`` indices (``asymseg.phantom.writer.case_seed``), so the sets never overlap.
        spacing: voxel spacing (x, y, z) in mm.
    """

    train: int
    test: int
    size: tuple[int, int, int] = (40, 40, 40)
    channels: tuple[str, ...] = ("flair", "t1c")
    seed: int = 0
    spacing: tuple[float, float, float] = (1.0, 1.0, 1.0)

    def to_dict(self) -> dict[str, Any]:
        return {"train": self.train, "test": self.test, "size": list(self.size), "channels": list(self.channels),
                "seed": self.seed, "spacing": list(self.spacing)}


@dataclass(frozen=True)
class ExperimentConfig:
    """A validated experiment grid. Build with :func:`load_experiment_config` or :meth:`from_dict`."""

    name: str
    source: str
    techniques: tuple[str, ...]
    seeds: tuple[int, ...]
    fractions: tuple[float, ...] | None = None
    train_sizes: tuple[int, ...] | None = None
    phantom: PhantomData | None = None
    train_cases: tuple[str, ...] = ()
    test_cases: tuple[str, ...] = ()
    model: Mapping[str, Any] = field(default_factory=dict)
    target: Mapping[str, Any] = field(default_factory=dict)
    train: Mapping[str, Any] = field(default_factory=dict)
    technique_overrides: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    evaluate: Mapping[str, Any] = field(default_factory=dict)
    analyze: Mapping[str, Any] = field(default_factory=dict)
    figures: Mapping[str, Any] = field(default_factory=dict)
    device: str = "auto"
    estimate: Mapping[str, Any] = field(default_factory=dict)
    description: str = ""

    # -- derived ----------------------------------------------------------------------------------
    @property
    def pool_size(self) -> int:
        """Number of cases in the training pool."""
        return self.phantom.train if self.phantom is not None else len(self.train_cases)

    def sizes(self) -> list[tuple[float, int]]:
        """(fraction, number of training cases) per grid row, smallest first."""
        pool = self.pool_size
        if self.train_sizes is not None:
            return [(n / pool, n) for n in self.train_sizes]
        return [(f, max(1, int(round(f * pool)))) for f in (self.fractions or ())]

    @property
    def max_nonrare(self) -> int | None:
        return self.analyze.get("max_nonrare", 50_000)

    @property
    def bins(self) -> int:
        return int(self.analyze.get("bins", 80))

    def to_dict(self) -> dict[str, Any]:
        """The resolved config (paths absolute), as written to ``experiment.json``."""
        return {
            "name": self.name, "description": self.description,
            "phantom": self.phantom.to_dict() if self.phantom else None,
            "train_cases": list(self.train_cases), "test_cases": list(self.test_cases),
            "fractions": list(self.fractions) if self.fractions is not None else None,
            "train_sizes": list(self.train_sizes) if self.train_sizes is not None else None,
            "techniques": list(self.techniques), "seeds": list(self.seeds),
            "model": dict(self.model), "target": dict(self.target), "train": dict(self.train),
            "technique_overrides": {k: dict(v) for k, v in self.technique_overrides.items()},
            "evaluate": dict(self.evaluate), "analyze": dict(self.analyze), "figures": dict(self.figures),
            "device": self.device, "estimate": dict(self.estimate),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], *, source: str = "config",
                  base_dir: Path | None = None) -> ExperimentConfig:
        """Validate a mapping; relative case paths are resolved against ``base_dir``.

        Raises:
            InputError: one line ``<source>: <key>: <problem>``.
        """
        from asymseg.experiment.validate import ConfigParser

        return ConfigParser(source, base_dir or Path.cwd()).parse(data)


def training_fields(config: ExperimentConfig, technique: str, *, seed: int, train_cases: Sequence[str],
                    output_model: str, device: str, run_dir: str | None = None) -> dict[str, Any]:
    """The TrainConfig fields of one grid cell."""
    data: dict[str, Any] = dict(config.train)
    data.update(config.model)
    data.update(config.target)
    data.update(train_cases=list(train_cases), output_model=output_model, technique=technique,
                technique_overrides=dict(config.technique_overrides.get(technique, {})), seed=seed,
                device=device)
    if run_dir is not None:
        data["run_dir"] = run_dir
    return data


# -- reading ---------------------------------------------------------------------------------------
def bundled_configs() -> list[str]:
    """Names of the configs shipped in ``asymseg/configs``."""
    folder = resources.files("asymseg") / "configs"
    if not folder.is_dir():
        return []
    return sorted(p.name.rsplit(".", 1)[0] for p in folder.iterdir()
                  if p.name.endswith((".json", ".yaml", ".yml")))


def _read_mapping(text: str, suffix: str, source: str) -> Any:
    from asymseg.io.mapping_file import parse_mapping

    return parse_mapping(text, suffix, source)


def _with_overrides(data: Any, train_cases: Sequence[str | Path] | None,
                    test_cases: Sequence[str | Path] | None, seeds: Sequence[int] | None) -> Any:
    """The config mapping with its data replaced by case folders, and its seeds by ``seeds``, given on the
    command line (validated with the rest of the config)."""
    if bool(train_cases) != bool(test_cases):
        raise InputError("--train-case and --test-case go together: give both to replace the config's data")
    if not isinstance(data, Mapping) or (not train_cases and seeds is None):
        return data
    out = dict(data)
    if train_cases:
        out = {k: v for k, v in out.items() if k not in ("phantom", "train_cases", "test_cases")}
        out["train_cases"] = [str(Path(p).expanduser().resolve()) for p in train_cases]
        out["test_cases"] = [str(Path(p).expanduser().resolve()) for p in test_cases or ()]
    if seeds is not None:
        out["seeds"] = list(seeds)
    return out


def load_experiment_config(name_or_path: str | Path, *, train_cases: Sequence[str | Path] | None = None,
                           test_cases: Sequence[str | Path] | None = None,
                           seeds: Sequence[int] | None = None) -> ExperimentConfig:
    """A bundled config by name (``smoke``, ``paper-mini``, ``brats2015-pair``) or a JSON/YAML file.

    Args:
        name_or_path: the bundled name or the file.
        train_cases, test_cases: case folders that replace the config's data (phantoms or case
            lists); both or neither.
        seeds: seeds that replace the config's ``seeds`` (cells of seeds the config already had keep
            their ids and hashes, so a finished run is extended, not recomputed).

    Raises:
        InputError: no such file or bundled config, unreadable or invalid content.
    """
    text_name = str(name_or_path)
    path = Path(text_name).expanduser()
    if not path.is_file() and path.suffix == "" and len(path.parts) == 1:
        folder = resources.files("asymseg") / "configs"
        for suffix in (".json", ".yaml", ".yml"):
            candidate = folder / f"{text_name}{suffix}"
            if candidate.is_file():
                source = f"{text_name} (bundled config)"
                data = _read_mapping(candidate.read_text(encoding="utf-8"), suffix, source)
                return ExperimentConfig.from_dict(_with_overrides(data, train_cases, test_cases, seeds),
                                                  source=source, base_dir=Path.cwd())
        raise InputError(f"{text_name}: no such config file or bundled config "
                         f"(bundled: {', '.join(bundled_configs()) or 'none'})")
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError as err:
        raise InputError(f"{path}: no such config file") from err
    except (OSError, UnicodeDecodeError) as err:
        raise InputError(f"{path}: cannot read the config file: {err}") from err
    data = _read_mapping(text, path.suffix.lower(), str(path))
    return ExperimentConfig.from_dict(_with_overrides(data, train_cases, test_cases, seeds), source=str(path),
                                      base_dir=path.resolve().parent)
