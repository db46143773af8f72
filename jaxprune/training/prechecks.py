"""Checks that need the model (not only the config), run before any training step.

``validate_config`` checks names and ranges; these checks build on the model's parameter shapes
and the run's phase plan, and fail before the first step what would otherwise fail (or silently
misbehave) later:

* ``pruning.prunable`` must match at least one leaf when the flow prunes;
* the minimum threshold (MT) must be feasible at the flow's final target sparsity (the sum of
  the per-layer floors may not exceed the kept budget);
* flow-specific checks (``Flow.precheck``): the gradual schedule must lie inside the run and its
  score must trace inside the jitted step.
"""

from typing import Any

import jax
import numpy as np

import jaxprune as jp
from jaxprune.pruning import select
from jaxprune.training import prune


def prunable_leaves(ctx: Any) -> tuple[list[str], list[int]]:
    """Names and sizes of the prunable leaves of the run's model.

    Raises:
      ValueError: naming ``pruning.prunable`` when it matches no leaf.
    """
    params = ctx.init_params()
    spec = prune.prunable_spec(ctx.config.pruning)
    names = jp.prunable_names(params, spec)
    if not names:
        leaves = jp.layer_names(params)
        shown = ", ".join(leaves[:8]) + (", ..." if len(leaves) > 8 else "")
        what = f"pruning.prunable={tuple(spec)!r}" if spec else "the default prunable rule"
        raise ValueError(
            f"{what} matches no leaf of model {ctx.config.model.name!r}, so nothing would be "
            f"pruned; its leaves are: {shown}"
        )
    sizes_by_name = {n: int(np.size(x)) for n, x in jp.pruning.tree.named_leaves(params)}
    return names, [sizes_by_name[n] for n in names]


def check_min_threshold(ctx: Any, target: float, names: list[str], sizes: list[int]) -> None:
    """Raises ValueError when MT's floors do not fit the kept budget at ``target``."""
    pruning = ctx.config.pruning
    if pruning.selection != "global" or pruning.min_keep_fraction <= 0:
        return
    total = sum(sizes)
    floors = select.floors_for(prune.min_keep_of(pruning), names, sizes, total)
    n_keep = jp.n_keep_for(target, total)
    if sum(floors) > n_keep:
        raise ValueError(
            f"pruning.min_keep_fraction={pruning.min_keep_fraction} is infeasible at the target "
            f"sparsity {target}: {len(names)} layers x floor {max(floors)} = {sum(floors)} "
            f"weights kept, but the budget is {n_keep} of {total}; lower min_keep_fraction "
            f"(at most {n_keep / len(names) / total:.6g}) or the sparsity"
        )


def run_all(ctx: Any, flow: Any) -> None:
    """Every check that needs the model, before training."""
    target = flow.target_sparsity(ctx.config)
    if target is not None:
        names, sizes = prunable_leaves(ctx)
        check_min_threshold(ctx, target, names, sizes)
    flow.precheck(ctx)


def trace_check(fn: Any, *args: Any, what: str) -> None:
    """Traces ``fn(*args)`` abstractly; an error raised while tracing becomes a ValueError."""
    try:
        jax.eval_shape(fn, *args)
    except (
        jax.errors.ConcretizationTypeError,
        jax.errors.TracerBoolConversionError,
        jax.errors.TracerArrayConversionError,
        jax.errors.TracerIntegerConversionError,
    ) as e:
        first = str(e).strip().splitlines()[0]
        raise ValueError(f"{what} cannot run inside the jitted train step: {first}") from None
