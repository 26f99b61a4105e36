"""Validation of experiment config mappings: every problem is one line naming the source and the key."""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from asymseg import constants as C
from asymseg.errors import InputError
from asymseg.experiment.config import ExperimentConfig, PhantomData, training_fields

#: Keys of the ``train`` section the grid sets itself (per cell or from other sections).
GRID_OWNED_TRAIN_KEYS = frozenset({
    "train_cases", "val_cases", "output_model", "run_dir", "technique", "technique_overrides", "seed",
    "device", "base_model", "architecture", "channels", "network", "label_convention", "foreground_labels",
})
TOP_KEYS = frozenset({
    "name", "description", "phantom", "train_cases", "test_cases", "fractions", "train_sizes",
    "techniques", "seeds", "model", "target", "train", "technique_overrides", "evaluate", "analyze",
    "figures", "device", "estimate",
})
PHANTOM_KEYS = frozenset({"train", "test", "size", "channels", "seed", "spacing"})
MODEL_KEYS = frozenset({"architecture", "channels", "network", "base_model"})
TARGET_KEYS = frozenset({"label_convention", "foreground_labels"})
EVALUATE_KEYS = frozenset({"tile"})
ANALYZE_KEYS = frozenset({"max_nonrare", "bins"})
FIGURES_KEYS = frozenset({"logit_cells"})
ESTIMATE_KEYS = frozenset({"seconds_per_update", "seconds_per_case"})
DEVICES = ("auto", "cpu", "cuda")


