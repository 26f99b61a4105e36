"""AsymSeg engine: brain-tumour segmentation with asymmetric losses for small data.

The engine never imports slicer, qt or vtk. The Slicer modules run it as a subprocess
(``python -m asymseg ...``) and read its JSON-lines progress.

Reference: Z. Li, K. Kamnitsas, B. Glocker, "Overfitting of neural nets under class
imbalance: Analysis and improvements for segmentation", MICCAI 2019.
"""

__version__ = "0.1.0"
