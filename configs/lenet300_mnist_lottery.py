"""LeNet-300-100 on MNIST: lottery-ticket iterative magnitude pruning (Frankle & Carbin).

    python -m jaxprune.main --config configs/lenet300_mnist_lottery.py \
        --workdir runs/lenet300_mnist_lottery

Round 0 trains the dense net for 5 epochs (2,340 steps, Adam, cosine); each of the 5 later
rounds prunes 20% of the remaining kernel weights of the trained net with global magnitude
pruning (nested in the previous round's mask), rewinds the survivors to their initial values and
retrains for 5 epochs with a fresh optimizer. After round r, exactly
``round(0.8^r * 266,200)`` kernel weights are kept (67.2% sparsity after round 5). Per-round
sparsity and test accuracy are in summary.json (``rounds``) and metrics.jsonl.

Expected (measured on a shared 2-core CPU, about 85 s): kept counts 266,200 / 212,960 /
170,368 / 136,294 / 109,036 / 87,228 after rounds 0..5 (exact), with test accuracy 98.26% /
98.31% / 98.33% / 98.32% / 98.29% / 98.20%: the rewound tickets match the dense net down to
67.2% sparsity.

`--config configs/lenet300_mnist_lottery.py:smoke` shrinks it to a few seconds (tests).
"""

from jaxprune.configs import default


def get_config(arg=None):
    config = default.get_config()
    config.flow = "iterative"
    config.model.name = "lenet300"
    config.dataset.name = "mnist"

    config.training.batch_size = 128
    config.training.epochs = 5.0
    config.training.optimizer = "adam"
    config.training.learning_rate = 1e-3
    config.training.lr_schedule = "cosine"
    config.training.momentum = 0.9
    config.training.log_every = 100
    config.training.eval_every = 0
    config.training.checkpoint_every = 1000

    config.pruning.score = "magnitude"
    config.pruning.selection = "global"
    config.pruning.min_keep_fraction = 0.0
    config.pruning.iterative.rounds = 5
    config.pruning.iterative.rate = 0.2
    config.pruning.iterative.rewind_step = 0

    if arg == "smoke":
        config.training.plots = False
        config.training.steps = 12
        config.training.log_every = 4
        config.training.checkpoint_every = 8
        config.dataset.eval_limit = 512
        config.pruning.iterative.rounds = 2
    elif arg:
        raise ValueError(f"unknown config argument {arg!r}; use 'smoke' or nothing")
    return config
