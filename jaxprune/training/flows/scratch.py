"""``flow='scratch_e'`` / ``'scratch_b'`` (Liu et al., "Rethinking the Value of Network Pruning").

``dense`` [0, T), prune the trained net at T, then ``scratch`` [T, T + S) trains the pruned
architecture (structured) or the mask (unstructured) from a **fresh** initialisation: a new draw
(``fold_in(init key, 1)``); unstructured fresh weights are scaled by
``sqrt(fan_in / surviving fan_in)`` per unit (``scratch.scale_fan_in``). Scratch-E trains S = T
steps; Scratch-B S = T * min(``scratch.budget_cap``, dense FLOPs / pruned FLOPs) steps
(``jp.pruning.flops.scratch_b_steps``; FLOPs of the unstructured mask count kept weights only).
S is stored in every later checkpoint's meta, so a resumed run keeps it.
"""

from absl import logging

from jaxprune.pruning import flops as flops_lib
from jaxprune.training.flows import register
from jaxprune.training.flows.base import Flow, training_phase
from jaxprune.training.flows.one_shot import prune_once


class _Scratch(Flow):
    """Train dense, prune, train the pruned net from a fresh draw."""

    init_from_skips_first_phase = True
    supports_structured = True
    #: Whether the scratch phase's length is the FLOPs-matched budget (Scratch-B).
    flops_matched = False

    def check(self, config):
        """Scratch-B's budget is undefined when nothing is kept."""
        if self.flops_matched and config.structured.method == "none":
            if config.pruning.sparsity == 1:
                raise ValueError(
                    "flow='scratch_b' scales the budget by dense / pruned FLOPs, which is "
                    "undefined at pruning.sparsity=1 (nothing kept); use a sparsity < 1"
                )

    def phases(self, config, steps_per_epoch):
        """``dense`` then ``scratch`` of the same length (Scratch-B re-plans it at the prune)."""
        dense = training_phase("dense", config, 0, steps_per_epoch, prune=False)
        scratch = training_phase("scratch", config, dense.end, steps_per_epoch, prune=True)
        return [dense, scratch]

    def begin_phase(self, ctx, index, previous):
        """Phase 1 prunes the trained net and re-draws the weights (Scratch-B: sets S)."""
        if index == 0:
            return super().begin_phase(ctx, index, previous)
        start = prune_once(
            ctx,
            ctx.variables_of(previous),
            step=ctx.phases[index].start,
            fresh=True,
            evaluate=False,
        )
        if self.flops_matched:
            base = ctx.phases[0].num_steps
            budget = flops_lib.scratch_b_steps(
                base,
                ctx.dense_flops().total_flops,
                start.record["flops"],
                cap=ctx.config.scratch.budget_cap,
            )
            start.num_steps = budget
            start.record["scratch_steps"] = budget
            logging.info("Scratch-B: %d steps (dense phase: %d)", budget, base)
        return start

    def target_sparsity(self, config):
        """``pruning.sparsity`` (None for structured pruning)."""
        return None if config.structured.method != "none" else config.pruning.sparsity


@register
class ScratchE(_Scratch):
    """Scratch-E: as many steps as the dense phase."""

    name = "scratch_e"


@register
class ScratchB(_Scratch):
    """Scratch-B: the dense phase's steps times the (capped) FLOPs reduction."""

    name = "scratch_b"
    flops_matched = True
