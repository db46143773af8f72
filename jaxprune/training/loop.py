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
* ``flow='scratch_e'`` / ``'scratch_b'`` (Liu et al., "Rethinking the Value of Network
  Pruning"): ``dense`` [0, T), prune the trained net at T, then ``scratch`` [T, T + S) trains
  the pruned architecture (structured) or the mask (unstructured) from a **fresh**
  initialisation: a new draw (``fold_in(init key, 1)``); unstructured fresh weights are scaled
  by ``sqrt(fan_in / surviving fan_in)`` per unit (``scratch.scale_fan_in``). Scratch-E trains
  S = T steps; Scratch-B S = T * min(``scratch.budget_cap``, dense FLOPs / pruned FLOPs) steps
  (``jp.pruning.flops.scratch_b_steps``; FLOPs of the unstructured mask count kept weights
  only). S is stored in every later checkpoint, so a resumed run keeps it.

Structured pruning (``structured.method`` 'l1_filter' or 'slimming', flows 'prune_finetune',
'scratch_e', 'scratch_b'): at the prune step the channel groups of the zoo model
(``models.channel_groups``) are scored, the surviving channels chosen
(``jp.pruning.structured``), and the run continues with a **narrower model**
(``models.channels.narrow``, widths in checkpoint meta and ``summary.json``) holding the copied
surviving weights (fine-tune) or a fresh init (scratch). Network slimming adds
``structured.slimming_l1 * sum |BatchNorm scale|`` over the prunable groups to the dense
phase's objective (metrics.jsonl gets ``train_penalty``).

Sanity checks (Su et al.; flows 'prune_at_init' and 'prune_finetune'): the scoring batch can be
corrupted (``sanity.mask_data``: random labels, random pixels, half the data; training uses the
true data), and between mask computation and training the masks can be shuffled within each
layer, the weights re-drawn under the mask, or the surviving weights permuted within each layer
(``sanity.shuffle_layerwise`` / ``reinit`` / ``shuffle_weights``, applied in that order).

Every one-shot prune writes a ``pruned`` record with the FLOPs (multiply-accumulates per
example, ``jp.pruning.flops``) and parameter counts of the pruned model next to the dense ones;
``summary.json`` has them under ``flops`` for the final model.

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
from jaxprune.data import corrupt
from jaxprune.models import channels
from jaxprune.pruning import flops as flops_lib
from jaxprune.training import (
    channel_pruning,
    checkpoint,
    config_check,
    fresh_weights,
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


SCRATCH_FLOWS = config_check.SCRATCH_FLOWS


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
    if config.flow in SCRATCH_FLOWS:
        # Scratch-B's length is known only after pruning (FLOPs ratio); it is re-planned then.
        return [
            Phase("dense", 0, first, training.learning_rate, training.lr_schedule, False),
            Phase("scratch", first, first, training.learning_rate, training.lr_schedule, True),
        ]
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
        # Fresh weights of sanity.reinit and of the scratch flows: a draw independent of init.
        self.fresh_key = jax.random.fold_in(self.init_key, 1)
        sample = jnp.zeros((1, *self.ds.input_shape), jnp.float32)
        self.sample_input = sample
        linear_model = self.model.clone(linear=True)
        self.linear_apply = lambda p, x: linear_model.apply({"params": p}, x)
        self._init = jax.jit(lambda key: self.model.init({"params": key}, sample, train=False))
        self.elapsed_before = 0.0
        self.start_time = time.time()
        self.train_step = None
        self.structured = config.structured.method != "none"
        # Channel counts of the narrow model after structured pruning (None before / without).
        self.widths: tuple[int, ...] | None = None
        self.prune_index = next((i for i, p in enumerate(self.phases) if p.prune_first), None)
        self._eval_steps: dict[Any, Any] = {}
        self._dense_flops: flops_lib.FlopsReport | None = None
        self.use_model(self.model)

    # ---- building blocks -------------------------------------------------------------------

    def init_variables(self) -> PyTree:
        """Initial model variables (a pure function of the seed)."""
        return self._init(self.init_key)

    def model_for(self, index: int) -> Any:
        """The model phase ``index`` trains: the narrow one from structured pruning on."""
        if self.widths is not None and self.prune_index is not None and index >= self.prune_index:
            return channels.narrow(self.model, self.widths)
        return self.model

    def use_model(self, model: Any) -> None:
        """Makes ``model`` the one evaluated, reported and trained from now on."""
        self.active_model = model
        key = getattr(model, "widths", None)
        if key not in self._eval_steps:
            self._eval_steps[key] = sharding.jit_eval_step(
                steps.eval_step_fn(model.apply), self.mesh
            )
        self.eval_step = self._eval_steps[key]

    def set_phase_steps(self, index: int, num_steps: int) -> None:
        """Sets the length of phase ``index``; later phases move with it."""
        start = self.phases[index].start
        for i in range(index, len(self.phases)):
            length = num_steps if i == index else self.phases[i].num_steps
            self.phases[i] = dataclasses.replace(self.phases[i], start=start, num_steps=length)
            start += length

    def apply_fn_for(self, model: Any, batch_stats: PyTree) -> Any:
        """``apply_fn(params, images) -> logits`` of ``model`` in eval mode."""

        def apply_fn(p, x):
            variables = {"params": p}
            if jax.tree.leaves(batch_stats):
                variables["batch_stats"] = batch_stats
            return model.apply(variables, x, train=False)

        return apply_fn

    def flops(self, model: Any, variables: PyTree, masks: PyTree | None) -> flops_lib.FlopsReport:
        """FLOPs (MACs per example) and parameter counts of ``model`` under ``masks``."""
        variables = jax.device_get(variables)
        apply_fn = self.apply_fn_for(model, variables.get("batch_stats", {}))
        return flops_lib.flops_report(apply_fn, variables["params"], self.sample_input, masks)

    def dense_flops(self) -> flops_lib.FlopsReport:
        """FLOPs and parameters of the unpruned model (cached)."""
        if self._dense_flops is None:
            self._dense_flops = self.flops(self.model, self.init_variables(), None)
        return self._dense_flops

    def flops_record(self, report: flops_lib.FlopsReport) -> dict[str, Any]:
        """FLOPs / parameters of a pruned model next to the dense model's, with the ratios."""
        dense = self.dense_flops()
        return {
            "flops": report.total_sparse_flops,
            "flops_dense": dense.total_flops,
            "flops_reduction": 1.0 - report.total_sparse_flops / dense.total_flops,
            "params": report.total_nonzero,
            "params_dense": dense.total_params,
            "params_reduction": 1.0 - report.total_nonzero / dense.total_params,
        }

    def quota_kwargs(self) -> dict[str, Any]:
        """Options of the configured quota (smart ratio's ratio / residual / last_keep)."""
        return prune.quota_options(self.config.pruning, self.config.model.name)

    def optimizer(self, phase: Phase) -> tuple[optax.GradientTransformation, optax.Schedule]:
        """Optimizer and schedule of a phase."""
        return optim.make_optimizer(
            self.config.training,
            learning_rate=phase.learning_rate,
            lr_schedule=phase.lr_schedule,
            total_steps=phase.num_steps,
        )

    def abstract_state(self, index: int) -> PyTree:
        """Shape/dtype/sharding skeleton of a state of phase ``index`` (for restoring)."""
        tx, _ = self.optimizer(self.phases[index])
        model = self.model_for(index)
        shapes = jax.eval_shape(
            lambda: state_lib.create_train_state(
                model.init({"params": self.init_key}, self.sample_input, train=False),
                tx,
                self.state_key,
            )
        )
        rep = sharding.replicated(self.mesh)
        return jax.tree.map(lambda s: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=rep), shapes)

    def score_inputs(self, params: PyTree, batch_stats: PyTree) -> dict[str, Any]:
        """``batch``, ``apply_fn`` and layer ``order`` for scoring ``params``."""
        pruning = self.config.pruning
        apply_fn = self.apply_fn_for(self.model, batch_stats)
        batch = self.ds.sample(min(pruning.score_batch_size, self.ds.num_train), self.config.seed)
        # Sanity checks (Su et al.): the mask may be scored on corrupted data; training is not.
        batch = corrupt.corrupt(
            batch, self.config.sanity.mask_data, self.config.seed, self.ds.num_classes
        )
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
            quota_kwargs=self.quota_kwargs(),
        )
        return jax.tree.map(lambda m: np.asarray(m, dtype=bool), masks)

    def apply_sanity(self, variables: PyTree, masks: PyTree) -> tuple[PyTree, PyTree]:
        """Su et al.'s sanity-check edits of a fresh mask and its weights (``config.sanity``)."""
        return fresh_weights.sanity_edits(
            self.config.sanity,
            variables,
            masks,
            key=jax.random.fold_in(self.prune_key, 0x5A17),
            init_fn=self._init,
            fresh_key=self.fresh_key,
            prunable=prune.prunable_spec(self.config.pruning),
        )

    def fresh_sparse_variables(self, masks: PyTree) -> PyTree:
        """A fresh initialisation under ``masks`` (unstructured scratch training, Liu et al.)."""
        return fresh_weights.scratch_variables(
            self._init, self.fresh_key, masks, scale_fan_in=self.config.scratch.scale_fan_in
        )

    def channel_groups(self, variables: PyTree) -> tuple[list[Any], list[Any]]:
        """The zoo model's channel groups: (those not in ``structured.skip``, all)."""
        return channel_pruning.channel_groups(self.config.structured, self.model, variables)

    def prune_structured(self, variables: PyTree) -> tuple[Any, PyTree, dict[str, Any]]:
        """Structured pruning of ``variables``: (narrow model, its variables, record)."""
        narrow_model, narrow_variables, record = channel_pruning.prune_structured(
            self.config.structured, self.model, variables
        )
        self.widths = tuple(record["widths"])
        logging.info("structured pruning (%s): widths %s", record["method"], self.widths)
        return narrow_model, narrow_variables, record

    def regularizer(self, index: int) -> Any:
        """Network slimming's L1 penalty on BN scales for the dense phase (else None)."""
        if self.phases[index].name != "dense":
            return None
        return channel_pruning.slimming_penalty(
            self.config.structured, self.model, jax.device_get(self.init_variables())
        )

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
            quota_kwargs=self.quota_kwargs(),
        )

    def sparsity_report(self, params: PyTree, masks: PyTree) -> jp.SparsityReport:
        """Direct and effective sparsity of ``masks`` (effective mask of the linear model)."""
        params, masks = jax.device_get((params, masks))
        prunable = prune.prunable_spec(self.config.pruning)
        linear_model = self.active_model.clone(linear=True)

        def linear_apply(p, x):
            return linear_model.apply({"params": p}, x)

        emask = jp.effective_mask(linear_apply, params, masks, self.sample_input, prunable)
        return jp.sparsity_report(params, masks, effective_mask=emask, prunable=prunable)

    def gradual_step_fn(self, tx, schedule, params: PyTree, num_steps: int):
        """The train step with in-step mask updates of ``schedule`` (flow='gradual')."""
        pruning = self.config.pruning
        order = None
        if pruning.selection == "layerwise" and hasattr(jp, "layer_order"):
            sample = jnp.zeros((1, *self.ds.input_shape), jnp.float32)
            order = jp.layer_order(self.apply_fn_for(self.model, {}), params, sample)
        mask_fn = prune.traced_mask_fn(
            pruning,
            schedule,
            jax.device_get(params),
            num_steps=num_steps,
            order=order,
            quota_kwargs=self.quota_kwargs(),
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
            "phase_steps": [p.num_steps for p in self.phases],
            "widths": None if self.widths is None else list(self.widths),
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
        flow = self.config.flow
        if previous is None:
            variables = self.init_variables()
        else:
            previous = jax.device_get(previous)
            variables = {"params": previous.params, "batch_stats": previous.batch_stats}
        masks = None
        model = self.model
        extra: dict[str, Any] = {}
        iterative = flow == "iterative" and phase.prune_first
        if iterative:
            masks = self.iterative_masks(
                index, variables["params"], variables.get("batch_stats", {}), previous.masks
            )
            variables = self.rewind_variables()
        elif phase.prune_first and self.structured:
            model, variables, structured_record = self.prune_structured(variables)
            extra["structured"] = structured_record
            if flow in SCRATCH_FLOWS:
                variables = jax.jit(
                    lambda key: model.init({"params": key}, self.sample_input, train=False)
                )(self.fresh_key)
        elif phase.prune_first:
            masks = self.masks_for(variables["params"], variables.get("batch_stats", {}))
            if flow in SCRATCH_FLOWS:
                variables = self.fresh_sparse_variables(masks)
            else:
                variables, masks = self.apply_sanity(variables, masks)
        self.use_model(model)
        if phase.prune_first and not iterative:
            cost = self.flops(model, variables, masks)
            extra.update(self.flops_record(cost))
            if flow == "scratch_b":
                base = self.phases[0].num_steps
                budget = flops_lib.scratch_b_steps(
                    base,
                    self.dense_flops().total_flops,
                    cost.total_sparse_flops,
                    cap=self.config.scratch.budget_cap,
                )
                self.set_phase_steps(index, budget)
                extra["scratch_steps"] = budget
                logging.info("Scratch-B: %d steps (dense phase: %d)", budget, base)
            phase = self.phases[index]
        tx, _ = self.optimizer(phase)
        state = state_lib.create_train_state(
            variables, tx, self.state_key, masks=masks, step=phase.start
        )
        state = sharding.replicate(state, self.mesh)
        if phase.prune_first:
            report_masks = masks
            if report_masks is None:
                report_masks = state_lib.dense_masks(jax.device_get(variables["params"]))
            record = self.sparsity_report(variables["params"], report_masks).as_dict()
            record.update(extra)
            if iterative:
                rate = self.config.pruning.iterative.rate
                record.update(round=index, target_sparsity=prune.iterative_sparsity(rate, index))
            elif previous is not None and flow not in SCRATCH_FLOWS:
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
            step_fn = steps.train_step_fn(
                self.active_model.apply, tx, regularizer=self.regularizer(index)
            )
        self.train_step = sharding.jit_train_step(step_fn, self.mesh)
        if progress.total != self.phases[-1].end:  # Scratch-B re-planned the phase
            progress.total = self.phases[-1].end
            progress.refresh()
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
                extra = {"train_penalty": means["penalty"]} if "penalty" in means else {}
                self.writer.write(
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
        where = self.ckpt.directory / str(latest)
        if not isinstance(index, int) or not 0 <= index < len(self.phases):
            raise checkpoint.CheckpointError(
                f"checkpoint {where} names phase {index!r}, "
                f"but this flow has {len(self.phases)} phase(s)"
            )
        self.restore_plan(meta, where)
        self.use_model(self.model_for(index))
        state = self.ckpt.restore_state(latest, self.abstract_state(index))
        if int(state.step) != latest:
            raise checkpoint.CheckpointError(
                f"checkpoint {self.ckpt.directory / str(latest)} holds step {int(state.step)}"
            )
        self.elapsed_before = float(meta.get("elapsed_s", 0.0))
        self.writer.truncate_after(latest)
        logging.info("resuming from step %d (phase %s)", latest, self.phases[index].name)
        return index, state

    def restore_plan(self, meta: dict[str, Any], where: Path) -> None:
        """Phase lengths (Scratch-B) and narrow widths (structured) from checkpoint meta."""
        lengths = meta.get("phase_steps")
        if lengths is not None:
            if len(lengths) != len(self.phases) or not all(
                isinstance(n, int) and n > 0 for n in lengths
            ):
                raise checkpoint.CheckpointError(
                    f"checkpoint {where} has phase_steps {lengths!r}, but this flow has "
                    f"{len(self.phases)} phase(s)"
                )
            for i, n in enumerate(lengths):
                self.set_phase_steps(i, n)
        widths = meta.get("widths")
        if widths is not None:
            if not self.structured or not all(isinstance(w, int) and w > 0 for w in widths):
                raise checkpoint.CheckpointError(
                    f"checkpoint {where} has narrow widths {widths!r}, which this config "
                    f"(structured.method={self.config.structured.method!r}) cannot hold"
                )
            self.widths = tuple(widths)

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
        variables = {"params": host.params, "batch_stats": host.batch_stats}
        extra["flops"] = self.flops_record(self.flops(self.active_model, variables, host.masks))
        if self.structured:
            extra["structured"] = {
                "method": self.config.structured.method,
                "widths": None if self.widths is None else list(self.widths),
            }
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
        if self.config.flow == "dense" or self.structured:
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
    if "flops" in summary:
        cost = summary["flops"]
        lines.append(
            f"FLOPs (MACs/example) {cost['flops']:,} of {cost['flops_dense']:,} "
            f"({cost['flops_reduction']:.2%} fewer); params {cost['params']:,} of "
            f"{cost['params_dense']:,} ({cost['params_reduction']:.2%} fewer)"
        )
    if summary.get("structured", {}).get("widths"):
        lines.append(f"narrow widths: {summary['structured']['widths']}")
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
