"""The metrics table: a vtkMRMLTableNode with one row per metric (name, value, unit)."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import vtk


@dataclass(frozen=True)
class MetricRow:
    """A metric the engine reports (key of its ``metrics`` JSON object), with a title and unit."""

    key: str
    title: str
    unit: str = ""


#: The metrics shown, in order (keys of the engine's ``done`` event ``metrics``).
METRIC_ROWS: tuple[MetricRow, ...] = (
    MetricRow("dsc", "Dice similarity coefficient (DSC)"),
    MetricRow("sensitivity", "Sensitivity"),
    MetricRow("precision", "Precision"),
    MetricRow("specificity", "Specificity"),
    MetricRow("hd95", "Hausdorff distance 95% (HD95)", "mm"),
    MetricRow("volume_prediction_ml", "Volume, prediction", "mL"),
    MetricRow("volume_reference_ml", "Volume, reference", "mL"),
)

COLUMN_METRIC = "Metric"
COLUMN_VALUE = "Value"
COLUMN_UNIT = "Unit"
COLUMN_KEY = "Key"


def _asFloat(value: object) -> float:
    if isinstance(value, bool) or value is None:
        return math.nan
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return math.nan
    return number


def updateMetricsTable(tableNode, metrics: Mapping[str, object]) -> None:
    """Fill ``tableNode`` with the metrics, replacing its content.

    Known metrics (:data:`METRIC_ROWS`) come first, in that order, then any other numeric
    entries. Missing or undefined values (None, e.g. sensitivity with an empty reference) are
    written as NaN, which the table view shows as empty.

    Args:
        tableNode: a vtkMRMLTableNode.
        metrics: the engine's ``metrics`` object (``{"dsc": 0.81, "hd95": 4.1, ...}``).
    """
    rows: list[tuple[str, float, str, str]] = []
    known = {row.key for row in METRIC_ROWS}
    for row in METRIC_ROWS:
        if row.key in metrics:
            rows.append((row.title, _asFloat(metrics[row.key]), row.unit, row.key))
    for key, value in metrics.items():
        if key not in known and not isinstance(value, (dict, list, str)):
            rows.append((key, _asFloat(value), "", key))

    names, values, units, keys = (vtk.vtkStringArray(), vtk.vtkDoubleArray(), vtk.vtkStringArray(),
                                  vtk.vtkStringArray())
    for array, name in ((names, COLUMN_METRIC), (values, COLUMN_VALUE), (units, COLUMN_UNIT), (keys, COLUMN_KEY)):
        array.SetName(name)
    for title, value, unit, key in rows:
        names.InsertNextValue(title)
        values.InsertNextValue(value)
        units.InsertNextValue(unit)
        keys.InsertNextValue(key)

    wasModifying = tableNode.StartModify()
    table = tableNode.GetTable()
    table.Initialize()
    for array in (names, values, units, keys):
        table.AddColumn(array)
    tableNode.SetUseColumnTitleAsColumnHeader(True)
    tableNode.SetColumnTitle(COLUMN_VALUE, COLUMN_VALUE)
    tableNode.SetColumnDescription(COLUMN_KEY, "metric key in the engine's JSON output")
    tableNode.SetAttribute("AsymSeg.Role", "metrics")
    table.Modified()
    tableNode.Modified()
    tableNode.EndModify(wasModifying)


def readMetricsTable(tableNode) -> dict[str, float | None]:
    """The metrics of a table written by :func:`updateMetricsTable` (NaN -> None), keyed by metric key."""
    table = tableNode.GetTable()
    keys = table.GetColumnByName(COLUMN_KEY)
    values = table.GetColumnByName(COLUMN_VALUE)
    if keys is None or values is None:
        raise ValueError(f"{tableNode.GetName()}: not a metrics table "
                         f"(columns {COLUMN_KEY!r}, {COLUMN_VALUE!r} missing)")
    result: dict[str, float | None] = {}
    for row in range(table.GetNumberOfRows()):
        value = values.GetValue(row)
        result[keys.GetValue(row)] = None if math.isnan(value) else value
    return result
