"""One-shot masks from the ``config.pruning`` block, using the pruning core.

``selection='global'``: one ranking of the chosen score over all prunable weights
(``jp.global_mask``), with the minimum threshold (MT) ``min_keep_fraction`` of all prunable
weights per layer when it is > 0 (Global MP + MT). ``selection='layerwise'``: per-layer
sparsities from ``jp.quotas.get(quota)`` and per-layer top-k (``jp.layerwise_mask``). Either way
exactly ``round((1 - sparsity) * N)`` prunable weights are kept (up to the quota's own
rounding for layerwise selection).

``target='effective'`` (Vysogorets & Kempe) treats ``sparsity`` as a target *effective* sparsity:
the scores are computed once and ``jp.effective_target_mask`` searches the direct sparsity of the
same selection (global or quota) for the sparsest mask whose effective sparsity is still
``<= sparsity``. Fixed scores make the masks nested across search steps (random scores included:
one key, one draw), so the search is monotone.
"""

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

import jaxprune as jp
from jaxprune.pruning import schedules

PyTree = Any


def prunable_spec(pruning: ml_collections.ConfigDict) -> list[str] | None:
    """The ``prunable=`` argument of the core for ``pruning.prunable`` (None = default)."""
    return list(pruning.prunable) or None


def quota_options(pruning: ml_collections.ConfigDict, model_name: str = "") -> dict[str, Any]:
    """Keyword options of ``pruning.quota`` from the config (only smart_ratio has any).

    ``pruning.smart_ratio.residual = None`` means: residual for ``resnet*`` / ``wrn*`` models.
    """
    if pruning.quota != "smart_ratio":
        return {}
    block = pruning.smart_ratio
    residual = block.residual
    if residual is None:
        residual = model_name.lower().startswith(("resnet", "wrn"))
    return {"ratio": block.ratio, "residual": bool(residual), "last_keep": block.last_keep}


def min_keep_of(pruning: ml_collections.ConfigDict) -> dict[str, float] | None:
    """The core's ``min_keep=`` for MT (``pruning.min_keep_fraction``; None when off)."""
    if pruning.min_keep_fraction > 0:
        return {"fraction_of_total": pruning.min_keep_fraction}
    return None


def _scores(pruning, params, key, batch, apply_fn, score_context) -> PyTree:
    """``pruning.score`` of ``params``, offered the engine's score context."""
    return jp.scores.call(
        jp.scores.get(pruning.score),
        params,
        key=key,
        batch=batch,
        apply_fn=apply_fn,
        prunable=prunable_spec(pruning),
        **(score_context or {}),
    )


def compute_masks(
    pruning: ml_collections.ConfigDict,
    params: PyTree,
    *,
    key: jax.Array,
    batch: dict[str, jax.Array] | None = None,
    apply_fn: Callable[[PyTree, jax.Array], jax.Array] | None = None,
    order: list[str] | None = None,
    linear_apply_fn: Callable[[PyTree, jax.Array], jax.Array] | None = None,
    sample_input: jax.Array | None = None,
    quota_kwargs: dict[str, Any] | None = None,
    score_context: dict[str, Any] | None = None,
) -> PyTree:
    """Masks for ``params`` at ``pruning.sparsity`` (direct or effective, ``pruning.target``).

    Args:
      pruning: the ``config.pruning`` block.
      params: parameters to score (trained for prune_finetune, initial for prune_at_init).
      key: PRNG key for random scores.
      batch: a batch of training data for data-dependent scores (SNIP, GraSP, ...).
      apply_fn: ``apply_fn(params, images) -> logits`` for data-dependent scores.
      order: forward order of the prunable layers (used by order-aware quotas).
      linear_apply_fn: ``apply_fn(params, x)`` of the model in linear mode (zoo models), used
        by iterative SynFlow when given; otherwise ``apply_fn``.
      sample_input: a one-example input batch (effective sparsity, SynFlow).
      quota_kwargs: extra options of the quota (``quota_options``).
      score_context: further keywords offered to the score (``init_params``, ``step``; see
        ``jp.scores.call``).

    Returns:
      A bool pytree like ``params``.

    Raises:
      ValueError: if ``pruning.target == 'effective'`` and ``apply_fn`` or ``sample_input`` is
        missing.
    """
    prunable = prunable_spec(pruning)
    if _iterative_synflow(pruning):
        # SynFlow is a pruning method, not only a score: one global pruning of a single round's
        # scores collapses layers; Tanaka et al. prune over `rounds` exponentially spaced steps.
        x = sample_input if sample_input is not None else batch["image"][:1]
        return jp.scores.synflow_mask(
            params,
            pruning.sparsity,
            apply_fn=linear_apply_fn or apply_fn,
            sample_input=x,
            rounds=pruning.synflow_rounds,
            prunable=prunable,
        )
    scores = _scores(pruning, params, key, batch, apply_fn, score_context)
    if pruning.selection == "global":
        min_keep = min_keep_of(pruning)

        def mask_fn(sparsity: float) -> PyTree:
            return jp.global_mask(scores, sparsity, min_keep=min_keep, prunable=prunable)

    else:
        quota_fn = jp.quotas.get(pruning.quota)

        def mask_fn(sparsity: float) -> PyTree:
            sparsities = quota_fn(
                params, sparsity, prunable=prunable, order=order, **(quota_kwargs or {})
            )
            return jp.layerwise_mask(scores, sparsities, prunable=prunable)

    if pruning.target == "direct":
        return mask_fn(pruning.sparsity)
    if pruning.target != "effective":
        raise ValueError(
            f"pruning.target must be one of ['direct', 'effective'], got {pruning.target!r}"
        )
    if apply_fn is None or sample_input is None:
        raise ValueError(
            "pruning.target='effective' needs apply_fn and sample_input (the model's forward "
            "pass and a one-example input)"
        )
    return jp.effective_target_mask(
        mask_fn,
        pruning.sparsity,
        apply_fn=apply_fn,
        params=params,
        sample_input=sample_input,
        prunable=prunable,
    ).mask


