"""The one-shot prune at a phase boundary, shared by the prune-then-train flows.

``prune_once`` computes the pruned network from the weights it is given:

* structured (``structured.method`` 'l1_filter' / 'slimming'): the zoo model's channel groups
  are scored and the run continues with a narrower model holding the surviving weights, or a
  fresh draw of it for the scratch flows;
* unstructured: masks from ``config.pruning`` (score, global / layerwise selection, MT, direct or
  effective target), then Su et al.'s sanity edits (``config.sanity``), or a fresh
  fan-in-scaled draw under the mask for the scratch flows.

Its record carries the FLOPs and parameter counts of the pruned model next to the dense one.
"""

from typing import Any

from jaxprune.training.flows.base import PhaseStart


def prune_once(ctx: Any, variables: Any, *, step: int, fresh: bool, evaluate: bool) -> PhaseStart:
    """The first state of the phase after a one-shot prune of ``variables``.

    Args:
      ctx: the ``RunContext``.
      variables: host variables to prune (trained for fine-tuning, initial at init).
      step: the global step of the prune (offered to scores as ``step``).
      fresh: train the pruned architecture / mask from a fresh draw (Scratch-E/B).
      evaluate: whether the 'pruned' record gets the pruned net's test metrics.
    """
    record: dict[str, Any] = {}
    masks = None
    fns = ctx.fns
    if ctx.structured:
        fns, variables, record["structured"] = ctx.prune_structured(variables)
        if fresh:
            variables = ctx.fresh_variables(fns)
    else:
        masks = ctx.masks_for(variables["params"], variables.get("batch_stats", {}), step)
        if fresh:
            variables = ctx.fresh_sparse_variables(masks)
        else:
            variables, masks = ctx.apply_sanity(variables, masks)
    record.update(ctx.flops_record(ctx.flops(fns, variables, masks)))
    return PhaseStart(variables, masks=masks, model=fns, record=record, evaluate=evaluate)
