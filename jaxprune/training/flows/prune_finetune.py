"""``flow='prune_finetune'``: ``dense`` [0, T), one-shot prune at T, ``finetune`` [T, T + F).

Unstructured (``config.pruning``, with the sanity checks of ``config.sanity``) or structured
(``config.structured``: a really narrower model). The 'pruned' record has the pruned net's test
accuracy before fine-tuning. With ``config.init_from`` naming a trained dense run, the dense
phase is taken from it and the run starts by pruning.
"""

from jaxprune.training.flows import register
from jaxprune.training.flows.base import Flow, Phase, phase_steps, training_phase
from jaxprune.training.flows.one_shot import prune_once


@register
class PruneFinetune(Flow):
    """Train dense, prune once, fine-tune with the ``finetune`` block's length and rate."""

    name = "prune_finetune"
    supports_sanity = True
    supports_structured = True
    init_from_skips_first_phase = True

    def check(self, config):
        """The ``finetune`` block must describe a phase."""
        from jaxprune.training.config_check import phase_length

        phase_length("finetune", config.finetune)

    def phases(self, config, steps_per_epoch):
        """``dense`` then ``finetune``."""
        dense = training_phase("dense", config, 0, steps_per_epoch, prune=False)
        finetune = config.finetune
        return [
            dense,
            Phase(
                "finetune",
                dense.end,
                phase_steps(finetune, steps_per_epoch),
                finetune.learning_rate,
                finetune.lr_schedule,
                True,
            ),
        ]

    def begin_phase(self, ctx, index, previous):
        """Phase 1 prunes the trained weights of phase 0."""
        if index == 0:
            return super().begin_phase(ctx, index, previous)
        variables = ctx.variables_of(previous)
        return prune_once(ctx, variables, step=ctx.phases[index].start, fresh=False, evaluate=True)

    def target_sparsity(self, config):
        """``pruning.sparsity`` (None for structured pruning: widths are the target)."""
        return None if config.structured.method != "none" else config.pruning.sparsity
