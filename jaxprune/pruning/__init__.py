"""Params pytree -> scores -> quotas -> masks. Imports nothing from training, models or data."""

from jaxprune.pruning import (
    flops,
    quotas,
    sanity,
    schedules,
    scores,
    select,
    stats,
    structured,
    topk,
    tree,
)
from jaxprune.pruning.effective import effective_mask
from jaxprune.pruning.effective_target import EffectiveTargetResult, effective_target_mask
from jaxprune.pruning.layer_order import layer_order
from jaxprune.pruning.select import (
    apply_mask,
    global_mask,
    layerwise_mask,
    n_keep_for,
    random_mask,
)
from jaxprune.pruning.stats import SparsityReport, sparsity_report
from jaxprune.pruning.tree import describe, layer_names, prunable_names

__all__ = [
    "EffectiveTargetResult",
    "SparsityReport",
    "apply_mask",
    "describe",
    "effective_mask",
    "effective_target_mask",
    "flops",
    "global_mask",
    "layer_names",
    "layer_order",
    "layerwise_mask",
    "n_keep_for",
    "prunable_names",
    "quotas",
    "random_mask",
    "sanity",
    "schedules",
    "scores",
    "select",
    "sparsity_report",
    "stats",
    "structured",
    "topk",
    "tree",
]
