"""``train_and_evaluate``: one run of a config in a work directory (train, prune, fine-tune).

A run is a list of phases over one global step counter:

* ``flow='dense'``:          ``dense`` [0, T)
* ``flow='prune_finetune'``: ``dense`` [0, T), prune at T, ``finetune`` [T, T + F)
* ``flow='prune_at_init'``:  prune the initial weights, ``sparse`` [0, T)
* ``flow='gradual'``:        ``gradual`` [0, T): dense warm-up, then masks recomputed inside the
  jitted step at the steps of ``pruning.schedule`` (Zhu & Gupta), then recovery at the final
  sparsity. Every mask update writes ``target_sparsity``, ``achieved_sparsity`` and ``kept``
  to metrics.jsonl (at the step count after the update's train step).
* ``flow='iterative'``:      lottery ticket (Frankle & Carbin): ``round_0`` [0, T) trains the
  dense net; each ``round_r`` (r = 1..R, ``pruning.iterative.rounds``) starts by pruning the
  trained weights of round r-1 to the cumulative sparsity ``1 - (1 - rate)^r`` among the weights
  round r-1 kept (nested masks, ``prune.nested_masks``), rewinds the survivors to the initial
  weights (``rewind_step=0``) or to the weights after ``rewind_step`` steps of round 0 (saved to
  ``workdir/rewind/`` when reached), and retrains for T steps with a fresh optimizer over
  [r T, (r + 1) T). Rounds are phases, so masks and round state resume like any phase.
  ``summary.json`` gets ``rounds``: per round its sparsity, kept count and test accuracy.

Effective sparsity (Vysogorets & Kempe): after one-shot pruning, metrics.jsonl gets a
``pruned`` record with the direct and effective sparsity and compression, total and per layer
(``sparsity_report(..., effective_mask=...).as_dict()``); ``summary.json``, the printed table
and ``plots/effective_sparsity.png`` carry them for the final masks.

Pruning happens at the start of a phase; the optimizer state is re-initialised there (so no
dense-phase momentum reaches the sparse net) and the pruned state is checkpointed at once,
tagged with its phase. Periodic checkpoints (``training.checkpoint_every``) and the final
one carry the phase too, so a rerun of the same command resumes inside the right phase and,
because batches and dropout keys are pure functions of ``(seed, step)``, ends with the same
params and metrics as an uninterrupted run. Train metrics are means over the steps since the
previous log line, so they also match exactly when ``checkpoint_every`` is a multiple of
``log_every`` (true for the shipped configs).
"""

import dataclasses
import math
import os
import sys
import time
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import tqdm
from absl import logging

import jaxprune as jp
from jaxprune import data, models
from jaxprune.training import (
    checkpoint,
    config_check,
    metrics,
    optim,
    plots,
    prune,
    run_config,
    sharding,
    steps,
)
from jaxprune.training import (
    state as state_lib,
)

PyTree = Any


@dataclasses.dataclass(frozen=True)
class Phase:
    """One stretch of training with its own optimizer.

    Attributes:
      name: 'dense', 'finetune', 'sparse', 'gradual' or 'round_<r>' (written to metrics.jsonl).
      start: global step at which the phase starts.
      num_steps: its length in steps.
      learning_rate: peak learning rate.
      lr_schedule: schedule name.
      prune_first: whether masks are computed at the start of the phase.
    """

    name: str
    start: int
    num_steps: int
    learning_rate: float
    lr_schedule: str
    prune_first: bool

    @property
    def end(self) -> int:
        """Global step at which the phase ends."""
        return self.start + self.num_steps


class RunStopped(Exception):
    """Raised internally when ``debug.stop_at_step`` is reached."""


def _phase_steps(block: ml_collections.ConfigDict, steps_per_epoch: int) -> int:
    if block.steps > 0:
        return int(block.steps)
    return max(1, round(block.epochs * steps_per_epoch))


