"""Sample data: two BRATS 2015 training cases from the public DeepMedic repository.

Each case has the FLAIR and post-contrast T1 volumes (z-scored inside the brain, constant
negative background) and the expert labels (BRATS 2015: 1 necrosis, 2 oedema, 3 non-enhancing,
4 enhancing; tumour core = 1, 3, 4). Licence CC BY-NC-SA 3.0 (Switzerland); cite Menze et al.,
IEEE TMI 2015. The SHA256 checksums were computed from the files as published.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

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

    def uris(self) -> list[str]:
        return [f"{REPOSITORY_RAW}/{CASES_PATH}/{self.caseId}/{f.fileName}" for f in self.files]

    def localFileNames(self) -> list[str]:
        """Cache file names (unique across cases: SampleData keeps one cache folder)."""
        return [f"{self.caseId}_{f.fileName}" for f in self.files]


def _case(caseId: str, shortName: str, flair: str, t1c: str, labels: str) -> SampleCase:
    return SampleCase(
        caseId=caseId,
        sampleName=f"AsymSeg BraTS {shortName}",
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
