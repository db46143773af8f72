"""jaxprune: exact, fast neural-network pruning for JAX/Flax.

The public API (names fixed by ``shared/DESIGN.md``)::

    import jaxprune as jp
    mask = jp.global_mask(jp.scores.magnitude(params), 0.9, min_keep={"fraction_of_total": 1e-4})
    params = jp.apply_mask(params, mask)
    print(jp.sparsity_report(params, mask))
"""

from jaxprune import pruning
from jaxprune.pruning import quotas, scores
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
    "pruning",
    "quotas",
    "random_mask",
    "scores",
    "sparsity_report",
]
