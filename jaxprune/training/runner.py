"""``train_and_evaluate``: one run of a config in a work directory, whatever its flow.

The runner names no flow. It resumes from the newest checkpoint, then for each phase of the
flow (``flows/``): asks the flow for the phase's first state (``Flow.begin_phase``), writes the
'pruned' record and checkpoints it when the flow pruned, trains with the flow's step (logging
train metrics, evaluating and checkpointing on the ``training`` block's cadence), and evaluates
at the end of the phase. Then it writes ``summary.json``, the plots and the final table.

Resume: every checkpoint carries the phase it belongs to (meta), the phase lengths and narrow
widths (meta) and the flow's ``carry`` (an Orbax item), so a rerun of the same command resumes
inside the right phase and, because batches and dropout keys are pure functions of
``(seed, step)``, ends with the same params and metrics as an uninterrupted run. Train metrics
are means over the steps since the previous log line, so they also match exactly when
``checkpoint_every`` is a multiple of ``log_every`` (true for the shipped configs).
``metrics.jsonl`` is read back only to rebuild the summary and to drop records newer than the
restored checkpoint.
"""

import math
import sys
from pathlib import Path
from typing import Any

import jax
import ml_collections
import numpy as np
import tqdm
from absl import logging

from jaxprune.data import prefetch
from jaxprune.training import (
    checkpoint,
    config_check,
    flows,
    init_from,
    metrics,
    plots,
    run_config,
    sharding,
)
from jaxprune.training import state as state_lib
from jaxprune.training.context import RunContext
from jaxprune.training.result import RunResult, format_table, restore_plan


class RunStopped(Exception):
    """Raised internally when ``debug.stop_at_step`` is reached."""


