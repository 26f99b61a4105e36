"""Sample data: two BRATS 2015 training cases from the public DeepMedic repository.

They are the two cases the starter model was trained on: scores on them are training scores,
optimistic for unseen data. The sample names say so, and :func:`trainedOnNote` tells the panel
when its input is one of a model's training cases. For an unseen case, load your own scan (see
docs/SLICER.md, "Try your own data"): the unlabelled BraTS 2023 case the project tests with is
not redistributed here, its data terms being those of the BraTS 2023 challenge.

Each case has the FLAIR and post-contrast T1 volumes (z-scored inside the brain, constant
negative background) and the expert labels (BRATS 2015: 1 necrosis, 2 oedema, 3 non-enhancing,
4 enhancing; tumour core = 1, 3, 4). Licence CC BY-NC-SA 3.0 (Switzerland); cite Menze et al.,
IEEE TMI 2015. The SHA256 checksums were computed from the files as published.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

CATEGORY = "AsymSeg"
#: The DeepMedic repository at a fixed commit, so the checksums stay valid.
REPOSITORY_RAW = "https://raw.githubusercontent.com/deepmedic/deepmedic/04b6ea41d65e610e930a5d2f0005686b50690864"
CASES_PATH = "examples/dataForExamples/brats2015TrainingData/train"
#: BRATS 2015 tumour-core label values in the sample labels.
TUMOUR_CORE_LABELS = (1, 3, 4)


@dataclass(frozen=True)
class SampleFile:
    """One downloadable file of a sample case."""

    fileName: str
    nodeName: str
    sha256: str
    loadFileType: str = "VolumeFile"

    def checksum(self) -> str:
        """The checksum in SampleData's ``<algo>:<digest>`` form."""
        return f"SHA256:{self.sha256}"


@dataclass(frozen=True)
class SampleCase:
    """A sample case: its folder in the repository and its files."""

    caseId: str
    sampleName: str
    files: tuple[SampleFile, ...]
    shortName: str = ""

    def uris(self) -> list[str]:
        return [f"{REPOSITORY_RAW}/{CASES_PATH}/{self.caseId}/{f.fileName}" for f in self.files]

    def localFileNames(self) -> list[str]:
        """Cache file names (unique across cases: SampleData keeps one cache folder)."""
        return [f"{self.caseId}_{f.fileName}" for f in self.files]


def _case(caseId: str, shortName: str, flair: str, t1c: str, labels: str) -> SampleCase:
    return SampleCase(
        caseId=caseId, shortName=shortName,
        sampleName=f"AsymSeg BraTS {shortName} (a starter-model training case)",
        files=(
            SampleFile("Flair_subtrMeanDivStd.nii.gz", f"{shortName}_flair", flair),
            SampleFile("T1c_subtrMeanDivStd.nii.gz", f"{shortName}_t1c", t1c),
            SampleFile("OTMultiClass.nii.gz", f"{shortName}_labels", labels, "SegmentationFile"),
        ),
    )


SAMPLE_CASES: tuple[SampleCase, ...] = (
    _case("brats_2013_pat0005_1", "pat0005",
          flair="fb0b51dadf56c2768e12338bb7db96ea75ce60a0a0729380f7e4f6d14099e54b",
          t1c="df2f76e615f15b0027056288928885404a62c94f0b38094d4d1be00a9ead1f13",
          labels="77f62400fcdda37238f98c9031c99257c8fa3011694d847b40ba066e4df70b90"),
    _case("brats_2013_pat0006_1", "pat0006",
          flair="3c6941679cd85611dc580addce20f6cc04c5ab2d83713798a04536e7ff36e646",
          t1c="a8e3a767f2fb29803592f436c29bbf58e56c7f5d7ad8ee638177173c6d305435",
          labels="b5a559c904da6597717e5b0616d47b30e6c357a829c5b06f494d0b35d0937e2e"),
)


def registerSampleData(register: Callable[..., object], thumbnailFileName: str | None = None) -> int:
    """Register the sample cases with SampleData.

    Args:
        register: ``SampleData.SampleDataLogic.registerCustomSampleDataSource`` (keyword call).
        thumbnailFileName: the icon shown in the SampleData module.

    Returns:
        The number of cases registered.
    """
    for case in SAMPLE_CASES:
        register(
            category=CATEGORY,
            sampleName=case.sampleName,
            thumbnailFileName=thumbnailFileName,
            uris=case.uris(),
            fileNames=case.localFileNames(),
            nodeNames=[f.nodeName for f in case.files],
            checksums=[f.checksum() for f in case.files],
            loadFileType=[f.loadFileType for f in case.files],
        )
    return len(SAMPLE_CASES)


def trainingCases(card: Mapping[str, Any]) -> list[str]:
    """The case ids a model was trained on, from its card (``provenance.data.train``)."""
    provenance = card.get("provenance") if isinstance(card.get("provenance"), Mapping) else {}
    data = provenance.get("data") if isinstance(provenance.get("data"), Mapping) else {}
    train = data.get("train")
    return [str(c) for c in train] if isinstance(train, list) else []


def trainedOnNote(modelName: str, card: Mapping[str, Any], volumeNames: Iterable[str]) -> str | None:
    """A warning when the input volumes are one of the model's training cases, else None.

    A volume matches a training case when its name contains the case id, or the short name its
    sample data nodes carry (``pat0005_flair`` for ``brats_2013_pat0005_1``).
    """
    names = [n.lower() for n in volumeNames]
    shortNames = {c.caseId: c.shortName for c in SAMPLE_CASES}
    for caseId in trainingCases(card):
        tokens = [t.lower() for t in (caseId, shortNames.get(caseId, "")) if t]
        if any(token in name for token in tokens for name in names):
            return (f"{caseId} is one of the cases {modelName} was trained on: its segmentation and scores are "
                    "training results, better than on a case the model has not seen")
    return None
