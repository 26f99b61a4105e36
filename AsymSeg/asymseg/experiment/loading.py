"""Reading experiment configs: the bundled ones by name, and JSON/YAML files.

:func:`load_experiment_config` reads the file (:mod:`asymseg.io.mapping_file`: size and YAML-alias
limits), applies the command line's case folders and seeds, and validates the result with
:func:`~asymseg.experiment.validate.parse_experiment_config`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from importlib import resources
from pathlib import Path
from typing import Any

from asymseg.errors import InputError
from asymseg.experiment.config import ExperimentConfig
from asymseg.experiment.validate import parse_experiment_config


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
                return parse_experiment_config(_with_overrides(data, train_cases, test_cases, seeds),
                                               source=source, base_dir=Path.cwd())
        raise InputError(f"{text_name}: no such config file or bundled config "
                         f"(bundled: {', '.join(bundled_configs()) or 'none'})")
    from asymseg.io.mapping_file import read_config_text

    data = _read_mapping(read_config_text(path), path.suffix.lower(), str(path))
    return parse_experiment_config(_with_overrides(data, train_cases, test_cases, seeds), source=str(path),
                                   base_dir=path.resolve().parent)


__all__ = ["bundled_configs", "load_experiment_config"]
