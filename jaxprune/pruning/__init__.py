"""Params pytree -> scores -> quotas -> masks. Imports nothing from training, models or data."""

from jaxprune.pruning import quotas, scores, select, stats, topk, tree
from jaxprune.pruning.select import (
    apply_mask,
    global_mask,
    layerwise_mask,
    n_keep_for,
    random_mask,
)
from jaxprune.pruning.stats import SparsityReport, sparsity_report
from jaxprune.pruning.tree import layer_names, prunable_names

__all__ = [
    "SparsityReport",
    "apply_mask",
    "global_mask",
    "layer_names",
    "layerwise_mask",
    "n_keep_for",
    "prunable_names",
    "quotas",
    "random_mask",
    "scores",
    "select",
    "sparsity_report",
    "stats",
    "topk",
    "tree",
]
