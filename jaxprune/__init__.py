"""jaxprune: exact, fast neural-network pruning for JAX/Flax.

The public API (names fixed by ``docs/DESIGN.md``)::

    import jaxprune as jp
    mask = jp.global_mask(jp.scores.magnitude(params), 0.9, min_keep={"fraction_of_total": 1e-4})
    params = jp.apply_mask(params, mask)
    print(jp.sparsity_report(params, mask))

    tx = jp.masked(optax.adam(1e-3), mask)       # masks as an optax transformation
    result = jp.train_and_evaluate(config, "runs/x")   # the training engine (configs/)
    result = jp.load_run("runs/x")               # a finished or interrupted run, from its files
    jp.evaluate(apply_fn, variables, dataset)    # test loss / accuracy of any Flax model
    jp.run_sweep(config, "runs/s", {"pruning.sparsity": [0.9, 0.99]}, seeds=3)  # one dense net
    jp.enable_compilation_cache()                # compiled programs kept on disk across processes

The training-side names are imported on first use, so ``import jaxprune`` stays light.
"""

import importlib
from typing import Any

from jaxprune import pruning
from jaxprune.compilation_cache import enable_compilation_cache
from jaxprune.masking import MaskedState, masked, masks_of, set_masks
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

# Training-side public names, imported lazily (module, attribute).
_LAZY = {
    "train_and_evaluate": ("jaxprune.training.runner", "train_and_evaluate"),
    "load_run": ("jaxprune.training.result", "load_run"),
    "RunResult": ("jaxprune.training.result", "RunResult"),
    "evaluate": ("jaxprune.training.evaluation", "evaluate_params"),
    "run_sweep": ("jaxprune.sweep", "sweep"),
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        module, attribute = _LAZY[name]
        value = getattr(importlib.import_module(module), attribute)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'jaxprune' has no attribute {name!r}")


__all__ = [
    "EffectiveTargetResult",
    "MaskedState",
    "RunResult",
    "SparsityReport",
    "apply_mask",
    "describe",
    "effective_mask",
    "effective_target_mask",
    "enable_compilation_cache",
    "evaluate",
    "flops_report",
    "global_mask",
    "layer_names",
    "layer_order",
    "layerwise_mask",
    "load_run",
    "masked",
    "masks_of",
    "n_keep_for",
    "prunable_names",
    "pruning",
    "quotas",
    "random_mask",
    "run_sweep",
    "schedules",
    "scores",
    "set_masks",
    "sparsity_report",
    "train_and_evaluate",
]
