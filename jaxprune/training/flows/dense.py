"""``flow='dense'``: train the dense net, ``dense`` [0, T)."""

from jaxprune.training.flows import register
from jaxprune.training.flows.base import Flow, training_phase


@register
class Dense(Flow):
    """Trains the dense network for ``training.steps`` (or ``training.epochs``)."""

    name = "dense"

    def phases(self, config, steps_per_epoch):
        """One phase, ``dense``."""
        return [training_phase("dense", config, 0, steps_per_epoch, prune=False)]
