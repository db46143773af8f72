"""Structured pruning inside a run (Liu et al. "Rethinking"): the ``config.structured`` block.

Pure functions of the config block, the zoo model and its variables; the run loop calls them at
the prune step (``prune_structured``) and while building the dense phase's train step
(``slimming_penalty``). The selection rules themselves live in ``jaxprune.pruning.structured``
and the zoo's channel topology in ``jaxprune.models.channels``.
"""

import re
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from jaxprune.models import channels
from jaxprune.pruning import structured
from jaxprune.training import sharding

PyTree = Any


def channel_groups(
    block: ml_collections.ConfigDict, model: nn.Module, variables: PyTree
) -> tuple[list[structured.ChannelGroup], list[structured.ChannelGroup]]:
    """The model's channel groups: (those not matched by ``structured.skip``, all of them)."""
    groups = channels.channel_groups(model, variables)
    active = [g for g in groups if not any(re.search(p, g.name) for p in block.skip)]
    return active, groups


def prune_structured(
    block: ml_collections.ConfigDict, model: nn.Module, variables: PyTree
) -> tuple[nn.Module, PyTree, dict[str, Any]]:
    """Removes channels of ``model`` as ``block`` (``config.structured``) says.

    ``l1_filter``: per group, the filters of smallest L1 norm at the group's ratio
    (``structured.ratio``, overridden by ``structured.ratios``, 0 for ``structured.skip``); the
    kept count is rounded as ``structured.rounding`` says (``"floor"``: Li et al.'s
    ``int(n * (1 - ratio))``; ``"round"``: ``n - round(ratio * n)``).
    ``slimming``: one global threshold on |BatchNorm scale| over the groups not skipped, at
    ``structured.ratio``; skipped groups keep every channel.

    Args:
      block: the ``config.structured`` block (method 'l1_filter' or 'slimming').
      model: the wide zoo model.
      variables: its (trained) variables, ``{'params': ..., 'batch_stats': ...}``.

    Returns:
      ``(narrow model, its variables holding the surviving weights, record)``; the record
      has ``method``, ``widths``, ``widths_dense`` and, for slimming, ``threshold``.
    """
    variables = sharding.host(
        {"params": variables["params"], "batch_stats": variables.get("batch_stats", {})}
    )
    active, groups = channel_groups(block, model, variables)
    record: dict[str, Any] = {"method": block.method}
    if block.method == "l1_filter":
        ratios = structured.layer_ratios(groups, block.ratio, block.ratios, block.skip)
        norms = structured.filter_l1_norms(variables, groups)
        kept = structured.select_top(norms, ratios, rounding=block.rounding)
    elif block.method == "slimming":
        kept, threshold = structured.slimming_select(variables, active, block.ratio)
        record["threshold"] = float(threshold)
        for group in groups:
            kept.setdefault(group.name, np.arange(group.size))
    else:
        raise ValueError(
            f"structured.method must be 'l1_filter' or 'slimming' here, got {block.method!r}"
        )
    narrow_model, narrow_variables = channels.shrink_model(model, variables, kept)
    record["widths"] = [int(w) for w in structured.kept_widths(groups, kept)]
    record["widths_dense"] = [g.size for g in groups]
    return narrow_model, narrow_variables, record


def slimming_penalty(block: ml_collections.ConfigDict, model: nn.Module, variables: PyTree) -> Any:
    """Network slimming's ``slimming_l1 * sum |BN scale|`` over the groups not skipped.

    Returns:
      ``penalty(params) -> scalar``, or None when ``block`` asks for no penalty.
    """
    if block.method != "slimming" or block.slimming_l1 == 0:
        return None
    active, _ = channel_groups(block, model, variables)
    weight = float(block.slimming_l1)

    def penalty(params: PyTree) -> jax.Array:
        total = jnp.zeros((), jnp.float32)
        for group in active:  # bn_scale paths like 'params/BatchNorm_3/scale'
            total = total + jnp.sum(jnp.abs(structured.leaf_at({"params": params}, group.bn_scale)))
        return weight * total

    return penalty
