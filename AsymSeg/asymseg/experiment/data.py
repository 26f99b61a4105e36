"""The data of an experiment: generated phantom cases or given case folders."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from asymseg.errors import InputError
from asymseg.events import CancelToken, EventCallback
from asymseg.experiment.config import ExperimentConfig


@dataclass(frozen=True)
class ExperimentData:
    """The training pool and the fixed test set (case folders), and what identifies them."""

    pool: tuple[str, ...]
    test: tuple[str, ...]
    fingerprint: dict[str, Any]

    @staticmethod
    def case_id(folder: str) -> str:
        return Path(folder).name


def _phantom_folder(folder: Path, count: int, first_index: int, config: ExperimentConfig,
                    on_event: EventCallback | None, cancel: CancelToken | None) -> list[str]:
    from asymseg.phantom import read_phantom_manifest, write_phantom_cases
    from asymseg.phantom.writer import case_id_for

    p = config.phantom
    ids = [case_id_for(first_index + i) for i in range(count)]
    settings = {"seed": p.seed, "size_xyz": list(p.size), "spacing_xyz": list(p.spacing), "channels": list(p.channels)}
    if (folder / "phantom.json").is_file():
        manifest = read_phantom_manifest(folder)
        listed = {c["case_id"] for c in manifest["cases"]}
        same = all(manifest.get(k) == v for k, v in settings.items())
        if same and all(i in listed and (folder / i).is_dir() for i in ids):
            return [str(folder / i) for i in ids]
    paths = write_phantom_cases(folder, count, size=p.size, seed=p.seed, channels=p.channels, spacing=p.spacing,
                                first_index=first_index, overwrite=True, on_event=on_event, cancel=cancel)
    return [str(path) for path in paths]


def prepare_data(config: ExperimentConfig, out_dir: Path, *, on_event: EventCallback | None = None,
                 cancel: CancelToken | None = None) -> ExperimentData:
    """Generate (or reuse) the phantom cases, or take the config's case lists.

    Phantom training cases are indices 0..train-1 of the phantom seed, test cases the next ``test``
    indices, so the two sets never share a case.
    """
    if config.phantom is None:
        for folder in (*config.train_cases, *config.test_cases):
            if not Path(folder).is_dir():
                raise InputError(f"{config.source}: {folder}: case folder does not exist")
        fingerprint = {"kind": "cases", "train_cases": list(config.train_cases), "test_cases": list(config.test_cases)}
        return ExperimentData(tuple(config.train_cases), tuple(config.test_cases), fingerprint)
    from asymseg.phantom.generate import GENERATOR_VERSION

    p = config.phantom
    pool = _phantom_folder(out_dir / "data" / "train", p.train, 0, config, on_event, cancel)
    test = _phantom_folder(out_dir / "data" / "test", p.test, p.train, config, on_event, cancel)
    fingerprint = {"kind": "phantom", "generator_version": GENERATOR_VERSION, **p.to_dict()}
    return ExperimentData(tuple(pool), tuple(test), fingerprint)


def expected_data(config: ExperimentConfig, out: Path) -> ExperimentData:
    """The data :func:`prepare_data` gives, named without generating or reading any file."""
    if config.phantom is None:
        return ExperimentData(tuple(config.train_cases), tuple(config.test_cases),
                              {"kind": "cases", "train_cases": list(config.train_cases),
                               "test_cases": list(config.test_cases)})
    from asymseg.phantom.generate import GENERATOR_VERSION
    from asymseg.phantom.writer import case_id_for

    p = config.phantom
    pool = tuple(str(out / "data" / "train" / case_id_for(i)) for i in range(p.train))
    test = tuple(str(out / "data" / "test" / case_id_for(p.train + i)) for i in range(p.test))
    return ExperimentData(pool, test, {"kind": "phantom", "generator_version": GENERATOR_VERSION, **p.to_dict()})
