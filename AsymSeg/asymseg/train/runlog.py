"""The training log: one JSON object per line (``train_log.jsonl``) and a CSV table (``train_log.csv``).

JSONL records have a ``kind``: "iteration" (losses of each step type, lr, seconds) or
"validation" (per-case and mean metrics). The CSV has one row per iteration with the validation
means filled in on the iterations where validation ran. Lines are appended and flushed as the run
goes; a checkpoint stores how many lines each file had, and a resumed run first cuts the files
back to that point, so a log never holds iterations that the resumed run repeats.
"""

from __future__ import annotations

import csv
import io
import json
import math
from pathlib import Path
from typing import Any

from asymseg.events import json_safe

JSONL_NAME = "train_log.jsonl"
CSV_NAME = "train_log.csv"
CSV_COLUMNS = ("iteration", "lr", "loss_clean", "loss_adversarial", "loss_mixup", "val_dsc",
               "val_sensitivity", "val_precision", "seconds")


def _truncate_lines(path: Path, lines: int) -> None:
    """Keep the first ``lines`` lines of ``path`` (no-op when it has no more)."""
    if not path.exists():
        return
    with open(path, "rb") as fh:
        data = fh.read()
    complete = data.split(b"\n")[:-1]  # whole lines; a torn last line (no newline) is dropped
    if len(complete) <= lines and (not data or data.endswith(b"\n")):
        return
    keep = b"".join(p + b"\n" for p in complete[:lines])
    with open(path, "wb") as fh:
        fh.write(keep)


def _fmt(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return "" if not math.isfinite(value) else f"{value:.8g}"
    return str(value)


class RunLog:
    """Appends training records to the JSONL and CSV files of a run folder.

    Args:
        folder: the run folder.
        resume_counts: (jsonl lines, csv lines) to cut back to when resuming; None starts anew.
    """

    def __init__(self, folder: Path, resume_counts: tuple[int, int] | None = None) -> None:
        self.jsonl_path = Path(folder) / JSONL_NAME
        self.csv_path = Path(folder) / CSV_NAME
        self.jsonl_path.parent.mkdir(parents=True, exist_ok=True)
        if resume_counts is None:
            self.jsonl_path.write_text("", encoding="utf-8")
            self.csv_path.write_text(",".join(CSV_COLUMNS) + "\n", encoding="utf-8")
            self.jsonl_lines, self.csv_lines = 0, 1
        else:
            _truncate_lines(self.jsonl_path, resume_counts[0])
            _truncate_lines(self.csv_path, resume_counts[1])
            if resume_counts[1] == 0 or not self.csv_path.exists():
                self.csv_path.write_text(",".join(CSV_COLUMNS) + "\n", encoding="utf-8")
                resume_counts = (resume_counts[0], 1)
            if not self.jsonl_path.exists():
                self.jsonl_path.write_text("", encoding="utf-8")
            self.jsonl_lines, self.csv_lines = resume_counts

    @property
    def counts(self) -> tuple[int, int]:
        return self.jsonl_lines, self.csv_lines

    def record(self, kind: str, **fields: Any) -> None:
        """Append one JSONL record ``{"kind": kind, **fields}``."""
        line = json.dumps({"kind": kind, **json_safe(fields)}, allow_nan=False)
        with open(self.jsonl_path, "a", encoding="utf-8") as fh:
            fh.write(line + "\n")
        self.jsonl_lines += 1

    def row(self, **fields: Any) -> None:
        """Append one CSV row (columns :data:`CSV_COLUMNS`; missing ones stay empty)."""
        buffer = io.StringIO()
        csv.writer(buffer, lineterminator="\n").writerow([_fmt(fields.get(c)) for c in CSV_COLUMNS])
        with open(self.csv_path, "a", encoding="utf-8") as fh:
            fh.write(buffer.getvalue())
        self.csv_lines += 1
