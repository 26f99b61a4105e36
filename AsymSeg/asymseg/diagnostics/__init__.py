"""The paper's logit diagnostic (Fig. 2 / Fig. 4): where do unseen rare-class voxels fall?

For each rare class c, the decision variable dz = z_c - max_{k != c} z_k (binary: z_fg - z_bg)
of ground-truth rare and non-rare voxels, on training cases and on unseen cases; its
distributions, the fraction on the wrong side of the boundary dz = 0, and the shift of the means
from train to test. Under overfitting the rare shift is large and negative (METHOD.md).

- :func:`analyze_logits` / :func:`analyze_classes`: the numbers from dz arrays (pure numpy).
- :func:`analyze_model`: runs a model on case folders and analyses its logits.
- :class:`AnalysisResult`: ``.to_dict()``, ``.save(out_dir)`` (analysis.json + PNG figures).
"""

from asymseg.diagnostics.collect import analyze_model, case_samples
from asymseg.diagnostics.result import AnalysisResult, analyze_classes, analyze_logits
from asymseg.diagnostics.stats import CaseSample, allocate_quota, decision_variable, summarize_values

__all__ = [
    "AnalysisResult",
    "CaseSample",
    "allocate_quota",
    "analyze_classes",
    "analyze_logits",
    "analyze_model",
    "case_samples",
    "decision_variable",
    "summarize_values",
]
