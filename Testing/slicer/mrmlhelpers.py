"""Helpers the Slicer tests share (imported by name: pytest puts this folder on sys.path)."""

from __future__ import annotations

import numpy as np
from slicer import util as sutil


def addVolume(scene, array: np.ndarray, matrix: np.ndarray, name: str = "vol", labelmap: bool = False):
    """A scalar (or labelmap) volume node with display nodes, from a (K, J, I) array and its IJK-to-RAS matrix."""
    node = scene.AddNewNodeByClass("vtkMRMLLabelMapVolumeNode" if labelmap else "vtkMRMLScalarVolumeNode", name)
    sutil.updateVolumeFromArray(node, array)
    node.SetIJKToRASMatrix(sutil.vtkMatrixFromArray(matrix))
    node.CreateDefaultDisplayNodes()
    return node
