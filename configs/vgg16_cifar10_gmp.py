"""VGG-16 (CIFAR variant, BatchNorm) on CIFAR-10: dense, Global MP to 95% sparsity, fine-tune.

Needs CIFAR-10 prepared for tensorflow-datasets (see README, "Datasets"), then on a GPU/TPU:

    python -m jaxprune.main --config configs/vgg16_cifar10_gmp.py --workdir runs/vgg16 \
        --config.dataset.data_dir=~/tensorflow_datasets

Expected (literature values for this recipe; not measured in this repository's CI): dense
~93.5% test accuracy after 160 epochs; at 95% sparsity with Global MP and 40 epochs of
fine-tuning ~93%.

`:smoke` runs a 1/8-width VGG-16 on a small synthetic CIFAR-shaped set in seconds.
"""

from jaxprune.configs import default, recipes


def get_config(arg=None):
    config = default.get_config()
    config.flow = "prune_finetune"
    config.model.name = "vgg16"
    config.dataset.name = "cifar10"

    config.training.batch_size = 128
    config.training.epochs = 160.0
    config.training.optimizer = "sgd"
    config.training.learning_rate = 0.1
    config.training.lr_schedule = "cosine"
    config.training.momentum = 0.9
    config.training.weight_decay = 5e-4
    config.training.log_every = 100
    config.training.eval_every = 3900
    config.training.checkpoint_every = 3900

    config.pruning.score = "magnitude"
    config.pruning.selection = "global"
    config.pruning.sparsity = 0.95

    config.finetune.epochs = 40.0
    config.finetune.learning_rate = 0.01
    config.finetune.lr_schedule = "cosine"

    if arg == "smoke":
        recipes.cifar_smoke(config)
    elif arg:
        raise ValueError(f"unknown config argument {arg!r}; use 'smoke' or nothing")
    return config
