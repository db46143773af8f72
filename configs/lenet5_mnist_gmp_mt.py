"""LeNet-5 (Caffe variant) on MNIST: dense, then Global MP + MT at 99% sparsity, fine-tune.

    python -m jaxprune.main --config configs/lenet5_mnist_gmp_mt.py --workdir runs/lenet5_mnist

Expected (CPU, roughly 10-20 minutes): dense ~99.1% test accuracy; at 99% sparsity
(4,305 of 430,500 prunable weights kept) with every layer keeping at least 0.1% of all prunable
weights (MT; 430 weights, which keeps the 500-weight first conv alive), fine-tuned to ~98.5-99%.

`--config configs/lenet5_mnist_gmp_mt.py:smoke` shrinks it to seconds (tests).
"""

from jaxprune.configs import default


def get_config(arg=None):
    config = default.get_config()
    config.flow = "prune_finetune"
    config.model.name = "lenet5"
    config.dataset.name = "mnist"

    config.training.batch_size = 128
    config.training.epochs = 10.0
    config.training.optimizer = "adam"
    config.training.learning_rate = 1e-3
    config.training.lr_schedule = "cosine"
    config.training.log_every = 100
    config.training.checkpoint_every = 1000

    config.pruning.score = "magnitude"
    config.pruning.selection = "global"
    config.pruning.sparsity = 0.99
    config.pruning.min_keep_fraction = 0.001

    config.finetune.epochs = 10.0
    config.finetune.learning_rate = 1e-3

    if arg == "smoke":
        config.training.plots = False
        config.training.steps = 30
        config.finetune.steps = 20
        config.training.batch_size = 64
        config.training.log_every = 10
        config.training.checkpoint_every = 20
        config.dataset.eval_limit = 512
    elif arg:
        raise ValueError(f"unknown config argument {arg!r}; use 'smoke' or nothing")
    return config
