"""What a flow is: its phases, its config checks and what it does at phase boundaries.

A run is a list of phases over one global step counter. The runner (``runner.py``) knows no flow
by name: it resumes, then for each phase asks the flow for the phase's first state
(``begin_phase``: prune, rewind, re-initialise, narrow the model ...), trains it with the flow's
step (``train_step``), calls ``after_step`` after every step (in-step mask updates to log, rewind
points to keep) and evaluates / checkpoints. A flow holds no state of its own between calls:
everything that must survive a restart lives in the train state, in ``RunContext.carry`` (saved
with every checkpoint) or in the checkpoint meta the runner writes (phase lengths, widths).
"""

import dataclasses
from typing import Any

import ml_collections

PyTree = Any


@dataclasses.dataclass(frozen=True)
class Phase:
    """One stretch of training with its own optimizer.

    Attributes:
      name: written to metrics.jsonl ('dense', 'finetune', 'sparse', 'gradual', 'round_<r>', ...).
      start: global step at which the phase starts.
      num_steps: its length in steps.
      learning_rate: peak learning rate.
      lr_schedule: schedule name.
      prune_first: whether the phase starts by pruning (its first state gets a 'pruned' record).
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


@dataclasses.dataclass
class PhaseStart:
    """The first state of a phase, as a flow builds it.

    Attributes:
      variables: model variables (``params`` and optional ``batch_stats``) to train.
      masks: bool pytree like ``variables['params']``; None = all kept.
      model: the module to train from now on (structured pruning narrows it); None = unchanged.
      record: fields of the phase's 'pruned' record beyond the sparsity report (FLOPs, round,
        structured widths ...); None = the phase writes no 'pruned' record.
      evaluate: whether the 'pruned' record also gets the test metrics of the pruned net.
      num_steps: a new length for this phase (Scratch-B's FLOPs-matched budget); None = keep.
    """

    variables: PyTree
    masks: PyTree | None = None
    model: Any = None
    record: dict[str, Any] | None = None
    evaluate: bool = False
    num_steps: int | None = None


def phase_steps(block: ml_collections.ConfigDict, steps_per_epoch: int) -> int:
    """Length of a phase block (``training`` / ``finetune``): ``steps``, else ``epochs``."""
    if block.steps > 0:
        return int(block.steps)
    return max(1, round(block.epochs * steps_per_epoch))


def training_phase(
    name: str, config: ml_collections.ConfigDict, start: int, steps_per_epoch: int, prune: bool
) -> Phase:
    """A phase with the ``training`` block's length, learning rate and schedule."""
    training = config.training
    return Phase(
        name,
        start,
        phase_steps(training, steps_per_epoch),
        training.learning_rate,
        training.lr_schedule,
        prune,
    )


class Flow:
    """Base class of flows; subclasses set ``name`` and override what they need.

    The defaults describe a flow that trains its phases one after the other, each starting from
    the previous phase's weights and masks (the first from the initial weights, dense), with
    the masked train step and no 'pruned' record.
    """

    name: str = ""
    #: Whether ``config.init_from`` replaces the flow's first phase (a trained dense net).
    init_from_skips_first_phase: bool = False
    #: Whether the flow prunes once and applies ``config.sanity``'s checks (Su et al.).
    supports_sanity: bool = False
    #: Whether the flow's one-shot prune may be structured (``config.structured``).
    supports_structured: bool = False

    def check(self, config: ml_collections.ConfigDict) -> None:
        """Raises ValueError naming a config field this flow cannot run with."""

    def precheck(self, ctx: Any) -> None:
        """Checks that need the model and the phase plan (``ctx``), run before training."""

    def phases(self, config: ml_collections.ConfigDict, steps_per_epoch: int) -> list[Phase]:
        """The phases in execution order, with their global step ranges."""
        raise NotImplementedError

    def begin_phase(self, ctx: Any, index: int, previous: Any) -> PhaseStart:
        """The first state of phase ``index``; ``previous`` is the last state (None at start)."""
        if previous is None:
            return PhaseStart(ctx.initial_variables())
        return PhaseStart(ctx.variables_of(previous), masks=previous.masks)

    def train_step(self, ctx: Any, index: int, tx: Any) -> Any:
        """The (unjitted) ``step(state, batch) -> (state, metrics)`` of phase ``index``."""
        return ctx.train_step_fn(index, tx)

    def after_step(self, ctx: Any, index: int, step: int, state: Any, metrics: dict) -> dict:
        """Called after each train step (``step`` = steps done); returns the metrics to log."""
        return metrics

    def target_sparsity(self, config: ml_collections.ConfigDict) -> float | None:
        """The run's final target sparsity (None when it does not prune to a target)."""
        return None

    def summary(self, ctx: Any, records: list[dict], evals: dict[str, Any]) -> dict[str, Any]:
        """Extra fields of ``summary.json``."""
        return {}