def _iterative_synflow(pruning: ml_collections.ConfigDict) -> bool:
    """Whether one-shot pruning runs Tanaka et al.'s iterative SynFlow (global, direct, no MT)."""
    return (
        pruning.score == "synflow"
        and pruning.synflow_rounds > 1
        and pruning.selection == "global"
        and pruning.target == "direct"
        and pruning.min_keep_fraction == 0
    )


SCHEDULE_TYPES = ("polynomial", "one_shot", "constant")


def make_schedule(block: ml_collections.ConfigDict) -> schedules.Schedule:
    """The sparsity schedule of the ``config.pruning.schedule`` block.

    ``polynomial`` uses every field; ``one_shot`` prunes to ``final_sparsity`` once at
    ``begin_step``; ``constant`` keeps ``final_sparsity`` and re-prunes every ``frequency`` steps
    from ``begin_step`` to ``end_step``.

    Raises:
      ValueError: naming the bad ``pruning.schedule.*`` field and its value.
    """
    if block.type not in SCHEDULE_TYPES:
        raise ValueError(
            f"pruning.schedule.type must be one of {sorted(SCHEDULE_TYPES)}, got {block.type!r}"
        )
    try:
        if block.type == "one_shot":
            return schedules.one_shot(block.begin_step, block.final_sparsity)
        if block.type == "constant":
            return schedules.constant(
                block.final_sparsity, block.begin_step, block.end_step, block.frequency
            )
        return schedules.polynomial(
            block.initial_sparsity,
            block.final_sparsity,
            block.begin_step,
            block.end_step,
            block.frequency,
            block.power,
        )
    except ValueError as e:
        raise ValueError(f"pruning.schedule.{e}") from e


MaskFn = Callable[..., PyTree]


