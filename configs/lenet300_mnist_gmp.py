"""LeNet-300-100 on MNIST: train dense, prune to 98% with Global MP + MT, fine-tune.

The README's default experiment (`make demo`):

    python -m jaxprune.main --config configs/lenet300_mnist_gmp.py --workdir runs/lenet300_mnist_gmp

Expected (measured on a shared 2-core CPU, about 70 s of training): dense 10 epochs (Adam,
cosine) 98.33% test accuracy; right after pruning to 98% sparsity (5,324 of 266,200 kernel
weights kept) with Global MP + MT (every layer keeps at least 0.2% of all prunable weights, i.e.
532) 48.0%; after 20 epochs of fine-tuning 97.71%, within one point of dense.

`--config configs/lenet300_mnist_gmp.py:smoke` shrinks it to a few seconds (tests).
"""

from jaxprune.configs import default


def get_config(arg=None):
    config = default.get_config()
    config.flow = "prune_finetune"
    config.model.name = "lenet300"
    config.dataset.name = "mnist"

    config.training.batch_size = 128
    config.training.epochs = 10.0
    config.training.optimizer = "adam"
    config.training.learning_rate = 1e-3
    config.training.lr_schedule = "cosine"
    config.training.momentum = 0.9
    config.training.log_every = 100
    config.training.eval_every = 936  # every 2 epochs (468 steps per epoch)
    config.training.checkpoint_every = 1000

    config.pruning.score = "magnitude"
    config.pruning.selection = "global"
    config.pruning.sparsity = 0.98
    config.pruning.min_keep_fraction = 0.002

    config.finetune.epochs = 20.0
    config.finetune.learning_rate = 2e-3
    config.finetune.lr_schedule = "cosine"

    if arg == "smoke":
        config.training.plots = False
        config.training.steps = 60
        config.finetune.steps = 40
        config.training.log_every = 10
        config.training.eval_every = 0
        config.training.checkpoint_every = 20
        config.dataset.eval_limit = 1024
    elif arg:
        raise ValueError(f"unknown config argument {arg!r}; use 'smoke' or nothing")
    return config
