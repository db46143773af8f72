"""ResNet-20 on CIFAR-10: gradual magnitude pruning to 90% inside SGD training (Zhu & Gupta).

Needs CIFAR-10 prepared for tensorflow-datasets (see README, "Datasets"), then on a GPU/TPU:

    python -m jaxprune.main --config configs/resnet20_cifar10_gradual.py \
        --workdir runs/resnet20_gradual --config.dataset.data_dir=~/tensorflow_datasets

One run of 160 epochs (62,400 steps at batch 128, SGD with Nesterov momentum 0.9, cosine,
weight decay 1e-4): dense warm-up for 20 epochs (7,800 steps), then the masks are recomputed
from the current weights every epoch (390 steps) up to epoch 100 (39,000 steps) on the cubic
schedule 0% -> 90% (Global MP, the selection of ``resnet20_cifar10_gmp.py``, so the two can be
compared at the same kept count), then 60 epochs of recovery at 90%.

Expected (literature values for gradual magnitude pruning of ResNet-20 at 90%; not measured in
this repository): dense ~92% test accuracy; exactly 90% kernel sparsity at the end and ~88-90%
test accuracy, about the same as or slightly above train-prune-fine-tune
(``resnet20_cifar10_gmp.py``) at the same target.

`:smoke` runs a quarter-width ResNet-20 on a small synthetic CIFAR-shaped set in seconds.
"""

from jaxprune.configs import default, recipes


def get_config(arg=None):
    config = default.get_config()
    config.flow = "gradual"
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
    config.training.eval_every = 3900  # every 10 epochs (390 steps per epoch)
    config.training.checkpoint_every = 3900

    config.pruning.score = "magnitude"
    config.pruning.selection = "global"
    config.pruning.sparsity = 0.9  # unused by flow='gradual'; kept equal to the final target

    config.pruning.schedule.type = "polynomial"
    config.pruning.schedule.initial_sparsity = 0.0
    config.pruning.schedule.final_sparsity = 0.9
    config.pruning.schedule.begin_step = 7800
    config.pruning.schedule.end_step = 39000
    config.pruning.schedule.frequency = 390
    config.pruning.schedule.power = 3.0

    if arg == "smoke":
        _smoke(config)
    elif arg:
        raise ValueError(f"unknown config argument {arg!r}; use 'smoke' or nothing")
    return config


def _smoke(config):
    recipes.cifar_smoke(config, width=0.25)
    config.pruning.schedule.begin_step = 2
    config.pruning.schedule.end_step = 8
    config.pruning.schedule.frequency = 2
