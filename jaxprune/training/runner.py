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

import contextlib
import math
import signal
import sys
import threading
from pathlib import Path
from typing import Any

import jax
import ml_collections
import numpy as np
import tqdm
from absl import logging

import jaxprune as jp
from jaxprune.data import prefetch
from jaxprune.training import (
    checkpoint,
    config_check,
    distributed,
    flows,
    init_from,
    metrics,
    prechecks,
    provenance,
    run_config,
    sharding,
)
from jaxprune.training import state as state_lib
from jaxprune.training import workdir as workdir_lib
from jaxprune.training.context import RunContext
from jaxprune.training.result import RunResult, format_table, restore_plan


class RunStopped(Exception):
    """Raised internally when ``debug.stop_at_step`` is reached."""


class RunInterrupted(Exception):
    """SIGINT / SIGTERM stopped the run after saving a checkpoint at ``step``.

    Attributes:
      signum: the signal.
      step: the step of the checkpoint it saved.
      exit_code: 128 + the signal number (130 for SIGINT, 143 for SIGTERM).
    """

    def __init__(self, signum: int, step: int, workdir: Path):
        self.signum, self.step, self.exit_code = signum, step, 128 + signum
        name = signal.Signals(signum).name
        super().__init__(
            f"{name}: stopped at step {step} after saving a checkpoint in {workdir}; rerun the "
            "same command to resume"
        )


class TargetNotReachedError(RuntimeError):
    """The run ended with fewer weights pruned than its target sparsity asks for."""


class RestartRequiredError(ValueError):
    """``metrics.jsonl`` shows progress, but no checkpoint is left to resume from."""


