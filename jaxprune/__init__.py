"""jaxprune: exact, fast neural-network pruning for JAX/Flax.

The public API (names fixed by ``docs/DESIGN.md``)::

    import jaxprune as jp
    mask = jp.global_mask(jp.scores.magnitude(params), 0.9, min_keep={"fraction_of_total": 1e-4})
    params = jp.apply_mask(params, mask)
    print(jp.sparsity_report(params, mask))
"""

from jaxprune import pruning
from jaxprune.pruning import quotas, schedules, scores
from jaxprune.pruning.effective import effective_mask
from jaxprune.pruning.effective_target import EffectiveTargetResult, effective_target_mask
from jaxprune.pruning.flops import flops_report
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
    "flops_report",
    "global_mask",
    "layer_names",
    "layer_order",
    "layerwise_mask",
    "n_keep_for",
    "prunable_names",
    "pruning",
    "quotas",
    "random_mask",
    "schedules",
    "scores",
    "sparsity_report",
]
