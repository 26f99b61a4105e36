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
from typing import Any

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
    """A validated experiment grid. Build with :func:`~asymseg.experiment.loading.load_experiment_config`
    or :func:`~asymseg.experiment.validate.parse_experiment_config`."""

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