class Runner:
    """Runs (or resumes) the phases of one flow in a work directory."""

    def __init__(self, config: ml_collections.ConfigDict, workdir: Path):
        self.config = config
        self.flow = flows.get(config.flow)
        self.ctx = RunContext(config, workdir, self.flow)
        self.first_index = 0
        # (phase, step) of the test evaluations already in metrics.jsonl (rebuilt on resume).
        self.evaluated: set[tuple[str, int]] = set()
        self.restart = False
        # The signal that asked the run to stop (None while running).
        self.interrupted: int | None = None
        # Per-step train metrics since the last log line (kept in checkpoint meta for resume).
        self.window: list[dict[str, Any]] = []
        # Jitted train steps by ctx.train_step_key, shared by phases that run the same program.
        self.train_steps: dict[tuple, tuple[Any, Any]] = {}
        if config.init_from:
            source = init_from.load(config.init_from, config, self.ctx)
            self.ctx.start_variables = source.variables
            if self.flow.init_from_skips_first_phase:
                self.first_index = 1
                self.source = source
        prechecks.run_all(self.ctx, self.flow)

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

        # One compiled program instead of one per op (about 1 s of a LeNet run's start-up).
        def create(v, m, k):
            return state_lib.create_train_state(v, tx, k, masks=m, step=phase.start)

        args = (start.variables, start.masks, ctx.state_key)
        placed = sharding.state_shardings(jax.eval_shape(create, *args), ctx.mesh)
        state = jax.jit(create, out_shardings=placed)(*args)
        if start.record is not None:
            host = sharding.host(state)
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

    def jitted_train_step(self, index: int, state, tx) -> Any:
        """Phase ``index``'s jitted train step, the earlier phase's when they are the same.

        A flow that keeps the default ``Flow.train_step`` shares the step of an earlier phase
        with an equal ``ctx.train_step_key``: the program is the same (the schedule's numbers
        live in the state), so the phase neither traces nor compiles it again (about 2 s of a
        ResNet-20 prune-and-fine-tune run).
        """
        ctx = self.ctx
        key = None
        if type(self.flow).train_step is flows.Flow.train_step:
            key = ctx.train_step_key(index, state)
        if key is not None and key in self.train_steps:
            return self.train_steps[key][1]
        step = sharding.jit_train_step(
            self.flow.train_step(ctx, index, tx),
            ctx.mesh,
            sharding.state_shardings(state, ctx.mesh),
        )
        if key is not None:  # the model functions stay referenced: their id is in the key
            self.train_steps[key] = (ctx.active, step)
        return step

    def run_phase(self, index: int, state, progress: tqdm.tqdm):
        """Trains phase ``index`` from ``state.step`` to its end; evaluates at the end."""
        ctx, cfg = self.ctx, self.config.training
        phase = ctx.phases[index]
        tx, schedule = ctx.optimizer(index)
        logged_lr = jax.jit(schedule)  # evaluated per log line: one program, not one per op
        train_step = self.jitted_train_step(index, state, tx)
        if progress.total != ctx.phases[-1].end:  # Scratch-B re-planned the phase
            progress.total = ctx.phases[-1].end
            progress.refresh()
        step = int(state.step)
        shard = sharding.data_shard()  # multi-process: this process's rows only
        batches = prefetch.prefetch(
            ctx.ds.train_batches(
                cfg.batch_size,
                self.config.seed,
                start_step=step,
                **({} if shard == (0, 1) else {"shard": shard}),
            ),
            put=sharding.batch_put(ctx.mesh),
            limit=phase.end - step,
        )
        progress.set_description(phase.name)
        last_metrics: dict[str, Any] = {}
        try:
            while step < phase.end:
                state, step_metrics = train_step(state, next(batches))
                step += 1
                step_metrics = self.flow.after_step(ctx, index, step, state, step_metrics)
                self.window.append(step_metrics)
                progress.update(1)
                last_metrics = step_metrics
                if step % cfg.log_every == 0 or step == phase.end:
                    self.log_train(step, phase, logged_lr, progress)
                if step < phase.end and cfg.eval_every and step % cfg.eval_every == 0:
                    ctx.writer.write(step, phase.name, **ctx.evaluate(state))
                if step < phase.end and cfg.checkpoint_every and step % cfg.checkpoint_every == 0:
                    self.save(step, state, index, loss=last_metrics["loss"])
                if self.stop_requested(step, phase.end):
                    self.save(step, state, index, loss=last_metrics["loss"])
                    ctx.ckpt.wait()
                    raise RunInterrupted(self.interrupted or signal.SIGTERM, step, ctx.workdir)
                if self.config.debug.stop_at_step and step >= self.config.debug.stop_at_step:
                    raise RunStopped(step)
        finally:
            batches.close()
        if (phase.name, step) not in self.evaluated:  # a resumed, finished phase has its record
            result = ctx.evaluate(state)
            ctx.writer.write(step, phase.name, **result)
            logging.info("end of phase %s at step %d: %s", phase.name, step, result)
        if index == len(ctx.phases) - 1:
            self.save(step, state, index)
        return state

    def stop_requested(self, step: int, end: int) -> bool:
        """Whether to checkpoint and stop after ``step`` (a signal arrived).

        With several processes they agree every ``training.log_every`` steps (a signal may
        reach them at different steps; the checkpoint is collective), so the run stops at the
        first such step after the signal, on every process at once.
        """
        if jax.process_count() == 1:
            return self.interrupted is not None
        if step % self.config.training.log_every and step != end:
            return False
        return distributed.any_process(self.interrupted is not None)

    def save(self, step: int, state, index: int, loss=None) -> None:
        """Checkpoints ``state`` with the unlogged train metrics of the current log window."""
        window = [{k: float(v) for k, v in m.items()} for m in jax.device_get(self.window)]
        self.ctx.save(step, state, index, loss=loss, window=window)

    def log_train(self, step, phase, schedule, progress) -> None:
        """Writes the mean train metrics of the window; stops on a non-finite or diverged loss."""
        host = jax.device_get(self.window)
        self.window = []
        means = {k: float(np.mean([m[k] for m in host])) for k in host[0]}
        if not math.isfinite(means["loss"]):
            self.ctx.nan_error(step, f"the training loss ({means['loss']})")
        reference = self.ctx.loss_reference.setdefault(phase.name, float(host[0]["loss"]))
        factor = self.config.training.get("divergence_factor", 0.0)
        if factor and reference > 0 and means["loss"] > factor * reference:
            self.ctx.nan_error(
                step,
                f"the training loss ({means['loss']:.4g}) is over "
                f"training.divergence_factor={factor:g} times the phase's first loss "
                f"({reference:.4g}):",
            )
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

    @contextlib.contextmanager
    def stop_on_signals(self):
        """SIGINT / SIGTERM ask the train loop to checkpoint and stop; a second one aborts."""
        if threading.current_thread() is not threading.main_thread():
            yield
            return

        def handler(signum, frame):
            if self.interrupted is not None:
                raise KeyboardInterrupt
            self.interrupted = signum
            logging.warning("%s: saving a checkpoint at the next step", signal.Signals(signum).name)

        previous = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
        try:
            yield
        finally:
            for s, h in previous.items():
                signal.signal(s, h)

    # ---- resume ---------------------------------------------------------------------------

    def resume(self) -> tuple[int, state_lib.TrainState | None]:
        """Restores the newest checkpoint, if any: (phase index, state or None)."""
        ctx = self.ctx
        latest = ctx.ckpt.latest_step()
        if latest is None:
            # Multi-process: process 0 decides and writes; the others wait at the barrier.
            records = ctx.writer.read() if ctx.is_writer else []
            if records and not self.restart:
                raise RestartRequiredError(
                    f"{ctx.writer.path} records progress up to step "
                    f"{max(r['step'] for r in records)}, but {ctx.ckpt.directory} holds no "
                    "checkpoint to resume from; pass --restart (train_and_evaluate(..., "
                    "restart=True)) to discard those records and start over"
                )
            ctx.writer.truncate_after(-1)
            distributed.barrier("resume")
            return self.first_index, None
        where = ctx.ckpt.directory / str(latest)
        meta = ctx.ckpt.restore_meta(latest)  # refuses a checkpoint of another config
        index = restore_plan(ctx, meta, where)
        ctx.use_model(ctx.fns_for(index))
        state = ctx.ckpt.restore_state(latest, ctx.abstract_state(index))
        if int(state.step) != latest:
            raise checkpoint.CheckpointError(f"checkpoint {where} holds step {int(state.step)}")
        ctx.carry = ctx.ckpt.restore_carry(latest)
        ctx.loss_reference = dict(meta.get("loss_reference") or {})
        self.window = [{k: np.float32(v) for k, v in m.items()} for m in meta.get("window") or []]
        ctx.elapsed_before = float(meta.get("elapsed_s", 0.0))
        ctx.writer.truncate_after(latest)
        distributed.barrier("resume")
        # Records past `latest` (which process 0 may already be appending) do not count.
        self.evaluated = {
            (r["phase"], r["step"])
            for r in ctx.writer.read()
            if "test_accuracy" in r and r["step"] <= latest
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
        host = sharding.host(state)
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
        target = self.flow.target_sparsity(self.config)
        extra["target_reached"] = self.target_reached(target, report)
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
            "mesh": dict(ctx.mesh.shape),
            "provenance": provenance.provenance(),
        }
        return summary, report, records

    def target_reached(self, target: float | None, report: Any) -> bool:
        """Whether the final masks prune at least the target (the kept budget, up to rounding).

        Global selection keeps exactly ``n_keep_for(target, N)``; a layerwise quota rounds per
        layer, so each layer may keep one more. An effective target is met by its search.
        """
        if target is None or self.config.pruning.target == "effective":
            return True
        kept, total = report.kept, report.total
        slack = len(report.layers) if self.config.pruning.selection == "layerwise" else 0
        return kept <= jp.n_keep_for(target, total) + slack

    def run(self) -> RunResult:
        """Runs (or resumes) every phase; writes summary, plots and the table."""
        ctx = self.ctx
        # From the start, not only around the loop: a signal that arrives while the run restores
        # or compiles is acted on at the first step (checkpoint, exit 130/143), not lost.
        signals = contextlib.ExitStack()
        signals.enter_context(self.stop_on_signals())
        try:
            run_config.write_or_check_config(ctx.workdir, ctx.config_dict, write=ctx.is_writer)
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
        finally:
            signals.close()
        ctx.writer.flush()
        distributed.barrier("records")  # every process reads process 0's final records
        summary, report, records = self.summary(state)
        if ctx.is_writer:
            metrics.write_summary(ctx.workdir, summary)
        if not summary["target_reached"]:
            raise TargetNotReachedError(
                f"the run ended at sparsity {report.sparsity:.6f} ({report.kept} of "
                f"{report.total} prunable weights kept), below its target "
                f"{summary['target_sparsity']}; see {ctx.workdir / 'summary.json'}"
            )
        if ctx.is_writer:
            if self.config.training.get("plots", True):
                from jaxprune.training import plots  # matplotlib: only when drawing

                folder = ctx.workdir / "plots"
                plots.plot_learning_curve(records, folder / "learning_curve.png")
                plots.plot_layer_sparsity(report.layers, folder / "layer_sparsity.png")
                plots.plot_effective_sparsity(report.layers, folder / "effective_sparsity.png")
            print(format_table(summary, report))
        host = sharding.host(state)
        return RunResult(
            workdir=ctx.workdir,
            config=self.config,
            summary=summary,
            variables={"params": host.params, "batch_stats": host.batch_stats},
            masks=host.masks,
            step=int(host.step),
            apply_fn=ctx.active.apply,
        )


