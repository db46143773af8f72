"""Shared pieces of the experiment configs in ``configs/`` (not a config itself: no ``get_config``).

They live in the package, next to :mod:`jaxprune.configs.default`, so that a config file loads
from any working directory (``--config /abs/path/configs/x.py``).

* :func:`parse_arg`: the comma-separated ``--config configs/x.py:ARG`` argument (a variant and/or
  ``smoke``), with the error every config gives for anything else.
* :func:`cifar_sgd`: the CIFAR-10 recipe of Liu et al. / Su et al. (SGD with momentum 0.9,
  0.1 divided by 10 at 50% and 75% of 160 epochs, batch 64, weight decay 1e-4).
* :func:`cifar_smoke`: a tiny synthetic CIFAR-shaped run of a few steps (tests).
* :func:`imagenet_sgd`: the standard ImageNet recipe (SGD with Nesterov momentum 0.9, learning
  rate 0.1 x batch / 256 with a 5-epoch linear warm-up and cosine decay, weight decay 1e-4).
* :func:`imagenet_smoke`: a few steps of an ImageNet model on tiny synthetic 32x32 ImageNet-shaped
  data (1000 classes; shape ``imagenet2012_32``), at a small width (tests).
* :data:`SANITY_METHODS` / :func:`apply_sanity_method`: the pruning-at-init methods of Su et al.'s
  sanity checks (``configs/*_sanity.py``), as ``pruning.score`` / ``selection`` / ``quota``.
"""

from collections.abc import Sequence


def parse_arg(arg: str | None, variants: Sequence[str] = (), default: str | None = None):
    """Splits ``arg`` into (variant, smoke).

    Args:
      arg: the config argument, e.g. ``None``, ``"smoke"``, ``"B"``, ``"grasp,smoke"``.
      variants: the variant names the config accepts (at most one may be given).
      default: the variant when none is given.

    Returns:
      ``(variant, smoke)``.

    Raises:
      ValueError: ``unknown config argument ...`` for anything else.
    """
    tokens = [t for t in (arg or "").split(",") if t]
    chosen = [t for t in tokens if t in variants]
    if any(t not in (*variants, "smoke") for t in tokens) or len(chosen) > 1:
        choices = f"one of {list(variants)} and/or 'smoke'" if variants else "'smoke' or nothing"
        raise ValueError(f"unknown config argument {arg!r}; use {choices}")
    return (chosen[0] if chosen else default), "smoke" in tokens


def cifar_sgd(config, epochs: float = 160.0, eval_every: int = 7800):
    """Sets the CIFAR-10 training recipe of Liu et al. and Su et al. on ``config.training``."""
    training = config.training
    training.batch_size = 64
    training.epochs = epochs
    training.optimizer = "sgd"
    training.learning_rate = 0.1
    training.lr_schedule = "step"
    training.momentum = 0.9
    training.weight_decay = 1e-4
    training.log_every = 100
    training.eval_every = eval_every  # 10 epochs of 782 steps, roughly
    training.checkpoint_every = eval_every
    return config


def cifar_smoke(config, width: float = 0.125):
    """Shrinks a CIFAR-10 config to a few steps on a small synthetic CIFAR-shaped set."""
    config.training.plots = False  # smoke runs check numbers, not figures
    config.model.width = width
    config.dataset.name = "synthetic"
    config.dataset.shape_like = "cifar10"
    config.dataset.num_train = 256
    config.dataset.num_test = 128
    config.training.batch_size = 32
    config.training.steps = 12
    config.finetune.steps = 8
    config.training.learning_rate = 0.05
    config.training.log_every = 4
    config.training.eval_every = 0
    config.training.checkpoint_every = 8
    config.pruning.synflow_rounds = 5
    config.pruning.score_batch_size = 32
    return config


# ImageNet-2012 training examples (tfds 'train' split) and optimizer steps per epoch at batch B:
# IMAGENET_TRAIN // B (1,251 at batch 1024).
IMAGENET_TRAIN = 1_281_167


def imagenet_steps_per_epoch(batch_size: int) -> int:
    """Optimizer steps in one ImageNet-2012 epoch at ``batch_size`` (full batches)."""
    return IMAGENET_TRAIN // batch_size


def imagenet_sgd(config, epochs: float = 90.0, batch_size: int = 1024, weight_decay: float = 1e-4):
    """Sets the standard ImageNet recipe on ``config.training`` (Goyal et al. 2017 scaling).

    SGD with Nesterov momentum 0.9, peak learning rate ``0.1 * batch_size / 256`` after a linear
    warm-up of 5 epochs, cosine decay to 0, weight decay on the kernels; evaluation every 5
    epochs and a checkpoint every epoch.
    """
    steps_per_epoch = imagenet_steps_per_epoch(batch_size)
    training = config.training
    training.batch_size = batch_size
    training.epochs = epochs
    training.optimizer = "sgd"
    training.learning_rate = 0.1 * batch_size / 256
    training.lr_schedule = "cosine"
    training.warmup_steps = 5 * steps_per_epoch
    training.momentum = 0.9
    training.weight_decay = weight_decay
    training.log_every = 100
    training.eval_every = 5 * steps_per_epoch
    training.checkpoint_every = steps_per_epoch
    return config


def imagenet_smoke(config, width: float = 0.0625):
    """Shrinks an ImageNet config to a few steps on tiny synthetic 32x32 ImageNet-shaped data.

    The model keeps its depth (ResNet-50 is still ResNet-50) at a small ``width``; 1000 classes.
    """
    config.training.plots = False  # smoke runs check numbers, not figures
    config.model.width = width
    config.dataset.name = "synthetic"
    config.dataset.shape_like = "imagenet2012_32"
    config.dataset.num_train = 64
    config.dataset.num_test = 16
    config.dataset.eval_limit = 16
    config.training.batch_size = 8
    config.training.steps = 3
    config.finetune.steps = 2
    config.training.learning_rate = 0.05
    config.training.warmup_steps = 0
    config.training.log_every = 1
    config.training.eval_every = 0
    config.training.checkpoint_every = 0
    config.pruning.score_batch_size = 8
    return config


# Pruning-at-init method -> (pruning.score, pruning.selection); layerwise ones get smart-ratio
# quotas.
SANITY_METHODS = {
    "snip": ("snip", "global"),
    "grasp": ("grasp", "global"),
    "synflow": ("synflow", "global"),
    "magnitude": ("magnitude", "global"),
    "random_ticket": ("random", "layerwise"),
    "hybrid_ticket": ("magnitude", "layerwise"),
}


def apply_sanity_method(config, method):
    """Sets ``pruning.score`` / ``selection`` / ``quota`` for one of ``SANITY_METHODS``."""
    if method not in SANITY_METHODS:
        raise ValueError(f"unknown pruning method {method!r}; known: {sorted(SANITY_METHODS)}")
    config.pruning.score, config.pruning.selection = SANITY_METHODS[method]
    config.pruning.quota = "smart_ratio" if config.pruning.selection == "layerwise" else "uniform"
    return config
