"""Sparsity statistics: per-layer and total kept / total / sparsity, direct and effective.

``sparsity_report(params, mask)`` counts over the prunable leaves only (DESIGN.md: sparsity is the
pruned fraction over prunable leaves). With ``effective_mask=`` it adds effective columns: the
connections that still lie on an input-to-output path (Vysogorets & Kempe), and the effective
compression ``1 / density``.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import numpy as np

from jaxprune.pruning.tree import (
    Prunable,
    PyTree,
    check_same_structure,
    named_leaves,
    prunable_flags,
)


@dataclasses.dataclass(frozen=True)
class SparsityReport:
    """Per-layer and total sparsity of a masked params tree.

    Attributes:
      layers: ``{name: {"kept", "total", "sparsity"[, "effective_kept", "effective_sparsity"]}}``
        for every prunable layer, in flatten order.
      kept: kept entries over all prunable layers.
      total: prunable entries.
      effective_kept: effectively kept entries, or ``None`` without an effective mask.
    """

    layers: dict[str, dict[str, Any]]
    kept: int
    total: int
    effective_kept: int | None = None

    @property
    def sparsity(self) -> float:
        """Pruned fraction over prunable entries."""
        return 1.0 - self.kept / self.total if self.total else 0.0

    @property
    def compression(self) -> float:
        """``total / kept`` (``inf`` when nothing is kept)."""
        return self.total / self.kept if self.kept else math.inf

    @property
    def effective_sparsity(self) -> float | None:
        """Effective pruned fraction, or ``None`` without an effective mask."""
        if self.effective_kept is None:
            return None
        return 1.0 - self.effective_kept / self.total if self.total else 0.0

    @property
    def effective_compression(self) -> float | None:
        """``total / effective_kept`` (``inf`` if disconnected), or ``None``."""
        if self.effective_kept is None:
            return None
        return self.total / self.effective_kept if self.effective_kept else math.inf

    def as_dict(self) -> dict[str, Any]:
        """JSON-serialisable dict (infinite compressions become the string ``"inf"``)."""

        def clean(value):
            return "inf" if isinstance(value, float) and math.isinf(value) else value

        out = {
            "layers": self.layers,
            "kept": self.kept,
            "total": self.total,
            "sparsity": self.sparsity,
            "compression": clean(self.compression),
        }
        if self.effective_kept is not None:
            out["effective_kept"] = self.effective_kept
            out["effective_sparsity"] = self.effective_sparsity
            out["effective_compression"] = clean(self.effective_compression)
        return out

    def table(self) -> str:
        """A fixed-width text table, one row per layer plus a total row."""
        effective = self.effective_kept is not None
        header = ["layer", "kept", "total", "sparsity"]
        if effective:
            header += ["eff. kept", "eff. sparsity"]
        rows = []
        for name, row in self.layers.items():
            cells = [name, f"{row['kept']:,}", f"{row['total']:,}", f"{row['sparsity']:.4%}"]
            if effective:
                cells += [f"{row['effective_kept']:,}", f"{row['effective_sparsity']:.4%}"]
            rows.append(cells)
        total = ["TOTAL", f"{self.kept:,}", f"{self.total:,}", f"{self.sparsity:.4%}"]
        if effective:
            total += [f"{self.effective_kept:,}", f"{self.effective_sparsity:.4%}"]
        rows.append(total)
        widths = [max(len(str(c)) for c in col) for col in zip(header, *rows, strict=True)]

        def line(cells):
            first = cells[0].ljust(widths[0])
            rest = [c.rjust(w) for c, w in zip(cells[1:], widths[1:], strict=True)]
            return "  ".join([first, *rest])

        rule = "-" * len(line(header))
        lines = [line(header), rule, *[line(r) for r in rows[:-1]], rule, line(rows[-1])]
        footer = f"compression {self.compression:.2f}x"
        if effective:
            footer += f", effective compression {self.effective_compression:.2f}x"
        return "\n".join([*lines, footer])

    def __str__(self) -> str:
        return self.table()


def sparsity_report(
    params: PyTree,
    mask: PyTree,
    effective_mask: PyTree | None = None,
    prunable: Prunable = None,
) -> SparsityReport:
    """Counts kept entries per prunable layer.

    Args:
      params: the params pytree (decides which leaves are prunable and their names).
      mask: bool pytree like ``params``.
      effective_mask: optional bool pytree like ``params`` (``jp.effective_mask``).
      prunable: which leaves are prunable.

    Returns:
      A ``SparsityReport``.

    Raises:
      ValueError: if ``mask`` or ``effective_mask`` does not match ``params``.
    """
    check_same_structure(mask, params, "mask", "params")
    if effective_mask is not None:
        check_same_structure(effective_mask, params, "effective_mask", "params")
    flags = prunable_flags(params, prunable)
    masks = [np.asarray(m) for _, m in named_leaves(mask)]
    effective = (
        [np.asarray(m) for _, m in named_leaves(effective_mask)]
        if effective_mask is not None
        else [None] * len(masks)
    )
    layers: dict[str, dict[str, Any]] = {}
    kept = total = eff_kept = 0
    for (name, leaf), flag, m, e in zip(named_leaves(params), flags, masks, effective, strict=True):
        if not flag:
            continue
        size = int(np.size(leaf))
        n_kept = int(np.count_nonzero(m))
        row = {"kept": n_kept, "total": size, "sparsity": 1.0 - n_kept / size if size else 0.0}
        if e is not None:
            n_eff = int(np.count_nonzero(e & m))
            row["effective_kept"] = n_eff
            row["effective_sparsity"] = 1.0 - n_eff / size if size else 0.0
            eff_kept += n_eff
        layers[name] = row
        kept += n_kept
        total += size
    return SparsityReport(
        layers=layers,
        kept=kept,
        total=total,
        effective_kept=eff_kept if effective_mask is not None else None,
    )