def train_and_evaluate(
    config: ml_collections.ConfigDict, workdir: str | Path, *, restart: bool = False
) -> RunResult:
    """Trains, prunes and fine-tunes as ``config.flow`` says; resumes from ``workdir``.

    Args:
      config: a run config shaped like ``configs/default.py``.
      workdir: run directory; gets ``config.json``, ``metrics.jsonl``, ``summary.json``,
        ``checkpoints/`` and ``plots/``. If it already holds a run of the same config, that run
        is resumed from its newest checkpoint.
      restart: start over when ``metrics.jsonl`` shows progress but no checkpoint is left
        (otherwise an error).

    Returns:
      A ``RunResult`` with the summary (also in ``summary.json``), the final variables and
      masks; if ``debug.stop_at_step`` stopped the run early, one with ``stopped_at_step`` set
      and no summary.

    Raises:
      ValueError: for a bad config field, or a config that differs from the workdir's run.
      CheckpointError: for an unreadable or mismatched checkpoint.
      FloatingPointError: when the loss or the params become NaN/inf.
    """
    workdir = workdir_lib.check_workdir_path(workdir)  # before anything else: '' is not '.'
    config_check.validate_config(config)
    with workdir_lib.open_workdir(
        workdir,
        run_config.config_to_dict(config),
        restart=restart,
        is_writer=jax.process_index() == 0,
    ) as run_dir:
        logging.info("run %s in %s", run_dir.run_id, run_dir.path)
        runner = Runner(config, workdir)
        runner.restart = restart
        try:
            return runner.run()
        except RunStopped as stopped:
            logging.info("debug.stop_at_step reached at step %s", stopped.args[0])
            return RunResult(workdir=workdir, config=config, stopped_at_step=int(stopped.args[0]))
        finally:
            runner.ctx.ckpt.close()  # pending Orbax saves finish before the lock is released
            runner.ctx.writer.close()
