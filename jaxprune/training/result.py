"""What a run gives back in Python: ``RunResult``, from ``train_and_evaluate`` or ``jp.load_run``.

result = jp.load_run("runs/lenet300_mnist_gmp")   # finished or interrupted
result.summary["test_accuracy"], result.step
logits = result.apply_fn(result.variables, images)   # eval mode
jp.sparsity_report(result.variables["params"], result.masks)
"""

import dataclasses
import json
from pathlib import Path
from typing import Any

import jax
import ml_collections

PyTree = Any


@dataclasses.dataclass(frozen=True)
class RunResult:
    """One run's results.

    Attributes:
      workdir: the run directory.
      config: the run's config.
      summary: the ``summary.json`` dict; None for a run that has not finished.
      variables: final (or, for an interrupted run, newest checkpointed) model variables,
        ``{'params': ..., 'batch_stats': ...}``, on the host.
      masks: bool pytree like ``variables['params']``.
      step: the global step of ``variables``.
      apply_fn: ``apply_fn(variables, images, train=False)`` of the model that produced them
        (the narrow one after structured pruning).
      stopped_at_step: the step ``debug.stop_at_step`` stopped the run at, else None.
    """

    workdir: Path
    config: ml_collections.ConfigDict
    summary: dict[str, Any] | None = None
    variables: PyTree = None
    masks: PyTree = None
    step: int | None = None
    apply_fn: Any = None
    stopped_at_step: int | None = None

    @property
    def finished(self) -> bool:
        """Whether the run reached its end (its summary exists)."""
        return self.summary is not None


def load_run(workdir: str | Path) -> RunResult:
    """The results of the run in ``workdir``, finished or interrupted, from its files.

    The model is rebuilt from the stored ``config.json`` and the newest checkpoint restored
    into it (no optimizer to rebuild by hand); ``summary`` is ``summary.json`` when the run
    finished, else None. Nothing in ``workdir`` is modified.

    Raises:
      FileNotFoundError: if ``workdir`` holds no jaxprune run (no ``config.json``) or no
        checkpoint yet.
      CheckpointError: for an unreadable checkpoint.
    """
    from jaxprune.training import flows
    from jaxprune.training.context import RunContext

    workdir = Path(workdir)
    config_path = workdir / "config.json"
    if not config_path.is_file():
        raise FileNotFoundError(f"{workdir} holds no jaxprune run (no config.json)")
    try:
        stored = json.loads(config_path.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"{config_path} is not valid JSON ({e})") from e
    config = ml_collections.ConfigDict(stored)
    ctx = RunContext(config, workdir, flows.get(config.flow))
    try:
        latest = ctx.ckpt.latest_step()
        if latest is None:
            raise FileNotFoundError(f"{workdir} has no checkpoint yet")
        meta = ctx.ckpt.restore_meta(latest)
        where = ctx.ckpt.directory / str(latest)
        index = restore_plan(ctx, meta, where)
        fns = ctx.fns_for(index)
        state = jax.device_get(ctx.ckpt.restore_state(latest, ctx.abstract_state(index)))
    finally:
        ctx.ckpt.close()
    summary_path = workdir / "summary.json"
    summary = json.loads(summary_path.read_text()) if summary_path.is_file() else None
    return RunResult(
        workdir=workdir,
        config=config,
        summary=summary,
        variables={"params": state.params, "batch_stats": state.batch_stats},
        masks=state.masks,
        step=int(state.step),
        apply_fn=fns.apply,
    )


def restore_plan(ctx: Any, meta: dict[str, Any], where: Path) -> int:
    """Applies a checkpoint's meta to ``ctx`` (phase lengths, narrow widths); its phase index.

    Raises:
      CheckpointError: when the meta does not fit the config's flow.
    """
    from jaxprune.training.checkpoint import CheckpointError

    index = meta.get("phase_index")
    if not isinstance(index, int) or not 0 <= index < len(ctx.phases):
        raise CheckpointError(
            f"checkpoint {where} names phase {index!r}, but this flow has {len(ctx.phases)} "
            "phase(s)"
        )
    lengths = meta.get("phase_steps")
    if lengths is not None:
        if len(lengths) != len(ctx.phases) or not all(
            isinstance(n, int) and n > 0 for n in lengths
        ):
            raise CheckpointError(
                f"checkpoint {where} has phase_steps {lengths!r}, but this flow has "
                f"{len(ctx.phases)} phase(s)"
            )
        for i, n in enumerate(lengths):
            ctx.set_phase_steps(i, n)
    widths = meta.get("widths")
    if widths is not None:
        if not ctx.structured or not all(isinstance(w, int) and w > 0 for w in widths):
            raise CheckpointError(
                f"checkpoint {where} has narrow widths {widths!r}, which this config "
                f"(structured.method={ctx.config.structured.method!r}) cannot hold"
            )
        ctx.widths = tuple(widths)
    return index


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
