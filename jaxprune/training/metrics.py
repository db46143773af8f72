"""Run outputs on disk: ``metrics.jsonl`` (one record per log/eval step), ``summary.json``.

Each line of ``metrics.jsonl`` has ``step``, ``phase`` and either train metrics
(``train_loss``, ``train_accuracy``, ``learning_rate``) or eval metrics (``test_loss``,
``test_accuracy``). On resume, lines newer than the restored checkpoint are dropped first, so
a resumed run's file equals an uninterrupted run's.
"""

import json
import math
from pathlib import Path
from typing import Any


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if hasattr(value, "item") and getattr(value, "ndim", None) == 0:
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return value


class MetricsWriter:
    """Appends metric records to ``workdir/metrics.jsonl``.

    Args:
      workdir: run directory (created if missing).
    """

    def __init__(self, workdir: str | Path):
        self.path = Path(workdir) / "metrics.jsonl"
        self.path.parent.mkdir(parents=True, exist_ok=True)

    def write(self, step: int, phase: str, **metrics: Any) -> None:
        """Appends one record ``{'step': step, 'phase': phase, **metrics}``."""
        record = _jsonable({"step": int(step), "phase": phase, **metrics})
        with self.path.open("a") as f:
            f.write(json.dumps(record) + "\n")

    def read(self) -> list[dict[str, Any]]:
        """All records written so far (an empty list when there is no file)."""
        if not self.path.exists():
            return []
        with self.path.open() as f:
            return [json.loads(line) for line in f if line.strip()]

    def truncate_after(self, step: int) -> None:
        """Drops records with ``step > step`` (work redone after resuming from ``step``)."""
        kept = [r for r in self.read() if r["step"] <= step]
        with self.path.open("w") as f:
            f.writelines(json.dumps(r) + "\n" for r in kept)


def write_summary(workdir: str | Path, summary: dict[str, Any]) -> Path:
    """Writes ``summary`` to ``workdir/summary.json`` and returns the path."""
    path = Path(workdir) / "summary.json"
    path.write_text(json.dumps(_jsonable(summary), indent=2) + "\n")
    return path
