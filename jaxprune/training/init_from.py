"""``config.init_from = "path/to/workdir[:phase]"``: start a run from another run's weights.

The source is a jaxprune run directory of the same model and dataset. Its weights (params and
BatchNorm statistics; not its masks or optimizer state) are taken from

* ``workdir``: its final checkpoint (the run must have finished), or
* ``workdir:phase``: the checkpoint at the end of that phase (still kept in its
  ``checkpoints/``; e.g. ``runs/gmp:dense`` for the trained dense net of a prune-finetune run,
  which its 'finetune' start overwrote unless another checkpoint holds it).

Flows whose first phase trains the dense net (``prune_finetune``, ``scratch_e``, ``scratch_b``)
skip that phase and prune the source's weights: one trained dense net, many sparsities. Every
other flow starts its first phase from them instead of the initial weights.
"""

import dataclasses
import json
from pathlib import Path
from typing import Any

import jax
import ml_collections

from jaxprune.training import checkpoint, run_config, sharding
from jaxprune.training import state as state_lib

PyTree = Any
# Fields the source run must share with this run (the weights must fit the model).
_SAME = ("model.name", "model.width", "model.kwargs", "dataset.name", "dataset.shape_like")


def parse(spec: str) -> tuple[Path, str | None]:
    """``'dir[:phase]'`` -> (dir, phase or None)."""
    head, sep, tail = spec.rpartition(":")
    if sep and tail and "/" not in tail:
        return Path(head), tail
    return Path(spec), None


def _field(config: Any, dotted: str) -> Any:
    node = config
    for part in dotted.split("."):
        node = node.get(part) if hasattr(node, "get") else None
        if node is None:
            return None
    return node


@dataclasses.dataclass(frozen=True)
class Source:
    """Weights taken from another run.

    Attributes:
      workdir: the source run directory.
      step: the source checkpoint's step.
      phase: the source phase the weights end.
      variables: host ``{'params', 'batch_stats'}``.
    """

    workdir: Path
    step: int
    phase: str
    variables: PyTree

    def state_for(self, ctx: Any, index: int) -> state_lib.TrainState:
        """A dense state with these weights where phase ``index`` starts."""
        tx, _ = ctx.optimizer(index - 1)
        state = state_lib.create_train_state(
            self.variables, tx, ctx.state_key, step=ctx.phases[index].start
        )
        return sharding.place_state(state, ctx.mesh)


def load(spec: str, config: ml_collections.ConfigDict, ctx: Any) -> Source:
    """Reads the weights named by ``config.init_from`` and checks they fit this run.

    Raises:
      ValueError: naming ``init_from`` and the problem (no run there, another model or dataset,
        an unfinished run, a phase whose end is not kept, narrowed weights, other shapes).
    """
    workdir, phase = parse(spec)
    field = f"init_from={spec!r}"
    config_path = workdir / "config.json"
    if not config_path.is_file():
        raise ValueError(f"{field}: {workdir} holds no jaxprune run (no config.json)")
    source_config = json.loads(config_path.read_text())
    this_config = run_config.config_to_dict(config)  # JSON-normalised like the stored one
    for dotted in _SAME:
        theirs, ours = _field(source_config, dotted), _field(this_config, dotted)
        if (theirs or None) != (ours or None):
            raise ValueError(
                f"{field}: the source run has {dotted}={theirs!r}, this run {ours!r}; "
                "its weights do not fit"
            )
    source = checkpoint.Checkpointer(workdir / "checkpoints")
    try:
        step, meta = _pick(source, phase, field)
        if meta.get("widths") is not None:
            raise ValueError(
                f"{field}: the source weights at step {step} belong to a structurally pruned "
                f"(narrowed) model with widths {meta['widths']}; start from its dense phase"
            )
        try:
            restored = source.restore_state(step, None)  # raw tree, every array verified
        except checkpoint.CheckpointError as e:
            raise checkpoint.CheckpointError(f"{field}: {e}") from e
    finally:
        source.close()
    variables = jax.device_get(
        {"params": restored["params"], "batch_stats": restored.get("batch_stats") or {}}
    )
    expected = ctx.init_host_variables()
    expected = {"params": expected["params"], "batch_stats": expected.get("batch_stats", {})}
    ours = jax.tree_util.tree_flatten_with_path(expected)[0]
    theirs = dict(jax.tree_util.tree_flatten_with_path(variables)[0])
    for path, leaf in ours:
        other = theirs.get(path)
        if other is None or other.shape != leaf.shape:
            name = jax.tree_util.keystr(path)
            got = "missing" if other is None else f"shape {other.shape}"
            raise ValueError(f"{field}: {name} is {got} in the source, {leaf.shape} here")
    variables = jax.tree.map(lambda x, like: x.astype(like.dtype), variables, expected)
    return Source(workdir, step, meta.get("phase", "?"), variables)


def _pick(source: Any, phase: str | None, field: str) -> tuple[int, dict[str, Any]]:
    """The source checkpoint: the end of ``phase``, or the end of the run."""
    steps = sorted(source.all_steps(), reverse=True)
    if not steps:
        raise ValueError(f"{field}: the source run has no checkpoint")
    seen = []
    for step in steps:
        meta = source.restore_meta(step)
        lengths = meta.get("phase_steps") or []
        index = meta.get("phase_index", 0)
        ends = [sum(lengths[: i + 1]) for i in range(len(lengths))]
        seen.append(f"step {step} ({meta.get('phase')})")
        if phase is None:
            if ends and step == ends[-1]:
                return step, meta
            raise ValueError(
                f"{field}: the source run has not finished (newest checkpoint: step {step} of "
                f"{ends[-1] if ends else '?'}); finish it or name a phase"
            )
        if meta.get("phase") == phase and ends and step == ends[index]:
            return step, meta
    raise ValueError(f"{field}: no kept checkpoint ends phase {phase!r}; kept: {', '.join(seen)}")
