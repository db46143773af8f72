"""``flow='prune_at_init'``: prune the initial weights, then ``sparse`` [0, T).

SNIP, GraSP, SynFlow, random pruning with quotas, smart-ratio random tickets, and Su et al.'s
sanity checks (``config.sanity``) all run here.
"""

from jaxprune.training.flows import register
from jaxprune.training.flows.base import Flow, training_phase
from jaxprune.training.flows.one_shot import prune_once


@register
class PruneAtInit(Flow):
    """Prune before training; train the sparse net for the ``training`` block's length."""

    name = "prune_at_init"
    supports_sanity = True

    def phases(self, config, steps_per_epoch):
        """One phase, ``sparse``, that starts by pruning."""
        return [training_phase("sparse", config, 0, steps_per_epoch, prune=True)]

    def begin_phase(self, ctx, index, previous):
        """Prunes the initial (or ``init_from``) weights."""
        import jax

        variables = jax.device_get(ctx.initial_variables())
        return prune_once(ctx, variables, step=0, fresh=False, evaluate=False)

    def target_sparsity(self, config):
        """``pruning.sparsity``."""
        return config.pruning.sparsity