class Runner:
    """Runs (or resumes) the phases of one flow in a work directory."""

    def __init__(self, config: ml_collections.ConfigDict, workdir: Path):
        self.config = config
        self.flow = flows.get(config.flow)
        self.ctx = RunContext(config, workdir, self.flow)
        self.first_index = 0
        # (phase, step) of the test evaluations already in metrics.jsonl (rebuilt on resume).
        self.evaluated: set[tuple[str, int]] = set()
        if config.init_from:
            source = init_from.load(config.init_from, config, self.ctx)
            self.ctx.start_variables = source.variables
            if self.flow.init_from_skips_first_phase:
                self.first_index = 1
                self.source = source

    # ---- phases ---------------------------------------------------------------------------

    def start_phase(self, index: int, previous: state_lib.TrainState | None):
        """Builds the first state of phase ``index`` as the flow says; records a prune."""
        ctx = self.ctx
        start = self.flow.begin_phase(ctx, index, previous)
        if start.model is not None:
            ctx.use_model(start.model)
        if start.num_steps is not None:
            ctx.set_phase_steps(index, start.num_steps)
        phase = ctx.phases[index]
        tx, _ = ctx.optimizer(index)
        state = state_lib.create_train_state(
            start.variables, tx, ctx.state_key, masks=start.masks, step=phase.start
        )
        state = sharding.replicate(state, ctx.mesh)
        if start.record is not None:
            host = jax.device_get(state)
            record = ctx.sparsity_report(host.params, host.masks, host.batch_stats).as_dict()
            record.update(start.record)
            if start.evaluate:
                record.update(ctx.evaluate(state))
            ctx.writer.write(phase.start, "pruned", **record)
            logging.info(
                "pruned at step %d: sparsity %.4f, effective sparsity %.4f",
                phase.start,
                record["sparsity"],
                record["effective_sparsity"],
            )
            ctx.save(phase.start, state, index)
        return state

    def run_phase(self, index: int, state, progress: tqdm.tqdm):
        """Trains phase ``index`` from ``state.step`` to its end; evaluates at the end."""
        ctx, cfg = self.ctx, self.config.training
        phase = ctx.phases[index]
        tx, schedule = ctx.optimizer(index)
        train_step = sharding.jit_train_step(self.flow.train_step(ctx, index, tx), ctx.mesh)
        if progress.total != ctx.phases[-1].end:  # Scratch-B re-planned the phase
            progress.total = ctx.phases[-1].end
            progress.refresh()
        step = int(state.step)
        batches = prefetch.prefetch(
            ctx.ds.train_batches(cfg.batch_size, self.config.seed, start_step=step),
            put=lambda batch: sharding.shard_batch(batch, ctx.mesh),
            limit=phase.end - step,
        )
        window: list[dict[str, jax.Array]] = []
        progress.set_description(phase.name)
        last_metrics: dict[str, Any] = {}
        try:
            while step < phase.end:
                state, step_metrics = train_step(state, next(batches))
                step += 1
                step_metrics = self.flow.after_step(ctx, index, step, state, step_metrics)
                window.append(step_metrics)
                progress.update(1)
                last_metrics = step_metrics
                if step % cfg.log_every == 0 or step == phase.end:
                    self.log_train(step, phase, window, schedule, progress)
                    window = []
                if step < phase.end and cfg.eval_every and step % cfg.eval_every == 0:
                    ctx.writer.write(step, phase.name, **ctx.evaluate(state))
                if step < phase.end and cfg.checkpoint_every and step % cfg.checkpoint_every == 0:
                    ctx.save(step, state, index, loss=last_metrics["loss"])
                if self.config.debug.stop_at_step and step >= self.config.debug.stop_at_step:
                    raise RunStopped(step)
        finally:
            batches.close()
        if (phase.name, step) not in self.evaluated:  # a resumed, finished phase has its record
            result = ctx.evaluate(state)
            ctx.writer.write(step, phase.name, **result)
            logging.info("end of phase %s at step %d: %s", phase.name, step, result)
        if index == len(ctx.phases) - 1:
            ctx.save(step, state, index)
        return state

    def log_train(self, step, phase, window, schedule, progress) -> None:
        """Writes the mean train metrics of ``window``; stops on a non-finite loss."""
        host = jax.device_get(window)
        means = {k: float(np.mean([m[k] for m in host])) for k in host[0]}
        if not math.isfinite(means["loss"]):
            self.ctx.nan_error(step, f"the training loss ({means['loss']})")
        lr = float(schedule(step - phase.start - 1))
        extra = {"train_penalty": means["penalty"]} if "penalty" in means else {}
        self.ctx.writer.write(
            step,
            phase.name,
            train_loss=means["loss"],
            train_accuracy=means["accuracy"],
            learning_rate=lr,
            **extra,
        )
        progress.set_postfix(loss=f"{means['loss']:.4f}", acc=f"{means['accuracy']:.3f}")
        # With a live progress bar the log lines would only break it up.
        log = logging.debug if not progress.disable else logging.info
        log(
            "step %d (%s): loss %.4f accuracy %.4f lr %.3g",
            step,
            phase.name,
            means["loss"],
            means["accuracy"],
            lr,
        )

    # ---- resume ---------------------------------------------------------------------------

    def resume(self) -> tuple[int, state_lib.TrainState | None]:
        """Restores the newest checkpoint, if any: (phase index, state or None)."""
        ctx = self.ctx
        latest = ctx.ckpt.latest_step()
        if latest is None:
            ctx.writer.truncate_after(-1)
            return self.first_index, None
        where = ctx.ckpt.directory / str(latest)
        meta = ctx.ckpt.restore_meta(latest)
        run_config.check_same_config(
            meta.get("config", {}), ctx.config_dict, f"the one stored in checkpoint {where}"
        )
        index = restore_plan(ctx, meta, where)
        ctx.use_model(ctx.fns_for(index))
        state = ctx.ckpt.restore_state(latest, ctx.abstract_state(index))
        if int(state.step) != latest:
            raise checkpoint.CheckpointError(f"checkpoint {where} holds step {int(state.step)}")
        ctx.carry = ctx.ckpt.restore_carry(latest)
        ctx.elapsed_before = float(meta.get("elapsed_s", 0.0))
        ctx.writer.truncate_after(latest)
        self.evaluated = {
            (r["phase"], r["step"]) for r in ctx.writer.read() if "test_accuracy" in r
        }
        logging.info("resuming from step %d (phase %s)", latest, ctx.phases[index].name)
        return index, state

    # ---- whole run ------------------------------------------------------------------------

    def summary(self, state) -> tuple[dict[str, Any], Any, list[dict]]:
        """Final results (accuracy/loss per phase, sparsity, wall time), report, records."""
        ctx = self.ctx
        records = ctx.writer.read()
        evals = {}
        for record in records:
            if "test_accuracy" in record:
                evals[record["phase"]] = {
                    "step": record["step"],
                    "test_accuracy": record["test_accuracy"],
                    "test_loss": record["test_loss"],
                }
        final = evals[ctx.phases[-1].name]
        host = jax.device_get(state)
        report = ctx.sparsity_report(host.params, host.masks, host.batch_stats)
        extra = self.flow.summary(ctx, records, evals)
        variables = {"params": host.params, "batch_stats": host.batch_stats}
        extra["flops"] = ctx.flops_record(ctx.flops(ctx.active, variables, host.masks))
        if ctx.structured:
            extra["structured"] = {
                "method": self.config.structured.method,
                "widths": None if ctx.widths is None else list(ctx.widths),
            }
        if self.config.init_from:
            extra["init_from"] = self.config.init_from
        summary = {
            **extra,
            "model": self.config.model.name,
            "dataset": self.config.dataset.name,
            "flow": self.config.flow,
            "target_sparsity": self.flow.target_sparsity(self.config),
            "steps": int(host.step),
            "test_accuracy": final["test_accuracy"],
            "test_loss": final["test_loss"],
            "phases": evals,
            "sparsity": report.as_dict(),
            "wall_time_s": ctx.elapsed(),
            "devices": [str(d) for d in ctx.mesh.devices.flat],
        }
        return summary, report, records

    def run(self) -> RunResult:
        """Runs (or resumes) every phase; writes summary, plots and the table."""
        ctx = self.ctx
        run_config.write_or_check_config(ctx.workdir, ctx.config_dict)
        index, state = self.resume()
        fresh = state is None
        if fresh and self.first_index > 0:
            # config.init_from stands in for the flow's first phase: its weights end phase 0.
            state = self.source.state_for(ctx, self.first_index)
            record = ctx.evaluate(state)
            ctx.writer.write(
                ctx.phases[0].end, ctx.phases[0].name, init_from=self.config.init_from, **record
            )
        progress = tqdm.tqdm(
            total=ctx.phases[-1].end,
            initial=0 if state is None else int(state.step),
            disable=not sys.stdout.isatty(),
            dynamic_ncols=True,
        )
        try:
            for i in range(index, len(ctx.phases)):
                if fresh or i > index:
                    state = self.start_phase(i, state)
                state = self.run_phase(i, state, progress)
        finally:
            progress.close()
        summary, report, records = self.summary(state)
        metrics.write_summary(ctx.workdir, summary)
        plots.plot_learning_curve(records, ctx.workdir / "plots" / "learning_curve.png")
        plots.plot_layer_sparsity(report.layers, ctx.workdir / "plots" / "layer_sparsity.png")
        plots.plot_effective_sparsity(
            report.layers, ctx.workdir / "plots" / "effective_sparsity.png"
        )
        print(format_table(summary, report))
        host = jax.device_get(state)
        return RunResult(
            workdir=ctx.workdir,
            config=self.config,
            summary=summary,
            variables={"params": host.params, "batch_stats": host.batch_stats},
            masks=host.masks,
            step=int(host.step),
            apply_fn=ctx.active.apply,
        )


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str | Path) -> RunResult:
    """Trains, prunes and fine-tunes as ``config.flow`` says; resumes from ``workdir``.

    Args:
      config: a run config shaped like ``configs/default.py``.
      workdir: run directory; gets ``config.json``, ``metrics.jsonl``, ``summary.json``,
        ``checkpoints/`` and ``plots/``. If it already holds a run of the same config, that run
        is resumed from its newest checkpoint.

    Returns:
      A ``RunResult`` with the summary (also in ``summary.json``), the final variables and
      masks; if ``debug.stop_at_step`` stopped the run early, one with ``stopped_at_step`` set
      and no summary.

    Raises:
      ValueError: for a bad config field, or a config that differs from the workdir's run.
      CheckpointError: for an unreadable or mismatched checkpoint.
      FloatingPointError: when the loss or the params become NaN/inf.
    """
    config_check.validate_config(config)
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    runner = Runner(config, workdir)
    try:
        return runner.run()
    except RunStopped as stopped:
        logging.info("debug.stop_at_step reached at step %s", stopped.args[0])
        return RunResult(workdir=workdir, config=config, stopped_at_step=int(stopped.args[0]))
    finally:
        runner.ctx.ckpt.close()
