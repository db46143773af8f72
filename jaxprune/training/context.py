"""``RunContext``: the building blocks of one run that flows and the runner share.

It owns what does not depend on the flow: the dataset, the model (zoo or user factory, see
``model_fns.py``), the keys, the mesh, the metrics writer and the checkpointer, and the
operations flows compose at phase boundaries: initial variables, one-shot masks from
``config.pruning``, sanity edits, fresh scratch weights, structured narrowing, FLOPs, the
sparsity report and evaluation. It never decides what a flow does.

Mutable run-wide facts that must survive a restart live here and go into every checkpoint:
``phases`` (their lengths: Scratch-B's budget is set when it prunes), ``widths`` (the narrow
model of structured pruning) in the checkpoint meta, and ``carry`` (arrays a flow keeps for
later, e.g. the lottery rewind weights) as one more Orbax item.
"""

import dataclasses
import functools
import json
import math
import time
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

import jaxprune as jp
from jaxprune import data
from jaxprune.data import corrupt
from jaxprune.models import channels
from jaxprune.pruning import flops as flops_lib
from jaxprune.training import (
    channel_pruning,
    checkpoint,
    distributed,
    evaluation,
    fresh_weights,
    metrics,
    optim,
    prune,
    run_config,
    sharding,
    steps,
)
from jaxprune.training import state as state_lib
from jaxprune.training.flows.base import Phase
from jaxprune.training.model_fns import ModelFns, build_module

PyTree = Any


def load_dataset(config: ml_collections.ConfigDict) -> data.Dataset:
    """The dataset of ``config.dataset``."""
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
def _all_finite_on_device(tree: PyTree) -> jax.Array:
    return jnp.all(jnp.asarray([jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(tree)]))


def _on_host_cpu(x: Any) -> bool:
    return (
        isinstance(x, jax.Array)
        and x.is_fully_addressable
        and all(d.platform == "cpu" for d in x.sharding.device_set)
    )


def _all_finite(tree: PyTree) -> bool:
    """Whether every entry of ``tree`` is finite (NumPy on CPU arrays: nothing to compile)."""
    leaves = jax.tree.leaves(tree)
    if all(_on_host_cpu(x) for x in leaves):
        return all(bool(np.isfinite(np.asarray(x)).all()) for x in leaves)
    return bool(_all_finite_on_device(tree))


def run_keys(seed: int) -> dict[str, jax.Array]:
    """The run's PRNG keys, a pure function of ``seed``, made by one compiled program.

    * ``state``, ``prune``: ``jax.random.split(jax.random.PRNGKey(seed))`` (threefry): the train
      state's key (dropout, data order) and the key of the pruning scores and random masks.
    * ``init``: the key of the initial weights, ``jax.random.key(seed, impl="rbg")``. Weights are
      drawn with the 'rbg' PRNG (XLA RngBitGenerator; its split/fold_in stay threefry):
      compiling a threefry init of a ResNet takes ~10x longer on CPU. The initial weights remain
      a pure function of the seed on a given backend.
    * ``fresh``: ``fold_in(init, 1)``, the fresh weights of ``sanity.reinit`` and of the scratch
      flows, a draw independent of the initial one.
    * ``sanity``: ``fold_in(prune, 0x5A17)``, the key of the sanity checks' shuffles.

    The same integer operations run eagerly would compile one program each (about 0.4 s on a
    fresh cache); the keys are bit-identical.
    """

    def keys() -> dict[str, jax.Array]:
        state, prune = jax.random.split(jax.random.PRNGKey(seed), 2)
        init = jax.random.key(seed, impl="rbg")
        return {
            "state": state,
            "prune": prune,
            "init": init,
            "fresh": jax.random.fold_in(init, 1),
            "sanity": jax.random.fold_in(prune, 0x5A17),
        }

    return jax.jit(keys)()


