"""VGG-16 on CIFAR-10 with Li et al.'s L1-norm filter pruning, setting "VGG-16-A".

Liu et al. "Rethinking the Value of Network Pruning", Table 1: half of the filters of conv 1 and
convs 8-13 are removed (the layers Li et al. found insensitive), the rest are kept; FLOPs drop
by ~34% and parameters by ~64%. Then fine-tune (default), or ``--config.flow=scratch_e`` /
``scratch_b`` to train the pruned architecture from scratch.

Needs CIFAR-10 prepared for tensorflow-datasets (see README, "Datasets"), then on a GPU/TPU:

    python -m jaxprune.main --config configs/vgg16_cifar10_l1_filter.py --workdir runs/vgg16_l1 \
        --config.dataset.data_dir=~/tensorflow_datasets

Expected (Liu et al.'s numbers for this recipe; not measured here): dense ~93.6%, fine-tuned
~93.4%, Scratch-E ~93.6%, Scratch-B ~93.8%.

`:smoke` runs a 1/8-width VGG-16 on a small synthetic CIFAR-shaped set in seconds.
"""

from configs import default


def get_config(arg=None):
    config = default.get_config()
    config.flow = "prune_finetune"
    config.model.name = "vgg16"
    config.dataset.name = "cifar10"

    # Liu et al.: 160 epochs, batch 64, SGD 0.1 divided by 10 at 50% and 75%, wd 1e-4.
    config.training.batch_size = 64
    config.training.epochs = 160.0
    config.training.optimizer = "sgd"
    config.training.learning_rate = 0.1
    config.training.lr_schedule = "step"
    config.training.momentum = 0.9
    config.training.weight_decay = 1e-4
    config.training.log_every = 100
    config.training.eval_every = 7800
    config.training.checkpoint_every = 7800

    config.structured.method = "l1_filter"
    config.structured.ratio = 0.5
    # Conv layers 1 and 8-13 (1-based) are pruned by half, layers 2-7 are kept.
    config.structured.skip = (r"^Conv_[1-6]$",)

    # Li et al. retrain for 40 epochs at a constant 0.001.
    config.finetune.epochs = 40.0
    config.finetune.learning_rate = 0.001
    config.finetune.lr_schedule = "constant"

    if arg == "smoke":
        config.model.width = 0.125
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
    elif arg:
        raise ValueError(f"unknown config argument {arg!r}; use 'smoke' or nothing")
    return config
