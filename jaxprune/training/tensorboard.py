"""TensorBoard scalars next to ``metrics.jsonl`` (tensorboardX: no TensorFlow needed).

Every record ``MetricsWriter`` appends is mirrored as scalars in ``workdir/tensorboard``, one
tag per metric name on the run's global step (``train_loss``, ``test_accuracy``, ``kept``,
...); the record written right after a one-shot prune (phase ``pruned``) goes to
``after_pruning/<name>``, so that its drop does not hide under the dense phase's value at the
same step. A resumed run purges the events past its checkpoint (``purge_step``), as
``metrics.jsonl`` drops its records past it. Switch off with ``training.tensorboard = False``.
"""

from __future__ import annotations

import importlib
import math
import numbers
import sys
from pathlib import Path
from typing import Any


def _import_tensorboardx() -> Any:
    """``tensorboardX`` imported without torch.

    tensorboardX's writer module imports torch when it is installed, only to accept torch
    tensors (about 0.8 s at start-up); we give it Python floats. Unless torch is already loaded,
    ``import torch`` fails during the import (a ``None`` in ``sys.modules``), then nothing of
    it is left behind.
    """
    if "tensorboardX" in sys.modules:
        return sys.modules["tensorboardX"]
    if "torch" in sys.modules:
        return importlib.import_module("tensorboardX")
    sys.modules["torch"] = None  # type: ignore[assignment]
    try:
        return importlib.import_module("tensorboardX")
    finally:
        if sys.modules.get("torch", 0) is None:
            del sys.modules["torch"]


def tag_of(phase: str, name: str) -> str:
    """The TensorBoard tag of metric ``name`` in a record of ``phase``."""
    return f"after_pruning/{name}" if phase == "pruned" else name


class TensorBoardWriter:
    """Writes metric records as scalars to ``directory`` (created on the first record).

    Args:
      directory: the event file folder (``workdir/tensorboard``).
      purge_step: hide events at or after this step written by an earlier, interrupted run.
    """

    def __init__(self, directory: str | Path, *, purge_step: int | None = None):
        SummaryWriter = _import_tensorboardx().SummaryWriter  # noqa: N806

        self.directory = Path(directory)
        self._writer = SummaryWriter(
            logdir=str(self.directory), purge_step=purge_step, flush_secs=10
        )

    def write(self, step: int, phase: str, metrics: dict[str, Any]) -> None:
        """Adds every finite real number of ``metrics`` as a scalar at ``step``."""
        for name, value in metrics.items():
            if isinstance(value, bool) or not isinstance(value, numbers.Real):
                continue
            if math.isfinite(float(value)):
                self._writer.add_scalar(tag_of(phase, name), float(value), int(step))

    def flush(self) -> None:
        """Writes pending events to disk."""
        self._writer.flush()

    def close(self) -> None:
        """Flushes and closes the event file."""
        self._writer.close()
