"""``flow='iterative'``: lottery tickets (Frankle & Carbin), rounds of train, prune, rewind.

``round_0`` [0, T) trains the dense net; each ``round_r`` (r = 1..R, ``pruning.iterative.rounds``)
starts by pruning the trained weights of round r-1 to the cumulative sparsity
``1 - (1 - rate)^r`` among the weights round r-1 kept (nested masks, ``prune.nested_masks``),
rewinds the survivors to the initial weights (``rewind_step=0``) or to the weights after
``rewind_step`` steps of round 0, and retrains for T steps with a fresh optimizer over
[r T, (r + 1) T). The rewind weights are kept in ``RunContext.carry``, so they are one more item
of every Orbax checkpoint after ``rewind_step``. ``summary.json`` gets ``rounds``: per round its
sparsity, kept count and test accuracy.
"""

import jax

from jaxprune.training import checkpoint, prune, sharding
from jaxprune.training.flows import register
from jaxprune.training.flows.base import Flow, PhaseStart, training_phase

_REWIND = "rewind"


@register
class Iterative(Flow):
    """Iterative magnitude pruning with rewinding (lottery tickets)."""

    name = "iterative"

    def check(self, config):
        """``pruning.iterative`` fields; the rewind point lies inside round 0."""
        from jaxprune.training.config_check import check_iterative

        check_iterative(config.pruning.iterative, config.training)
        if config.pruning.target == "effective":
            raise ValueError(
                "pruning.target='effective' applies to one-shot pruning (flow 'prune_finetune' "
                "or 'prune_at_init'), got flow='iterative'"
            )

    def phases(self, config, steps_per_epoch):
        """``round_0`` .. ``round_R``, each as long as the ``training`` block."""
        first = training_phase("round_0", config, 0, steps_per_epoch, prune=False)
        rewind = config.pruning.iterative.rewind_step
        if rewind >= first.num_steps:
            raise ValueError(
                f"pruning.iterative.rewind_step must be < the length of round 0 "
                f"({first.num_steps} steps), got {rewind}"
            )
        return [
            training_phase(f"round_{r}", config, r * first.num_steps, steps_per_epoch, r > 0)
            for r in range(config.pruning.iterative.rounds + 1)
        ]

    def begin_phase(self, ctx, index, previous):
        """Round r > 0: nested masks at the cumulative sparsity, survivors rewound."""
        if index == 0:
            return super().begin_phase(ctx, index, previous)
        variables = ctx.variables_of(previous)
        pruning = ctx.config.pruning
        sparsity = prune.iterative_sparsity(pruning.iterative.rate, index)
        masks = prune.nested_masks(
            pruning,
            variables["params"],
            sharding.host(previous.masks),
            sparsity,
            key=jax.random.fold_in(ctx.prune_key, index),
            **ctx.score_inputs(variables["params"], variables["batch_stats"], int(previous.step)),
            quota_kwargs=ctx.quota_kwargs(),
        )
        record = {"round": index, "target_sparsity": sparsity}
        return PhaseStart(self.rewind_variables(ctx), masks=masks, record=record)

    def rewind_variables(self, ctx):
        """The weights survivors are rewound to: initial ones or the kept step-k ones."""
        variables = jax.device_get(ctx.initial_variables())
        rewind_step = ctx.config.pruning.iterative.rewind_step
        if rewind_step == 0:
            return variables
        if _REWIND not in ctx.carry:
            raise checkpoint.CheckpointError(
                f"the rewind weights (saved at step {rewind_step} of round 0) are missing from "
                f"the checkpoint in {ctx.ckpt.directory}"
            )
        return ctx.carry[_REWIND]

    def after_step(self, ctx, index, step, state, metrics):
        """Keeps the weights after ``rewind_step`` steps of round 0."""
        rewind_step = ctx.config.pruning.iterative.rewind_step
        if index == 0 and step == rewind_step > 0:
            ctx.carry[_REWIND] = ctx.variables_of(state)
        return metrics

    def target_sparsity(self, config):
        """The cumulative sparsity after the last round."""
        block = config.pruning.iterative
        return prune.iterative_sparsity(block.rate, block.rounds)

    def summary(self, ctx, records, evals):
        """Per round: its sparsity, kept count and final test accuracy / loss."""
        pruned = {r["round"]: r for r in records if r.get("phase") == "pruned" and "round" in r}
        _, total = ctx.prunable_counts(ctx.init_params())
        rounds = []
        for r, phase in enumerate(ctx.phases):
            info = pruned.get(r, {"sparsity": 0.0, "kept": total})
            rounds.append(
                {
                    "round": r,
                    "sparsity": info["sparsity"],
                    "kept": info["kept"],
                    "test_accuracy": evals[phase.name]["test_accuracy"],
                    "test_loss": evals[phase.name]["test_loss"],
                }
            )
        return {"rounds": rounds}
