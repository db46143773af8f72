"""Training: the runner, its flows, train state, jitted masked steps, optimizers, checkpoints.

Architecture (see ``docs/ARCHITECTURE.md``): ``runner.Runner`` resumes and runs the phases of
one flow from the registry in ``flows/``; flows compose the building blocks of
``context.RunContext`` at phase boundaries; every train step is ``jp.masked``'s optax update.
"""

from jaxprune.training import flows
from jaxprune.training.checkpoint import Checkpointer, CheckpointError
from jaxprune.training.config_check import validate_config
from jaxprune.training.flows import Flow, Phase, PhaseStart
from jaxprune.training.optim import make_optimizer, make_schedule
from jaxprune.training.result import RunResult, format_table, load_run
from jaxprune.training.runner import train_and_evaluate
from jaxprune.training.state import TrainState, create_train_state, dense_masks
from jaxprune.training.steps import eval_step_fn, train_step_fn

__all__ = [
    "CheckpointError",
    "Checkpointer",
    "Flow",
    "Phase",
    "PhaseStart",
    "RunResult",
    "TrainState",
    "create_train_state",
    "dense_masks",
    "eval_step_fn",
    "flows",
    "format_table",
    "load_run",
    "make_optimizer",
    "make_schedule",
    "train_and_evaluate",
    "train_step_fn",
    "validate_config",
]
