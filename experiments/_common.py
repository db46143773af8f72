"""Pieces every experiment driver in this folder shares (not a driver itself)."""

import csv
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np


def write_csv(path: Path, columns: Sequence[str], rows: list[dict[str, Any]]) -> None:
    """Writes ``rows`` (dicts with the ``columns`` keys) to ``path`` with a header line."""
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(columns))
        writer.writeheader()
        writer.writerows(rows)


def write_results(
    out: Path, stem: str, columns: Sequence[str], rows: list[dict[str, Any]], table: str
) -> None:
    """Writes ``out/<stem>.csv`` (the rows) and ``out/<stem>.md`` (the table); prints the table."""
    write_csv(out / f"{stem}.csv", columns, rows)
    (out / f"{stem}.md").write_text(table + "\n")
    print(table)


def save_figure(fig: Any, path: Path) -> None:
    """Saves a driver's matplotlib figure as a 100-dpi PNG (tight layout) and closes it."""
    import matplotlib.pyplot as plt

    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def mean_std(values: Sequence[float], scale: float = 100.0, digits: int = 2) -> str:
    """``"mean ± std"`` of ``values`` times ``scale`` (just the value when there is one seed)."""
    mean = scale * float(np.mean(values))
    if len(values) == 1:
        return f"{mean:.{digits}f}"
    return f"{mean:.{digits}f} ± {scale * float(np.std(values)):.{digits}f}"


def check_seeds_and_epochs(seeds: int, epochs: float | None = None) -> None:
    """ValueError naming ``--seeds`` / ``--epochs`` unless ``seeds >= 1`` and ``epochs > 0``.

    ``epochs=None`` means the config's own length and is accepted.
    """
    if seeds < 1:
        raise ValueError(f"--seeds must be >= 1, got {seeds}")
    if epochs is not None and epochs <= 0:
        raise ValueError(f"--epochs must be > 0, got {epochs}")
