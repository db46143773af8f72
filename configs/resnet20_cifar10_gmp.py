"""ResNet-20 on CIFAR-10: dense SGD training, Global MP to 90% sparsity, fine-tune.

Needs CIFAR-10 prepared for tensorflow-datasets (see README, "Datasets"), then on a GPU/TPU:

    python -m jaxprune.main --config configs/resnet20_cifar10_gmp.py --workdir runs/resnet20 \
        --config.dataset.data_dir=~/tensorflow_datasets

Expected (literature values for this recipe; not measured in this repository's CI): dense
~92% test accuracy after 160 epochs; at 90% sparsity with Global MP and 40 epochs of
fine-tuning ~89-90%.

`:smoke` runs a quarter-width ResNet-20 on a small synthetic CIFAR-shaped set in seconds.
"""

from jaxprune.configs import default, recipes


def get_config(arg=None):
    config = default.get_config()
    config.flow = "prune_finetune"
    config.model.name = "resnet20"
    config.dataset.name = "cifar10"

    config.training.batch_size = 128
    config.training.epochs = 160.0
    config.training.optimizer = "sgd"
    config.training.learning_rate = 0.1
    config.training.lr_schedule = "cosine"
    config.training.momentum = 0.9
    config.training.weight_decay = 1e-4
    config.training.log_every = 100
    config.training.eval_every = 3900
    config.training.checkpoint_every = 3900

    config.pruning.score = "magnitude"
    config.pruning.selection = "global"
    config.pruning.sparsity = 0.9

    config.finetune.epochs = 40.0
    config.finetune.learning_rate = 0.01
    config.finetune.lr_schedule = "cosine"

    if arg == "smoke":
        _smoke(config)
    elif arg:
        raise ValueError(f"unknown config argument {arg!r}; use 'smoke' or nothing")
    return config


def _smoke(config):
    recipes.cifar_smoke(config, width=0.25)