def plan_phases(config: ml_collections.ConfigDict, steps_per_epoch: int) -> list[Phase]:
    """The phases of ``config.flow`` with their global step ranges.

    Args:
      config: a validated run config.
      steps_per_epoch: optimizer steps per training epoch at ``training.batch_size``.

    Returns:
      The list of phases in execution order.
    """
    training = config.training
    first = _phase_steps(training, steps_per_epoch)
    if config.flow == "dense":
        return [Phase("dense", 0, first, training.learning_rate, training.lr_schedule, False)]
    if config.flow == "prune_at_init":
        return [Phase("sparse", 0, first, training.learning_rate, training.lr_schedule, True)]
    if config.flow == "gradual":
        return [Phase("gradual", 0, first, training.learning_rate, training.lr_schedule, False)]
    if config.flow == "iterative":
        rewind = config.pruning.iterative.rewind_step
        if rewind >= first:
            raise ValueError(
                f"pruning.iterative.rewind_step must be < the length of round 0 ({first} steps), "
                f"got {rewind}"
            )
        return [
            Phase(
                f"round_{r}", r * first, first, training.learning_rate, training.lr_schedule, r > 0
            )
            for r in range(config.pruning.iterative.rounds + 1)
        ]
    finetune = config.finetune
    return [
        Phase("dense", 0, first, training.learning_rate, training.lr_schedule, False),
        Phase(
            "finetune",
            first,
            _phase_steps(finetune, steps_per_epoch),
            finetune.learning_rate,
            finetune.lr_schedule,
            True,
        ),
    ]


def _load_dataset(config: ml_collections.ConfigDict) -> data.Dataset:
    ds_cfg = config.dataset
    kwargs = {}
    if ds_cfg.name == "synthetic":
        kwargs = {"shape_like": ds_cfg.shape_like, "seed": config.seed}
        if ds_cfg.num_train:
            kwargs["num_train"] = ds_cfg.num_train
        if ds_cfg.num_test:
            kwargs["num_test"] = ds_cfg.num_test
    return data.get_dataset(ds_cfg.name, data_dir=ds_cfg.data_dir, augment=ds_cfg.augment, **kwargs)


@jax.jit
def _all_finite(tree: PyTree) -> jax.Array:
    return jnp.all(jnp.asarray([jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(tree)]))


