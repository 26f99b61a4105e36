"""What the AsymSeg and AsymSegTraining panels share: parameter-node wiring, job polling, model lists.

Qt-free: this code only calls methods of the widgets and nodes it is given. The module files keep
every ``self.ui`` widget name, every translated text and every Qt constant, so this module imports
under slicer-core and its tests run without the Slicer application.
"""

from __future__ import annotations

from collections.abc import Sequence

import vtk

from AsymSegLib.models import ModelInfo


def fillModelSelector(selector, modelList: Sequence[ModelInfo], wanted: str, toolTipRole) -> None:
    """Refill a model combo box with its signals blocked; the caller handles the new selection.

    Args:
        selector: the QComboBox.
        modelList: the models, in display order: one item each, titled, with the model's tooltip.
        wanted: the name of the model to select; otherwise the first one (none for an empty list).
        toolTipRole: ``qt.Qt.ToolTipRole``.
    """
    wasBlocked = selector.blockSignals(True)
    selector.clear()
    for model in modelList:
        selector.addItem(model.title)
        selector.setItemData(selector.count - 1, model.tooltip(), toolTipRole)
    names = [m.name for m in modelList]
    selector.setCurrentIndex(names.index(wanted) if wanted in names else (0 if names else -1))
    selector.blockSignals(wasBlocked)


def selectedModel(selector, modelList: Sequence[ModelInfo]) -> ModelInfo | None:
    """The model of the combo box's current item, or None when nothing is selected."""
    index = selector.currentIndex
    return modelList[index] if 0 <= index < len(modelList) else None


class PanelWidgetMixin:
    """The parameter-node wiring and job polling of a module widget that runs engine jobs.

    It goes first in the widget's bases, so that its ``cleanup`` replaces the empty one of
    ``ScriptedLoadableModuleWidget``:
    ``class AsymSegWidget(PanelWidgetMixin, ScriptedLoadableModuleWidget, VTKObservationMixin)``.

    The widget provides ``ui``, ``logic``, ``parent``, the attributes ``_parameterNode``,
    ``_parameterNodeGuiTag``, ``_job`` (None while idle) and ``_timer`` (a QTimer connected to
    :meth:`_onTimer`), and these methods:

    * ``initializeParameterNode()``;
    * ``_checkCanRun(caller=None, event=None)``: enable the Apply/Start button and explain why
      not in its tooltip (it observes the parameter node);
    * ``_showProgress(job)``: show the job's new events;
    * ``_showOutcome(job)``: show the result of the finished job;
    * ``_setRunning(running)``: switch the panel between running and idle.
    """

    def cleanup(self) -> None:
        if self._job is not None:
            self._job.process.kill()
        self.removeObservers()

    def exit(self) -> None:
        if self._parameterNode:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
            self._parameterNodeGuiTag = None
            self.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self._checkCanRun)

    def onSceneEndClose(self, caller, event) -> None:
        if self.parent.isEntered:
            self.initializeParameterNode()

    def setParameterNode(self, inputParameterNode) -> None:
        """Bind the panel's widgets to ``inputParameterNode`` (None: unbind)."""
        if self._parameterNode:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
            self.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self._checkCanRun)
        self._parameterNode = inputParameterNode
        if self._parameterNode:
            self._parameterNodeGuiTag = self._parameterNode.connectGui(self.ui)
            self.addObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self._checkCanRun)
            self._checkCanRun()

    def _onTimer(self) -> None:
        """Show the running job's progress; once it has finished, its outcome, and go idle."""
        job = self._job
        if job is None:
            self._timer.stop()
            return
        self._showProgress(job)
        if not job.finished:
            return
        self._timer.stop()
        self._job = None
        try:
            self._showOutcome(job)
        finally:
            self._setRunning(False)