class RunContext:
    """Everything a flow may use while it builds the first state of a phase.

    Args:
      config: a validated run config.
      workdir: the run directory.
      flow: the run's flow (plans the phases).
    """

    def __init__(self, config: ml_collections.ConfigDict, workdir: Path, flow: Any):
        self.config = config
        self.workdir = workdir
        self.mesh = sharding.mesh_from_config(config.get("mesh"))
        sharding.check_batch_size(config.training.batch_size, self.mesh)
        self.ds = load_dataset(config)
        self.fns = ModelFns.of(build_module(config.model, self.ds.num_classes))
        self.model = self.fns.module
        self.phases: list[Phase] = flow.phases(
            config, self.ds.steps_per_epoch(config.training.batch_size)
        )
        self.config_dict = run_config.config_to_dict(config)
        # Multi-process runs: process 0 writes the run's files; the others only read them.
        self.is_writer = distributed.is_writer()
        self.writer = metrics.MetricsWriter(
            workdir,
            read_only=not self.is_writer,
            tensorboard=bool(config.training.get("tensorboard", False)),
        )
        self.ckpt = checkpoint.Checkpointer(
            workdir / "checkpoints", keep=config.training.keep_checkpoints, config=self.config_dict
        )
        keys = run_keys(config.seed)
        self.state_key, self.prune_key = keys["state"], keys["prune"]
        self.init_key, self.fresh_key, self.sanity_key = keys["init"], keys["fresh"], keys["sanity"]
        # (device_put of a host array: jnp.zeros would compile two programs)
        self.sample_input = jax.device_put(np.zeros((1, *self.ds.input_shape), np.float32))
        self._init = jax.jit(lambda key: self.fns.init(key, self.sample_input))
        self.elapsed_before = 0.0
        self.start_time = time.time()
        self.structured = config.structured.method != "none"
        # Channel counts of the narrow model after structured pruning (None before / without).
        self.widths: tuple[int, ...] | None = None
        self.prune_index = next((i for i, p in enumerate(self.phases) if p.prune_first), None)
        # Arrays a flow keeps across phases (saved with every checkpoint as the 'carry' item).
        self.carry: dict[str, PyTree] = {}
        # Weights that replace the initial ones (config.init_from), set by the runner.
        self.start_variables: PyTree | None = None
        # Per phase: the loss of its first step (divergence reference; kept in checkpoint meta).
        self.loss_reference: dict[str, float] = {}
        self._eval_steps: dict[Any, Any] = {}
        self._dense_flops: flops_lib.FlopsReport | None = None
        self.use_model(self.fns)

    # ---- models and weights -------------------------------------------------------------

    def init_variables(self) -> PyTree:
        """Initial model variables (a pure function of the seed)."""
        return self._init(self.init_key)

    def initial_variables(self) -> PyTree:
        """The weights the run starts from: ``config.init_from``'s, else the initial ones."""
        if self.start_variables is not None:
            return self.start_variables
        return self.init_variables()

    def init_host_variables(self) -> PyTree:
        """Host copy of :meth:`init_variables`, computed once per run."""
        if not hasattr(self, "_init_host_variables"):
            self._init_host_variables = jax.device_get(self.init_variables())
        return self._init_host_variables

    def init_params(self) -> PyTree:
        """Host copy of the initial params (scores' ``init_params``)."""
        return self.init_host_variables()["params"]

    @staticmethod
    def variables_of(state: state_lib.TrainState) -> PyTree:
        """Host copy of the params and batch statistics of ``state``."""
        host = sharding.host(state)
        return {"params": host.params, "batch_stats": host.batch_stats}

    def fns_for(self, index: int) -> ModelFns:
        """The model phase ``index`` trains: the narrow one from structured pruning on."""
        if self.widths is not None and self.prune_index is not None and index >= self.prune_index:
            return ModelFns.of(channels.narrow(self.model, self.widths))
        return self.fns

    def use_model(self, fns: ModelFns) -> None:
        """Makes ``fns`` the model evaluated, reported and trained from now on."""
        self.active = fns
        key = getattr(fns.module, "widths", None)
        if key not in self._eval_steps:
            self._eval_steps[key] = sharding.jit_eval_step(steps.eval_step_fn(fns.apply), self.mesh)
        self.eval_step = self._eval_steps[key]

    def set_phase_steps(self, index: int, num_steps: int) -> None:
        """Sets the length of phase ``index``; later phases move with it."""
        start = self.phases[index].start
        for i in range(index, len(self.phases)):
            length = num_steps if i == index else self.phases[i].num_steps
            self.phases[i] = dataclasses.replace(self.phases[i], start=start, num_steps=length)
            start += length

    # ---- reports ------------------------------------------------------------------------

    def flops(self, fns: ModelFns, variables: PyTree, masks: PyTree | None) -> Any:
        """FLOPs (MACs per example) and parameter counts of ``fns`` under ``masks``."""
        variables = sharding.host(variables)
        apply_fn = fns.eval_apply(variables.get("batch_stats", {}))
        return flops_lib.flops_report(apply_fn, variables["params"], self.sample_input, masks)

    def dense_flops(self) -> Any:
        """FLOPs and parameters of the unpruned model (cached)."""
        if self._dense_flops is None:
            self._dense_flops = self.flops(self.fns, self.init_variables(), None)
        return self._dense_flops

    def flops_record(self, report: Any) -> dict[str, Any]:
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

    def sparsity_report(
        self, params: PyTree, masks: PyTree, batch_stats: PyTree | None = None
    ) -> jp.SparsityReport:
        """Direct and effective sparsity of ``masks`` (support propagation, eval mode)."""
        params, masks, batch_stats = sharding.host((params, masks, batch_stats or {}))
        prunable = prune.prunable_spec(self.config.pruning)
        apply_fn = self.active.eval_apply(batch_stats)
        emask = jp.effective_mask(apply_fn, params, masks, self.sample_input, prunable)
        return jp.sparsity_report(params, masks, effective_mask=emask, prunable=prunable)

    def prunable_counts(self, params: PyTree) -> tuple[int, int]:
        """(entries of non-prunable leaves, entries of prunable leaves) of ``params``."""
        flags = jp.pruning.tree.prunable_flags(params, prune.prunable_spec(self.config.pruning))
        sizes = [int(np.size(x)) for x in jax.tree.leaves(params)]
        prunable = sum(n for n, f in zip(sizes, flags, strict=True) if f)
        return sum(sizes) - prunable, prunable

    def evaluate(self, state: state_lib.TrainState) -> dict[str, float]:
        """Test loss and accuracy with BatchNorm running averages (``dataset.eval_limit``)."""
        return evaluation.evaluate(
            self.eval_step,
            state,
            self.ds,
            self.config.training.batch_size,
            self.mesh,
            limit=self.config.dataset.eval_limit,
        )

    # ---- one-shot pruning ---------------------------------------------------------------

    @functools.cached_property
    def sparsity_schedule(self) -> Any:
        """The schedule of ``pruning.schedule`` (flow 'gradual'), built once per run."""
        return prune.make_schedule(self.config.pruning.schedule)

    def quota_kwargs(self) -> dict[str, Any]:
        """Options of the configured quota (smart ratio's ratio / residual / last_keep)."""
        return prune.quota_options(self.config.pruning, self.config.model.name)

    def score_inputs(self, params: PyTree, batch_stats: PyTree, step: int) -> dict[str, Any]:
        """``batch``, ``apply_fn``, layer ``order`` and score context for scoring ``params``."""
        pruning = self.config.pruning
        apply_fn = self.fns.eval_apply(batch_stats)
        batch = self.ds.sample(min(pruning.score_batch_size, self.ds.num_train), self.config.seed)
        # Sanity checks (Su et al.): the mask may be scored on corrupted data; training is not.
        batch = corrupt.corrupt(
            batch, self.config.sanity.mask_data, self.config.seed, self.ds.num_classes
        )
        batch = {k: jax.device_put(v) for k, v in batch.items()}  # a copy, no program
        order = None
        # Quotas that treat the first/last layer specially need the forward order of the
        # layers (names alone sort 'BasicBlock_0/...' before the stem 'Conv_0').
        if pruning.selection == "layerwise":
            order = jp.layer_order(apply_fn, params, batch["image"][:1])
        context = {"init_params": self.init_params(), "step": step}
        return {"batch": batch, "apply_fn": apply_fn, "order": order, "score_context": context}

    def masks_for(self, params: PyTree, batch_stats: PyTree, step: int) -> PyTree:
        """One-shot masks from ``config.pruning`` for ``params`` (numpy bool)."""
        masks = prune.compute_masks(
            self.config.pruning,
            sharding.host(params),
            key=self.prune_key,
            **self.score_inputs(params, batch_stats, step),
            linear_apply_fn=self.fns.linear_apply(),
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
            key=self.sanity_key,
            init_fn=self._init,
            fresh_key=self.fresh_key,
            prunable=prune.prunable_spec(self.config.pruning),
        )

    def fresh_sparse_variables(self, masks: PyTree) -> PyTree:
        """A fresh initialisation under ``masks`` (unstructured scratch training, Liu et al.)."""
        return fresh_weights.scratch_variables(
            self._init, self.fresh_key, masks, scale_fan_in=self.config.scratch.scale_fan_in
        )

    def fresh_variables(self, fns: ModelFns) -> PyTree:
        """A fresh initialisation of ``fns`` (the narrow model of structured scratch training)."""
        return jax.jit(lambda key: fns.init(key, self.sample_input))(self.fresh_key)

    def channel_groups(self, variables: PyTree) -> tuple[list[Any], list[Any]]:
        """The zoo model's channel groups: (those not in ``structured.skip``, all)."""
        return channel_pruning.channel_groups(self.config.structured, self.model, variables)

    def prune_structured(self, variables: PyTree) -> tuple[ModelFns, PyTree, dict[str, Any]]:
        """Structured pruning of ``variables``: (narrow model, its variables, record)."""
        narrow, narrow_variables, record = channel_pruning.prune_structured(
            self.config.structured, self.model, variables
        )
        self.widths = tuple(record["widths"])
        return ModelFns.of(narrow), narrow_variables, record

    def regularizer(self, index: int) -> Any:
        """Network slimming's L1 penalty on BN scales for the dense phase (else None)."""
        if self.phases[index].name != "dense":
            return None
        return channel_pruning.slimming_penalty(
            self.config.structured, self.model, self.init_host_variables()
        )

    # ---- training -----------------------------------------------------------------------

    def optimizer(self, index: int) -> tuple[optax.GradientTransformation, optax.Schedule]:
        """Optimizer and learning-rate schedule of phase ``index``."""
        phase = self.phases[index]
        return optim.make_optimizer(
            self.config.training,
            learning_rate=phase.learning_rate,
            lr_schedule=phase.lr_schedule,
            total_steps=phase.num_steps,
        )

    def train_step_key(self, index: int, state: state_lib.TrainState) -> tuple | None:
        """What phase ``index``'s train step depends on, when phases can share it (else None).

        Two phases with equal keys trace to the same program: the same model functions, no
        regularizer, the same ``config.training`` block and schedule kind with its numbers in
        the optimizer state (``optim.scale_by_phase_lr``), and states of one structure, shapes,
        dtypes and shardings. A warm-up, a 'step' schedule (numbers baked in) or the dense
        phase of a structured run (slimming's penalty) gives None: such a phase builds its own.
        The key holds the model functions' ``id``; the caller keeps them alive with the step.
        """
        phase = self.phases[index]
        training = self.config.training
        if training.warmup_steps > 0 or phase.lr_schedule not in optim.STATE_SCHEDULES:
            return None
        if self.structured and phase.name == "dense":
            return None
        leaves, structure = jax.tree.flatten(state)
        placed = jax.tree.leaves(sharding.state_shardings(state, self.mesh))
        return (
            id(self.active),
            phase.lr_schedule,
            json.dumps(run_config.config_to_dict(training), sort_keys=True, default=str),
            structure,
            tuple((np.shape(x), str(x.dtype)) for x in leaves),
            tuple(placed),
        )

    def train_step_fn(self, index: int, tx: optax.GradientTransformation) -> Any:
        """The masked train step of phase ``index`` (with slimming's penalty where it applies)."""
        return steps.train_step_fn(self.active.apply, tx, regularizer=self.regularizer(index))

    def abstract_state(self, index: int) -> PyTree:
        """Shape/dtype/sharding skeleton of a state of phase ``index`` (for restoring)."""
        tx, _ = self.optimizer(index)
        fns = self.fns_for(index)
        shapes = jax.eval_shape(
            lambda: state_lib.create_train_state(
                fns.init(self.init_key, self.sample_input), tx, self.state_key
            )
        )
        placed = sharding.state_shardings(shapes, self.mesh)
        return jax.tree.map(
            lambda s, p: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=p), shapes, placed
        )

    # ---- checkpoints --------------------------------------------------------------------

    def elapsed(self) -> float:
        """Wall time of the run so far, including earlier (interrupted) invocations."""
        return self.elapsed_before + time.time() - self.start_time

    def meta(self, phase_index: int, window: list | None = None) -> dict[str, Any]:
        """JSON meta stored next to a checkpoint."""
        return {
            "window": window or [],
            "loss_reference": dict(self.loss_reference),
            "phase": self.phases[phase_index].name,
            "phase_index": phase_index,
            "phase_steps": [p.num_steps for p in self.phases],
            "widths": None if self.widths is None else list(self.widths),
            "elapsed_s": self.elapsed(),
            "config": self.config_dict,
        }

    def save(
        self,
        step: int,
        state: state_lib.TrainState,
        phase_index: int,
        loss=None,
        window: list | None = None,
    ) -> None:
        """Checkpoints ``state`` (and ``carry``) unless it holds NaN/inf (then raises).

        ``window``: the per-step train metrics not yet logged (restored on resume, so the next
        log line averages the same steps as in an uninterrupted run).
        """
        finite = bool(_all_finite(state.params))
        if loss is not None:
            finite = finite and math.isfinite(float(loss))
        if not finite:
            self.nan_error(step, "params or loss")
        self.writer.flush()  # the records this checkpoint covers are on disk before it
        self.ckpt.save(step, state, self.meta(phase_index, window), carry=self.carry)

    def nan_error(self, step: int, what: str) -> None:
        """Raises FloatingPointError naming the step and the last good checkpoint."""
        self.ckpt.wait()
        last = self.ckpt.latest_step()
        kept = (
            f"the last good checkpoint (step {last}) is kept in {self.ckpt.directory}"
            if last is not None
            else "no checkpoint had been written yet"
        )
        # `what` ending in ':' is a full statement ("the loss ... is over ..."); else a noun.
        problem = what[:-1] if what.endswith(":") else f"{what} not finite"
        raise FloatingPointError(
            f"training diverged: {problem} at step {step}; stopping ({kept}). "
            "Lower training.learning_rate or check the data."
        )
