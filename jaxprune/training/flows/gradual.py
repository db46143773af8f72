"""``flow='gradual'`` (Zhu & Gupta, "To prune, or not to prune"): ``gradual`` [0, T).

Dense warm-up, then the masks are recomputed inside the jitted step at the steps of
``pruning.schedule`` (``lax.cond``: no recompilation, no host round-trip; ``jp.set_masks`` on
the ``jp.masked`` optimizer state), then recovery at the final sparsity. Every mask update
writes ``target_sparsity``, ``achieved_sparsity`` and ``kept`` to metrics.jsonl (at the step
count after the update's train step).
"""

import jax
from absl import logging

import jaxprune as jp
from jaxprune.training import prechecks, prune, steps
from jaxprune.training.flows import register
from jaxprune.training.flows.base import Flow, training_phase

_UPDATE_KEYS = ("mask_updated", "target_sparsity", "kept")


def _eval_apply(ctx):
    """The model in eval mode with its initial BatchNorm statistics (shapes are what matter)."""
    return ctx.fns.eval_apply(ctx.init_host_variables().get("batch_stats", {}))


@register
class Gradual(Flow):
    """Gradual magnitude (or any score's) pruning on the cubic schedule, inside training."""

    name = "gradual"

    def check(self, config):
        """The schedule block, and no effective target (one-shot only)."""
        from jaxprune.training import config_check

        config_check.check_schedule(config.pruning.schedule)
        if config.pruning.target == "effective":
            raise ValueError(
                "pruning.target='effective' applies to one-shot pruning (flow 'prune_finetune' "
                "or 'prune_at_init'), got flow='gradual'"
            )

    def precheck(self, ctx):
        """The schedule lies inside the run, and its score traces inside the jitted step."""
        block = ctx.config.pruning.schedule
        end = ctx.phases[0].end
        last = block.end_step if block.type != "one_shot" else block.begin_step
        if last >= end:
            field = "end_step" if block.type != "one_shot" else "begin_step"
            raise ValueError(
                f"pruning.schedule.{field}={last} is not inside the run ({end} steps): the "
                f"last mask update would never happen and the run would end below "
                f"final_sparsity={block.final_sparsity}; use a {field} < {end}"
            )
        if block.type == "polynomial" and block.begin_step >= block.end_step:
            raise ValueError(
                f"pruning.schedule.begin_step={block.begin_step} must be < "
                f"end_step={block.end_step} for a polynomial schedule"
            )
        params = ctx.init_params()
        mask_fn = self._mask_fn(ctx, end)
        batch = {
            "image": jax.ShapeDtypeStruct((2, *ctx.ds.input_shape), "float32"),
            "label": jax.ShapeDtypeStruct((2,), "int32"),
        }
        apply_fn = _eval_apply(ctx)  # concrete: built outside the trace, not inside it
        prechecks.trace_check(
            lambda p, s, b: mask_fn(p, s, key=jax.random.PRNGKey(0), batch=b, apply_fn=apply_fn),
            params,
            jax.ShapeDtypeStruct((), "int32"),
            batch,
            what=f"pruning.score={ctx.config.pruning.score!r} (flow='gradual')",
        )

    @staticmethod
    def _mask_fn(ctx, num_steps):
        pruning = ctx.config.pruning
        schedule = ctx.sparsity_schedule
        params = ctx.init_params()
        order = None
        if pruning.selection == "layerwise":
            order = jp.layer_order(_eval_apply(ctx), params, ctx.sample_input)
        return prune.traced_mask_fn(
            pruning,
            schedule,
            params,
            num_steps=num_steps,
            order=order,
            quota_kwargs=ctx.quota_kwargs(),
            score_context={"init_params": ctx.init_params()},
        )

    def phases(self, config, steps_per_epoch):
        """One phase, ``gradual``."""
        return [training_phase("gradual", config, 0, steps_per_epoch, prune=False)]

    def train_step(self, ctx, index, tx):
        """The masked step with the schedule's mask updates inside it."""
        schedule = ctx.sparsity_schedule
        mask_fn = self._mask_fn(ctx, ctx.phases[index].end)
        return steps.gradual_train_step_fn(ctx.fns.apply, tx, schedule, mask_fn)

    def after_step(self, ctx, index, step, state, metrics):
        """Logs the target and achieved sparsity of a mask update made in step ``step - 1``."""
        metrics = dict(metrics)
        update = {k: metrics.pop(k) for k in _UPDATE_KEYS}
        schedule = ctx.sparsity_schedule
        if not schedule.should_update(step - 1):  # host-side copy of the in-step decision
            return metrics
        update = jax.device_get(update)
        if not bool(update["mask_updated"]):
            raise RuntimeError(f"step {step - 1}: the jitted step did not update the masks")
        nonprunable, total = ctx.prunable_counts(ctx.init_params())
        target = float(schedule.sparsity_at(step - 1))
        kept = int(update["kept"]) - nonprunable
        achieved = 1.0 - kept / total if total else 0.0
        ctx.writer.write(
            step,
            ctx.phases[index].name,
            target_sparsity=target,
            achieved_sparsity=achieved,
            kept=kept,
        )
        logging.info(
            "step %d: masks updated, target sparsity %.4f, achieved %.4f (%d of %d kept)",
            step - 1,
            target,
            achieved,
            kept,
            total,
        )
        return metrics

    def target_sparsity(self, config):
        """The schedule's ``final_sparsity``."""
        return config.pruning.schedule.final_sparsity
