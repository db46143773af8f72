"""Training: train state, jitted masked steps, optimizers, checkpoints, the run loop."""

from jaxprune.training.checkpoint import Checkpointer, CheckpointError
from jaxprune.training.config_check import validate_config
from jaxprune.training.loop import Phase, format_table, plan_phases, train_and_evaluate
from jaxprune.training.optim import make_optimizer, make_schedule
from jaxprune.training.state import TrainState, create_train_state, dense_masks
from jaxprune.training.steps import eval_step_fn, train_step_fn

__all__ = [
    "CheckpointError",
    "Checkpointer",
    "Phase",
    "TrainState",
    "create_train_state",
    "dense_masks",
    "eval_step_fn",
    "format_table",
    "make_optimizer",
    "make_schedule",
    "plan_phases",
    "train_and_evaluate",
    "train_step_fn",
    "validate_config",
]