class _Run:
    """The mutable bookkeeping of one ``train_and_evaluate`` call."""

    def __init__(self, config: ml_collections.ConfigDict, workdir: Path):
        self.config = config
        self.workdir = workdir
        self.mesh = sharding.make_mesh()
        sharding.check_batch_size(config.training.batch_size, self.mesh)
        self.ds = _load_dataset(config)
        self.model = models.get_model(
            config.model.name, self.ds.num_classes, width=config.model.width
        )
        self.phases = plan_phases(config, self.ds.steps_per_epoch(config.training.batch_size))
        self.config_dict = run_config.config_to_dict(config)
        self.writer = metrics.MetricsWriter(workdir)
        self.ckpt = checkpoint.Checkpointer(
            workdir / "checkpoints", keep=config.training.keep_checkpoints
        )
        root = jax.random.PRNGKey(config.seed)
        self.state_key, self.prune_key = jax.random.split(root, 2)
        # Weights are drawn with the 'rbg' PRNG (XLA RngBitGenerator; split/fold_in stay
        # threefry): compiling a threefry init of a ResNet takes ~10x longer on CPU. The
        # initial weights remain a pure function of the seed on a given backend.
        self.init_key = jax.random.key(config.seed, impl="rbg")
        sample = jnp.zeros((1, *self.ds.input_shape), jnp.float32)
        self.sample_input = sample
        linear_model = self.model.clone(linear=True)
        self.linear_apply = lambda p, x: linear_model.apply({"params": p}, x)
        self._init = jax.jit(lambda key: self.model.init({"params": key}, sample, train=False))
        self.elapsed_before = 0.0
        self.start_time = time.time()
        self.train_step = None
        self.eval_step = sharding.jit_eval_step(steps.eval_step_fn(self.model.apply), self.mesh)

    # ---- building blocks -------------------------------------------------------------------

    def init_variables(self) -> PyTree:
        """Initial model variables (a pure function of the seed)."""
        return self._init(self.init_key)

    def optimizer(self, phase: Phase) -> tuple[optax.GradientTransformation, optax.Schedule]:
        """Optimizer and schedule of a phase."""
        return optim.make_optimizer(
            self.config.training,
            learning_rate=phase.learning_rate,
            lr_schedule=phase.lr_schedule,
            total_steps=phase.num_steps,
        )

    def abstract_state(self, phase: Phase) -> PyTree:
        """Shape/dtype/sharding skeleton of a state of ``phase`` (for restoring)."""
        tx, _ = self.optimizer(phase)
        shapes = jax.eval_shape(
            lambda: state_lib.create_train_state(self._init(self.init_key), tx, self.state_key)
        )
        rep = sharding.replicated(self.mesh)
        return jax.tree.map(lambda s: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=rep), shapes)

    def score_inputs(self, params: PyTree, batch_stats: PyTree) -> dict[str, Any]:
        """``batch``, ``apply_fn`` and layer ``order`` for scoring ``params``."""
        pruning = self.config.pruning

        def apply_fn(p, x):
            variables = {"params": p}
            if jax.tree.leaves(batch_stats):
                variables["batch_stats"] = batch_stats
            return self.model.apply(variables, x, train=False)

        batch = self.ds.sample(min(pruning.score_batch_size, self.ds.num_train), self.config.seed)
        batch = {k: jnp.asarray(v) for k, v in batch.items()}
        order = None
        # Quotas that treat the first/last layer specially need the forward order of the
        # layers (names alone sort 'BasicBlock_0/...' before the stem 'Conv_0').
        if pruning.selection == "layerwise" and hasattr(jp, "layer_order"):
            order = jp.layer_order(apply_fn, params, batch["image"][:1])
        return {"batch": batch, "apply_fn": apply_fn, "order": order}

    def masks_for(self, params: PyTree, batch_stats: PyTree) -> PyTree:
        """One-shot masks from ``config.pruning`` for ``params``."""
        masks = prune.compute_masks(
            self.config.pruning,
            jax.device_get(params),
            key=self.prune_key,
            **self.score_inputs(params, batch_stats),
            linear_apply_fn=self.linear_apply,
            sample_input=self.sample_input,
        )
        return jax.tree.map(lambda m: np.asarray(m, dtype=bool), masks)

    def rewind_path(self) -> Path:
        """File of the weights after ``pruning.iterative.rewind_step`` steps (flow='iterative')."""
        return self.workdir / "rewind" / f"step_{self.config.pruning.iterative.rewind_step}.npz"

    def save_rewind_point(self, state: state_lib.TrainState) -> None:
        """Writes params and batch_stats of ``state`` to ``rewind_path`` (atomically)."""
        host = jax.device_get({"params": state.params, "batch_stats": state.batch_stats})
        path = self.rewind_path()
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp.npz")
        np.savez(tmp, *[np.asarray(x) for x in jax.tree.leaves(host)])
        os.replace(tmp, path)

    def rewind_variables(self) -> PyTree:
        """The weights survivors are rewound to: initial ones or the saved step-k ones."""
        variables = jax.device_get(self.init_variables())
        if self.config.pruning.iterative.rewind_step == 0:
            return variables
        variables = {"params": variables["params"], "batch_stats": variables.get("batch_stats", {})}
        path = self.rewind_path()
        if not path.exists():
            raise checkpoint.CheckpointError(
                f"the rewind weights {path} (saved at step "
                f"{self.config.pruning.iterative.rewind_step} of round 0) are missing"
            )
        with np.load(path) as stored:
            arrays = [stored[f"arr_{i}"] for i in range(len(stored.files))]
        return jax.tree.unflatten(jax.tree.structure(variables), arrays)

    def iterative_masks(self, index: int, params: PyTree, batch_stats: PyTree, previous) -> PyTree:
        """Masks of round ``index``: nested in ``previous``, at the round's cumulative sparsity."""
        sparsity = prune.iterative_sparsity(self.config.pruning.iterative.rate, index)
        return prune.nested_masks(
            self.config.pruning,
            jax.device_get(params),
            jax.device_get(previous),
            sparsity,
            key=jax.random.fold_in(self.prune_key, index),
            **self.score_inputs(params, batch_stats),
        )

    def sparsity_report(self, params: PyTree, masks: PyTree) -> jp.SparsityReport:
        """Direct and effective sparsity of ``masks`` (effective mask of the linear model)."""
        params, masks = jax.device_get((params, masks))
        prunable = prune.prunable_spec(self.config.pruning)
        emask = jp.effective_mask(self.linear_apply, params, masks, self.sample_input, prunable)
        return jp.sparsity_report(params, masks, effective_mask=emask, prunable=prunable)

    def gradual_step_fn(self, tx, schedule, params: PyTree, num_steps: int):
        """The train step with in-step mask updates of ``schedule`` (flow='gradual')."""
        pruning = self.config.pruning
        order = None
        if pruning.selection == "layerwise" and hasattr(jp, "layer_order"):
            sample = jnp.zeros((1, *self.ds.input_shape), jnp.float32)
            order = jp.layer_order(
                lambda p, x: self.model.apply({"params": p}, x, train=False), params, sample
            )
        mask_fn = prune.traced_mask_fn(
            pruning, schedule, jax.device_get(params), num_steps=num_steps, order=order
        )
        return steps.gradual_train_step_fn(self.model.apply, tx, schedule, mask_fn)

    def nonprunable_count(self, params: PyTree) -> tuple[int, int]:
        """(entries of non-prunable leaves, entries of prunable leaves) of ``params``."""
        flags = jp.pruning.tree.prunable_flags(params, prune.prunable_spec(self.config.pruning))
        sizes = [int(np.size(x)) for x in jax.tree.leaves(params)]
        prunable = sum(n for n, f in zip(sizes, flags, strict=True) if f)
        return sum(sizes) - prunable, prunable

    def log_mask_update(
        self,
        step: int,
        phase: str,
        target: float,
        update: dict[str, jax.Array],
        counts: tuple[int, int],
    ) -> None:
        """Writes the target and achieved sparsity of the mask update in step ``step - 1``."""
        nonprunable, total = counts
        update = jax.device_get(update)
        if not bool(update["mask_updated"]):
            raise RuntimeError(f"step {step - 1}: the jitted step did not update the masks")
        kept = int(update["kept"]) - nonprunable
        achieved = 1.0 - kept / total if total else 0.0
        self.writer.write(
            step,
            phase,
            target_sparsity=float(target),
            achieved_sparsity=achieved,
            kept=kept,
        )
        logging.info(
            "step %d: masks updated, target sparsity %.4f, achieved %.4f (%d of %d kept)",
            step - 1,
            float(target),
            achieved,
            kept,
            total,
        )

    def meta(self, phase_index: int) -> dict[str, Any]:
        """JSON meta stored next to a checkpoint."""
        return {
            "phase": self.phases[phase_index].name,
            "phase_index": phase_index,
            "elapsed_s": self.elapsed_before + time.time() - self.start_time,
            "config": self.config_dict,
        }

    def save(self, step: int, state: state_lib.TrainState, phase_index: int, loss=None) -> None:
        """Checkpoints ``state`` unless it holds NaN/inf (then raises, keeping older ones)."""
        finite = bool(_all_finite(state.params))
        if loss is not None:
            finite = finite and math.isfinite(float(loss))
        if not finite:
            self.nan_error(step, "params or loss")
        self.ckpt.save(step, state, self.meta(phase_index))

    def nan_error(self, step: int, what: str) -> None:
        """Raises FloatingPointError naming the step and the last good checkpoint."""
        self.ckpt.wait()
        last = self.ckpt.latest_step()
        kept = (
            f"the last good checkpoint (step {last}) is kept in {self.ckpt.directory}"
            if last is not None
            else "no checkpoint had been written yet"
        )
        raise FloatingPointError(
            f"training diverged: {what} not finite at step {step}; stopping ({kept}). "
            "Lower training.learning_rate or check the data."
        )

    def evaluate(self, state: state_lib.TrainState) -> dict[str, float]:
        """Test loss and accuracy with BatchNorm running averages (``dataset.eval_limit``)."""
        batch_size = self.config.training.batch_size
        limit = self.config.dataset.eval_limit or None
        loss_sum = correct = count = 0.0
        seen = 0
        for batch in self.ds.eval_batches(batch_size, split="test"):
            if limit is not None:
                if seen >= limit:
                    break
                keep = np.arange(seen, seen + batch_size) < limit
                batch = dict(batch, weight=batch["weight"] * keep)
            seen += batch_size
            out = jax.device_get(self.eval_step(state, sharding.shard_batch(batch, self.mesh)))
            loss_sum += float(out["loss_sum"])
            correct += float(out["correct"])
            count += float(out["count"])
        return {"test_loss": loss_sum / count, "test_accuracy": correct / count}

    # ---- phases ----------------------------------------------------------------------------

    def start_phase(
        self, index: int, previous: state_lib.TrainState | None
    ) -> state_lib.TrainState:
        """Builds the first state of phase ``index`` (pruning first if the phase asks)."""
        phase = self.phases[index]
        tx, _ = self.optimizer(phase)
        if previous is None:
            variables = self.init_variables()
        else:
            previous = jax.device_get(previous)
            variables = {"params": previous.params, "batch_stats": previous.batch_stats}
        masks = None
        iterative = self.config.flow == "iterative" and phase.prune_first
        if iterative:
            masks = self.iterative_masks(
                index, variables["params"], variables.get("batch_stats", {}), previous.masks
            )
            variables = self.rewind_variables()
        elif phase.prune_first:
            masks = self.masks_for(variables["params"], variables.get("batch_stats", {}))
        state = state_lib.create_train_state(
            variables, tx, self.state_key, masks=masks, step=phase.start
        )
        state = sharding.replicate(state, self.mesh)
        if phase.prune_first:
            record = self.sparsity_report(variables["params"], masks).as_dict()
            if iterative:
                rate = self.config.pruning.iterative.rate
                record.update(round=index, target_sparsity=prune.iterative_sparsity(rate, index))
            elif previous is not None:
                record.update(self.evaluate(state))
            self.writer.write(phase.start, "pruned", **record)
            logging.info(
                "pruned at step %d: sparsity %.4f, effective sparsity %.4f",
                phase.start,
                record["sparsity"],
                record["effective_sparsity"],
            )
            self.save(phase.start, state, index)
        return state

    def run_phase(
        self, index: int, state: state_lib.TrainState, progress: tqdm.tqdm
    ) -> state_lib.TrainState:
        """Trains phase ``index`` from ``state.step`` to its end; evaluates at the end."""
        phase = self.phases[index]
        cfg = self.config.training
        tx, schedule = self.optimizer(phase)
        sparsity_schedule = None
        if self.config.flow == "gradual":
            sparsity_schedule = prune.make_schedule(self.config.pruning.schedule)
            step_fn = self.gradual_step_fn(tx, sparsity_schedule, state.params, phase.end)
            nonprunable = self.nonprunable_count(state.params)
        else:
            step_fn = steps.train_step_fn(self.model.apply, tx)
        self.train_step = sharding.jit_train_step(step_fn, self.mesh)
        step = int(state.step)
        batches = self.ds.train_batches(cfg.batch_size, self.config.seed, start_step=step)
        window: list[dict[str, jax.Array]] = []
        progress.set_description(phase.name)
        while step < phase.end:
            batch = sharding.shard_batch(next(batches), self.mesh)
            state, step_metrics = self.train_step(state, batch)
            if sparsity_schedule is not None:
                step_metrics = dict(step_metrics)
                update = {
                    k: step_metrics.pop(k) for k in ("mask_updated", "target_sparsity", "kept")
                }
                if sparsity_schedule.should_update(step):  # host-side copy of the in-step decision
                    target = sparsity_schedule.sparsity_at(step)
                    self.log_mask_update(step + 1, phase.name, target, update, nonprunable)
            window.append(step_metrics)
            step += 1
            progress.update(1)
            last_metrics = step_metrics
            if self.saves_rewind_point(index, step):
                self.save_rewind_point(state)
            if step % cfg.log_every == 0 or step == phase.end:
                means = {k: float(np.mean([m[k] for m in window])) for k in window[0]}
                window = []
                if not math.isfinite(means["loss"]):
                    self.nan_error(step, f"the training loss ({means['loss']})")
                lr = float(schedule(step - phase.start - 1))
                self.writer.write(
                    step,
                    phase.name,
                    train_loss=means["loss"],
                    train_accuracy=means["accuracy"],
                    learning_rate=lr,
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
            if step < phase.end and cfg.eval_every and step % cfg.eval_every == 0:
                self.writer.write(step, phase.name, **self.evaluate(state))
            if step < phase.end and cfg.checkpoint_every and step % cfg.checkpoint_every == 0:
                self.save(step, state, index, loss=last_metrics["loss"])
            if self.config.debug.stop_at_step and step >= self.config.debug.stop_at_step:
                raise RunStopped(step)
        result = self.evaluate(state)
        if not any(
            r["step"] == step and r["phase"] == phase.name and "test_accuracy" in r
            for r in self.writer.read()
        ):
            self.writer.write(step, phase.name, **result)
        logging.info("end of phase %s at step %d: %s", phase.name, step, result)
        if index == len(self.phases) - 1:
            self.save(step, state, index)
        return state

    def saves_rewind_point(self, index: int, step: int) -> bool:
        """Whether ``step`` of phase ``index`` is the lottery rewind point to save."""
        if self.config.flow != "iterative" or index != 0:
            return False
        return step == self.config.pruning.iterative.rewind_step > 0

    # ---- whole run -------------------------------------------------------------------------

    def resume(self) -> tuple[int, state_lib.TrainState | None]:
        """Restores the newest checkpoint, if any: (phase index, state or None)."""
        latest = self.ckpt.latest_step()
        if latest is None:
            self.writer.truncate_after(-1)
            return 0, None
        meta = self.ckpt.restore_meta(latest)
        run_config.check_same_config(
            meta.get("config", {}),
            self.config_dict,
            f"the one stored in checkpoint {self.ckpt.directory / str(latest)}",
        )
        index = meta.get("phase_index")
        if not isinstance(index, int) or not 0 <= index < len(self.phases):
            raise checkpoint.CheckpointError(
                f"checkpoint {self.ckpt.directory / str(latest)} names phase {index!r}, "
                f"but this flow has {len(self.phases)} phase(s)"
            )
        state = self.ckpt.restore_state(latest, self.abstract_state(self.phases[index]))
        if int(state.step) != latest:
            raise checkpoint.CheckpointError(
                f"checkpoint {self.ckpt.directory / str(latest)} holds step {int(state.step)}"
            )
        self.elapsed_before = float(meta.get("elapsed_s", 0.0))
        self.writer.truncate_after(latest)
        logging.info("resuming from step %d (phase %s)", latest, self.phases[index].name)
        return index, state

    def summary(self, state: state_lib.TrainState) -> tuple[dict[str, Any], Any, list[dict]]:
        """Final results (accuracy/loss per phase, sparsity, wall time), report, records."""
        records = self.writer.read()
        evals = {}
        for record in records:
            if "test_accuracy" in record:
                evals[record["phase"]] = {
                    "step": record["step"],
                    "test_accuracy": record["test_accuracy"],
                    "test_loss": record["test_loss"],
                }
        final = evals[self.phases[-1].name]
        host = jax.device_get(state)
        report = self.sparsity_report(host.params, host.masks)
        extra = {}
        if self.config.flow == "iterative":
            extra["rounds"] = self.round_results(records, evals)
        return (
            {
                **extra,
                "model": self.config.model.name,
                "dataset": self.config.dataset.name,
                "flow": self.config.flow,
                "target_sparsity": self.target_sparsity(),
                "steps": int(host.step),
                "test_accuracy": final["test_accuracy"],
                "test_loss": final["test_loss"],
                "phases": evals,
                "sparsity": report.as_dict(),
                "wall_time_s": self.elapsed_before + time.time() - self.start_time,
                "devices": [str(d) for d in self.mesh.devices.flat],
            },
            report,
            records,
        )

    def round_results(self, records: list[dict], evals: dict[str, Any]) -> list[dict[str, Any]]:
        """Per lottery round: its sparsity, kept count and final test accuracy/loss."""
        pruned = {r["round"]: r for r in records if r.get("phase") == "pruned" and "round" in r}
        _, total = self.nonprunable_count(jax.device_get(self.init_variables())["params"])
        rounds = []
        for r, phase in enumerate(self.phases):
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
        return rounds

    def target_sparsity(self) -> float | None:
        """The run's final target sparsity (None for a dense run)."""
        if self.config.flow == "dense":
            return None
        if self.config.flow == "gradual":
            return self.config.pruning.schedule.final_sparsity
        if self.config.flow == "iterative":
            block = self.config.pruning.iterative
            return prune.iterative_sparsity(block.rate, block.rounds)
        return self.config.pruning.sparsity

    def run(self) -> dict[str, Any]:
        """Runs (or resumes) every phase and writes summary and plots."""
        run_config.write_or_check_config(self.workdir, self.config_dict)
        index, state = self.resume()
        progress = tqdm.tqdm(
            total=self.phases[-1].end,
            initial=0 if state is None else int(state.step),
            disable=not sys.stdout.isatty(),
            dynamic_ncols=True,
        )
        try:
            for i in range(index, len(self.phases)):
                if state is None or (i > index):
                    state = self.start_phase(i, state)
                state = self.run_phase(i, state, progress)
        finally:
            progress.close()
        summary, report, records = self.summary(state)
        metrics.write_summary(self.workdir, summary)
        plots.plot_learning_curve(records, self.workdir / "plots" / "learning_curve.png")
        plots.plot_layer_sparsity(report.layers, self.workdir / "plots" / "layer_sparsity.png")
        plots.plot_effective_sparsity(
            report.layers, self.workdir / "plots" / "effective_sparsity.png"
        )
        print(format_table(summary, report))
        return summary


def format_table(summary: dict[str, Any], report: Any) -> str:
    """The final table: accuracy and loss per phase, then per-layer and total sparsity."""
    lines = [f"{summary['model']} on {summary['dataset']}, flow={summary['flow']}"]
    lines.append(f"{'phase':<10} {'step':>8} {'test acc':>9} {'test loss':>10}")
    for name, ev in summary["phases"].items():
        lines.append(
            f"{name:<10} {ev['step']:>8d} {100 * ev['test_accuracy']:>8.2f}% "
            f"{ev['test_loss']:>10.4f}"
        )
    lines.append("")
    lines.append(report.table())
    lines.append(f"wall time: {summary['wall_time_s']:.1f} s")
    return "\n".join(lines)


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str | Path) -> dict[str, Any]:
    """Trains, prunes and fine-tunes as ``config.flow`` says; resumes from ``workdir``.

    Args:
      config: a run config shaped like ``configs/default.py``.
      workdir: run directory; gets ``config.json``, ``metrics.jsonl``, ``summary.json``,
        ``checkpoints/`` and ``plots/``. If it already holds a run of the same config, that run
        is resumed from its newest checkpoint.

    Returns:
      The summary dict (also written to ``summary.json``); if ``debug.stop_at_step`` stopped
      the run early, ``{'stopped_at_step': step}`` instead.

    Raises:
      ValueError: for a bad config field, or a config that differs from the workdir's run.
      CheckpointError: for an unreadable or mismatched checkpoint.
      FloatingPointError: when the loss or the params become NaN/inf.
    """
    config_check.validate_config(config)
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    run = _Run(config, workdir)
    try:
        return run.run()
    except RunStopped as stopped:
        logging.info("debug.stop_at_step reached at step %s", stopped.args[0])
        return {"stopped_at_step": int(stopped.args[0])}
    finally:
        run.ckpt.close()