class ConfigParser:
    """Validates one config mapping; every error names the source and the key."""

    def __init__(self, source: str, base_dir: Path) -> None:
        self.source = source
        self.base_dir = base_dir

    def fail(self, key: str, problem: str) -> InputError:
        return InputError(f"{self.source}: {key}: {problem}")

    # -- helpers ------------------------------------------------------------------------------------
    def mapping(self, data: Any, key: str, allowed: frozenset[str] | None) -> dict[str, Any]:
        if data is None:
            return {}
        if not isinstance(data, Mapping):
            raise self.fail(key, f"expected a mapping, got {type(data).__name__}")
        if allowed is not None:
            unknown = sorted(set(data) - allowed)
            if unknown:
                raise self.fail(f"{key}.{unknown[0]}" if key else unknown[0],
                                f"unknown key; allowed: {', '.join(sorted(allowed))}")
        return dict(data)

    def int_value(self, value: Any, key: str, low: int) -> int:
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise self.fail(key, f"expected an integer >= {low}, got {value!r}")
        return value

    def int_list(self, value: Any, key: str, low: int) -> tuple[int, ...]:
        if not isinstance(value, (list, tuple)) or not value:
            raise self.fail(key, f"expected a non-empty list of integers, got {value!r}")
        items = tuple(self.int_value(v, f"{key}[{i}]", low) for i, v in enumerate(value))
        if len(set(items)) != len(items):
            raise self.fail(key, f"values repeat: {list(items)}")
        return items

    def names(self, value: Any, key: str) -> tuple[str, ...]:
        if not isinstance(value, (list, tuple)) or not value or not all(isinstance(v, str) and v for v in value):
            raise self.fail(key, f"expected a non-empty list of names, got {value!r}")
        if len(set(value)) != len(value):
            raise self.fail(key, f"names repeat: {list(value)}")
        return tuple(value)

    def paths(self, value: Any, key: str) -> tuple[str, ...]:
        names = self.names(value, key)
        out = []
        for name in names:
            path = Path(name).expanduser()
            out.append(str(path if path.is_absolute() else (self.base_dir / path).resolve()))
        return tuple(out)

    # -- sections -----------------------------------------------------------------------------------
    def phantom(self, data: Any) -> PhantomData:
        d = self.mapping(data, "phantom", PHANTOM_KEYS)
        for key in ("train", "test"):
            if key not in d:
                raise self.fail(f"phantom.{key}", "missing (number of cases)")
        train = self.int_value(d["train"], "phantom.train", 1)
        test = self.int_value(d["test"], "phantom.test", 1)
        size = d.get("size", [40, 40, 40])
        if isinstance(size, int) and not isinstance(size, bool):
            size = [size] * 3
        if not isinstance(size, (list, tuple)) or len(size) != 3:
            raise self.fail("phantom.size", f"expected one integer or [x, y, z], got {size!r}")
        size_t = tuple(self.int_value(v, "phantom.size", 16) for v in size)
        channels = self.names(d.get("channels", ["flair", "t1c"]), "phantom.channels")
        bad = [c for c in channels if c not in C.CHANNEL_NAMES]
        if bad:
            raise self.fail("phantom.channels", f"unknown channel {bad[0]!r}; expected names from "
                                                f"{', '.join(C.CHANNEL_NAMES)}")
        seed = self.int_value(d.get("seed", 0), "phantom.seed", 0)
        spacing = d.get("spacing", [1.0, 1.0, 1.0])
        if isinstance(spacing, (int, float)) and not isinstance(spacing, bool):
            spacing = [spacing] * 3
        if (not isinstance(spacing, (list, tuple)) or len(spacing) != 3
                or not all(isinstance(s, (int, float)) and not isinstance(s, bool) and s > 0 for s in spacing)):
            raise self.fail("phantom.spacing", f"expected one positive number or [x, y, z], got {spacing!r}")
        return PhantomData(train, test, size_t, channels, seed, tuple(float(s) for s in spacing))

    def fractions(self, value: Any) -> tuple[float, ...]:
        if not isinstance(value, (list, tuple)) or not value:
            raise self.fail("fractions", f"expected a non-empty list of numbers in (0, 1], got {value!r}")
        out = []
        for i, v in enumerate(value):
            if (isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v)
                    or not 0 < v <= 1):
                raise self.fail(f"fractions[{i}]", f"expected a number in (0, 1], got {v!r}")
            out.append(float(v))
        if out != sorted(out) or len(set(out)) != len(out):
            raise self.fail("fractions", f"expected increasing distinct values, got {out}")
        return tuple(out)

    def techniques(self, value: Any) -> tuple[str, ...]:
        names = self.names(value, "techniques")
        from asymseg.techniques import TECHNIQUES

        for i, name in enumerate(names):
            if name not in TECHNIQUES:
                raise self.fail(f"techniques[{i}]", f"unknown technique {name!r}; expected one of "
                                                    f"{', '.join(sorted(TECHNIQUES))}")
        return names

    def model(self, value: Any) -> dict[str, Any]:
        d = self.mapping(value, "model", MODEL_KEYS)
        if ("base_model" in d) == ("architecture" in d):
            raise self.fail("model", "give either architecture (train from scratch) or base_model (fine-tune)")
        if "base_model" in d and ("channels" in d or "network" in d):
            raise self.fail("model.base_model", "channels and network come from the base model; drop them")
        if "architecture" in d:
            from asymseg.train.config import ARCHITECTURES

            if d["architecture"] not in ARCHITECTURES:
                raise self.fail("model.architecture", f"{d['architecture']!r}; expected one of "
                                                      f"{', '.join(ARCHITECTURES)}")
        if "network" in d:
            self.mapping(d["network"], "model.network", None)
        if "channels" in d:
            d["channels"] = list(self.names(d["channels"], "model.channels"))
        return d

    def parse(self, data: Any) -> ExperimentConfig:
        d = self.mapping(data, "", TOP_KEYS)
        if "name" not in d or not isinstance(d["name"], str) or not d["name"].strip():
            raise self.fail("name", "missing or empty (a short name for the study)")
        has_phantom = d.get("phantom") is not None
        has_cases = bool(d.get("train_cases")) or bool(d.get("test_cases"))
        if has_phantom == has_cases:
            raise self.fail("phantom", "give either phantom (generated cases) or train_cases and test_cases "
                                       "(in the config, or --train-case/--test-case on the command line)")
        phantom = self.phantom(d["phantom"]) if has_phantom else None
        train_cases = test_cases = ()
        if has_cases:
            for key in ("train_cases", "test_cases"):
                if not d.get(key):
                    raise self.fail(key, "missing or empty (list of case folders)")
            train_cases = self.paths(d["train_cases"], "train_cases")
            test_cases = self.paths(d["test_cases"], "test_cases")
            overlap = sorted(set(train_cases) & set(test_cases))
            if overlap:
                raise self.fail("test_cases", f"{overlap[0]} is also a training case")
        if ("fractions" in d) == ("train_sizes" in d):
            raise self.fail("fractions", "give either fractions or train_sizes")
        fractions = self.fractions(d["fractions"]) if "fractions" in d else None
        train_sizes = self.int_list(d["train_sizes"], "train_sizes", 1) if "train_sizes" in d else None
        pool = phantom.train if phantom is not None else len(train_cases)
        if train_sizes is not None:
            if list(train_sizes) != sorted(train_sizes):
                raise self.fail("train_sizes", f"expected increasing values, got {list(train_sizes)}")
            if train_sizes[-1] > pool:
                raise self.fail("train_sizes", f"{train_sizes[-1]} cases requested but the pool has {pool}")
        else:
            counts = [max(1, int(round(f * pool))) for f in fractions or ()]
            if len(set(counts)) != len(counts):
                raise self.fail("fractions", f"fractions {list(fractions or ())} give repeated case counts "
                                             f"{counts} for a pool of {pool}")
        techniques = self.techniques(d.get("techniques"))
        seeds = self.int_list(d.get("seeds", [0]), "seeds", 0)
        model = self.model(d.get("model"))
        if phantom is not None and "architecture" in model and "channels" not in model:
            model["channels"] = list(phantom.channels)
        target = self.mapping(d.get("target"), "target", TARGET_KEYS)
        if len(target) > 1:
            raise self.fail("target", "give either label_convention or foreground_labels")
        if phantom is not None and not target:
            target = {"label_convention": "brats2017"}  # phantoms use BraTS 2017-2021 labels
        train = self.mapping(d.get("train"), "train", None)
        owned = sorted(set(train) & GRID_OWNED_TRAIN_KEYS)
        if owned:
            raise self.fail(f"train.{owned[0]}", "is set by the experiment grid or another section "
                                                 "(model, target, techniques, seeds, device)")
        overrides = self.mapping(d.get("technique_overrides"), "technique_overrides", frozenset(techniques))
        for name, values in overrides.items():
            overrides[name] = self.mapping(values, f"technique_overrides.{name}", None)
        evaluate = self.mapping(d.get("evaluate"), "evaluate", EVALUATE_KEYS)
        if evaluate.get("tile") is not None:
            tile = evaluate["tile"]
            tile = [tile] * 3 if isinstance(tile, int) and not isinstance(tile, bool) else tile
            if not isinstance(tile, (list, tuple)) or len(tile) != 3:
                raise self.fail("evaluate.tile", f"expected one integer or [d, h, w], got {evaluate['tile']!r}")
            evaluate["tile"] = [self.int_value(v, "evaluate.tile", 1) for v in tile]
        analyze = self.mapping(d.get("analyze"), "analyze", ANALYZE_KEYS)
        if analyze.get("max_nonrare") is not None:
            self.int_value(analyze["max_nonrare"], "analyze.max_nonrare", 1)
        if "bins" in analyze:
            self.int_value(analyze["bins"], "analyze.bins", 2)
        figures = self.mapping(d.get("figures"), "figures", FIGURES_KEYS)
        if "logit_cells" in figures:
            figures["logit_cells"] = list(self.names(figures["logit_cells"], "figures.logit_cells"))
        device = d.get("device", "auto")
        if device not in DEVICES:
            raise self.fail("device", f"{device!r}; expected one of {', '.join(DEVICES)}")
        estimate = self.mapping(d.get("estimate"), "estimate", ESTIMATE_KEYS)
        for key, value in estimate.items():
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
                raise self.fail(f"estimate.{key}", f"expected a positive number, got {value!r}")
        description = d.get("description", "")
        if not isinstance(description, str):
            raise self.fail("description", "expected text")
        config = ExperimentConfig(
            name=d["name"].strip(), source=self.source, techniques=techniques, seeds=seeds, fractions=fractions,
            train_sizes=train_sizes, phantom=phantom, train_cases=train_cases, test_cases=test_cases,
            model=model, target=target, train=train, technique_overrides=overrides, evaluate=evaluate,
            analyze=analyze, figures=figures, device=device, estimate=estimate, description=description,
        )
        self.check_network(config)
        self.check_train_section(config)
        return config

    def check_network(self, config: ExperimentConfig) -> None:
        """Build the network once so a bad hyper-parameter is reported now, naming the key."""
        if "architecture" not in config.model:
            return
        from asymseg.nets import build_network

        channels = config.model.get("channels") or []
        try:
            build_network(config.model["architecture"], max(1, len(channels)), 2, **dict(config.model.get("network", {})))
        except (TypeError, ValueError) as err:
            raise self.fail("model.network", " ".join(str(err).split())) from err

    def check_train_section(self, config: ExperimentConfig) -> None:
        """Build one TrainConfig per technique so its own checks run now, not hours into the grid."""
        from asymseg.train.config import TrainConfig

        for technique in config.techniques:
            data = training_fields(config, technique, seed=config.seeds[0], train_cases=["case"],
                                   output_model="model", device="cpu")
            try:
                TrainConfig.from_dict(data, source=self.source).technique_spec()
            except InputError as err:
                message = str(err)
                prefix = f"{self.source}: "
                message = message[len(prefix):] if message.startswith(prefix) else message
                raise InputError(f"{self.source}: train ({technique}): {message}") from err


def parse_experiment_config(data: Mapping[str, Any], *, source: str = "config",
                            base_dir: Path | None = None) -> ExperimentConfig:
    """Validate a config mapping; relative case paths are resolved against ``base_dir`` (default: the
    working folder).

    Raises:
        InputError: one line ``<source>: <key>: <problem>``.
    """
    return ConfigParser(source, base_dir or Path.cwd()).parse(data)