def traced_mask_fn(
    pruning: ml_collections.ConfigDict,
    schedule: schedules.Schedule,
    params: PyTree,
    *,
    num_steps: int,
    order: list[str] | None = None,
    quota_kwargs: dict[str, Any] | None = None,
    score_context: dict[str, Any] | None = None,
) -> MaskFn:
    """A jit-compatible ``mask_fn(params, step, *, key, batch, apply_fn) -> masks``.

    The masks keep the top entries of ``pruning.score`` at ``schedule.sparsity_at(step)``
    (``step`` may be traced), with global selection (plus MT when
    ``pruning.min_keep_fraction > 0``) or a layerwise quota. The number of kept weights (per
    layer for quotas, which are host functions of a Python sparsity and the layer shapes) is
    computed exactly on the host for every update step before ``num_steps`` and stored as the
    sparsity ``1 - k / n``, which the float32 rounding inside the step maps back to exactly
    ``k``; the step looks its row up by the (traced) update index.

    Args:
      pruning: the ``config.pruning`` block.
      schedule: the sparsity schedule.
      params: parameters (only shapes are used).
      num_steps: global steps of the run (bounds the update table).
      order: forward order of the prunable layers (order-aware quotas).
      quota_kwargs: extra options of the quota (``quota_options``).
      score_context: further keywords offered to the score (``init_params``); the traced
        ``step`` is offered too.
    """
    prunable = prunable_spec(pruning)
    score_fn = jp.scores.get(pruning.score)
    min_keep = min_keep_of(pruning)
    updates = schedule.update_steps(num_steps) or [schedule.begin_step]
    if schedule.initial_sparsity == schedule.final_sparsity:
        updates = updates[:1]
    sizes = {name: int(np.size(leaf)) for name, leaf in jp.pruning.tree.named_leaves(params)}
    if pruning.selection == "layerwise":
        quota_fn = jp.quotas.get(pruning.quota)
        rows = [
            quota_fn(
                params,
                schedule.sparsity_at(t),
                prunable=prunable,
                order=order,
                **(quota_kwargs or {}),
            )
            for t in updates
        ]
        names = list(rows[0])
    else:  # one column: the global sparsity over all prunable entries
        names = ["all"]
        sizes = {"all": sum(sizes[n] for n in jp.prunable_names(params, prunable))}
        rows = [{"all": schedule.sparsity_at(t)} for t in updates]

    def exact(sparsity: float, size: int) -> float:
        return 1.0 - jp.n_keep_for(sparsity, size) / max(size, 1)

    table = jnp.asarray([[exact(row[n], sizes[n]) for n in names] for row in rows], jnp.float32)

    def mask_fn(params, step, *, key=None, batch=None, apply_fn=None):
        scores = jp.scores.call(
            score_fn,
            params,
            key=key,
            batch=batch,
            apply_fn=apply_fn,
            prunable=prunable,
            step=step,
            **(score_context or {}),
        )
        index = jnp.clip((step - schedule.begin_step) // schedule.frequency, 0, len(table) - 1)
        row = table[index]
        if pruning.selection != "layerwise":
            return jp.global_mask(scores, row[0], min_keep=min_keep, prunable=prunable)
        sparsities = {name: row[i] for i, name in enumerate(names)}
        return jp.layerwise_mask(scores, sparsities, prunable=prunable)

    return mask_fn


def iterative_sparsity(rate: float, round_index: int) -> float:
    """Cumulative sparsity after ``round_index`` prunings of ``rate`` of the remaining weights.

    ``1 - (1 - rate) ** round_index``; the kept count is ``jp.n_keep_for`` of it, i.e.
    ``round((1 - rate) ** round_index * N)`` (half up) over the ``N`` prunable weights.
    """
    return 1.0 - (1.0 - rate) ** round_index


def nested_masks(
    pruning: ml_collections.ConfigDict,
    params: PyTree,
    previous_masks: PyTree,
    sparsity: float,
    *,
    key: jax.Array,
    batch: dict[str, jax.Array] | None = None,
    apply_fn: Callable[[PyTree, jax.Array], jax.Array] | None = None,
    order: list[str] | None = None,
    quota_kwargs: dict[str, Any] | None = None,
    score_context: dict[str, Any] | None = None,
) -> PyTree:
    """Masks at ``sparsity`` chosen among the weights kept by ``previous_masks`` (lottery rounds).

    The scores of ``pruning.score`` are computed on ``params``; every entry already pruned gets
    a score strictly below all kept entries, so global selection (with MT floors, which the
    previous mask already met) or a layerwise quota whose per-layer kept counts do not grow
    with the sparsity picks only previously kept weights.

    Args:
      pruning: the ``config.pruning`` block (score, selection, quota, min_keep_fraction).
      params: trained parameters to score.
      previous_masks: bool pytree like ``params``: the masks of the previous round.
      sparsity: cumulative target sparsity (``iterative_sparsity``), >= the previous one.
      key: PRNG key for random scores.
      batch: a batch of training data for data-dependent scores.
      apply_fn: ``apply_fn(params, images) -> logits`` for data-dependent scores.
      order: forward order of the prunable layers (order-aware quotas).
      quota_kwargs: extra options of the quota (``quota_options``).
      score_context: further keywords offered to the score (``init_params``, ``step``).

    Returns:
      A bool pytree like ``params``, nested in ``previous_masks``.

    Raises:
      RuntimeError: if the selection would revive a pruned weight (a quota that keeps more
        weights in some layer than the previous round did).
    """
    prunable = prunable_spec(pruning)
    scores = _scores(pruning, params, key, batch, apply_fn, score_context)
    kept_scores = [
        np.asarray(s, np.float32)[np.asarray(m, bool)]
        for s, m in zip(jax.tree.leaves(scores), jax.tree.leaves(previous_masks), strict=True)
    ]
    kept_scores = np.concatenate([s.ravel() for s in kept_scores] + [np.zeros(1, np.float32)])
    lowest = float(np.min(kept_scores))
    below = lowest - max(1.0, abs(lowest))
    scores = jax.tree.map(
        lambda s, m: jnp.where(m, jnp.asarray(s, jnp.float32), below), scores, previous_masks
    )
    if pruning.selection == "global":
        min_keep = min_keep_of(pruning)
        masks = jp.global_mask(scores, sparsity, min_keep=min_keep, prunable=prunable)
    else:
        sparsities = jp.quotas.get(pruning.quota)(
            params, sparsity, prunable=prunable, order=order, **(quota_kwargs or {})
        )
        masks = jp.layerwise_mask(scores, sparsities, prunable=prunable)
    masks = jax.tree.map(lambda m: np.asarray(m, dtype=bool), masks)
    revived = sum(
        int(np.sum(m & ~np.asarray(p, bool)))
        for m, p in zip(jax.tree.leaves(masks), jax.tree.leaves(previous_masks), strict=True)
    )
    if revived:
        raise RuntimeError(
            f"iterative pruning at sparsity {sparsity:.6f} would revive {revived} pruned "
            f"weights (pruning.selection={pruning.selection!r}, quota={pruning.quota!r}); "
            "use selection='global' or a quota whose per-layer kept counts shrink"
        )
    return masks
