"""Constants shared across the engine: label conventions, channel names, exit codes, events."""

from __future__ import annotations

# --- Channels -------------------------------------------------------------------------------
#: Canonical channel (modality) names, in the order models list them by default.
CHANNEL_NAMES: tuple[str, ...] = ("flair", "t1c", "t1", "t2")

# --- BraTS label conventions ----------------------------------------------------------------
#: Source label values that make up the tumour core, per BraTS convention.
#: 2015: 1 necrosis, 2 oedema, 3 non-enhancing, 4 enhancing -> core {1, 3, 4}.
#: 2017-2021: 1 necrosis/non-enhancing, 2 oedema, 4 enhancing -> core {1, 4}.
#: 2023+: 1 necrosis/non-enhancing, 2 oedema, 3 enhancing -> core {1, 3}.
TUMOUR_CORE_LABELS: dict[str, tuple[int, ...]] = {
    "brats2015": (1, 3, 4),
    "brats2017": (1, 4),
    "brats2023": (1, 3),
}
#: Label values each convention may contain.
CONVENTION_VALUES: dict[str, frozenset[int]] = {
    "brats2015": frozenset({0, 1, 2, 3, 4}),
    "brats2017": frozenset({0, 1, 2, 4}),
    "brats2023": frozenset({0, 1, 2, 3}),
}
TUMOUR_CORE = "tumour_core"
BACKGROUND = "background"

# --- Metrics --------------------------------------------------------------------------------
#: HD95 (mm) reported when exactly one of prediction/reference is empty (BraTS cap: the
#: diagonal of a 240x240x155 1 mm volume).
BRATS_HD95_CAP = 373.12866

# --- Numerics -------------------------------------------------------------------------------
#: Stabiliser inside log(q + EPS_LOG) (METHOD.md).
EPS_LOG = 1e-6
#: Smallest standard deviation accepted by z-score normalisation.
EPS_STD = 1e-8
#: Relative tolerance for comparing spacing/origin/direction between co-registered images.
GEOMETRY_TOLERANCE = 1e-4

# --- Plausibility checks of a case (asymseg.io.checks) --------------------------------------
#: Brain-mask volume (ml) above which a skull or neck is probably left in (adult intracranial
#: volumes are about 1,100-1,900 ml; the BraTS cases' masks are 1,300-1,700 ml).
MAX_BRAIN_ML = 2000.0
#: A channel's thickest voxel axis above this multiple of the model's coarsest training spacing
#: is reported (the detail lost between slices cannot be resampled back).
SLICE_THICKNESS_FACTOR = 2.5
#: Channels whose physical boxes overlap by less than this fraction of the smaller box are refused.
MIN_CHANNEL_OVERLAP = 0.5
#: Share of voxels in the Hounsfield range of air and fat (-1100..-500) that marks a CT scan.
CT_AIR_FRACTION = 0.01

# --- Exit codes (documented in the README) --------------------------------------------------
EXIT_OK = 0
EXIT_INTERNAL = 1       # unexpected failure (a bug): traceback with --debug
EXIT_USAGE = 2          # bad input: arguments, files, geometry, labels
EXIT_MODEL = 3          # model file invalid, untrusted or incompatible
EXIT_RESOURCES = 4      # out of memory or disk
EXIT_CANCELLED = 130    # SIGINT/SIGTERM: work stopped cleanly, last good outputs kept

# --- Progress events (JSON lines: {"event": KIND, ...}) -------------------------------------
EVENT_START = "start"
EVENT_PROGRESS = "progress"
EVENT_ITERATION = "iteration"
EVENT_VALIDATION = "validation"
EVENT_CHECKPOINT = "checkpoint"
EVENT_LOG = "log"
EVENT_DONE = "done"
EVENT_CANCELLED = "cancelled"
EVENT_FAILED = "failed"
EVENT_KINDS = frozenset({
    EVENT_START, EVENT_PROGRESS, EVENT_ITERATION, EVENT_VALIDATION, EVENT_CHECKPOINT,
    EVENT_LOG, EVENT_DONE, EVENT_CANCELLED, EVENT_FAILED,
})
