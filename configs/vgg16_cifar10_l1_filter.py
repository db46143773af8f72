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

from jaxprune.configs import default, recipes


def get_config(arg=None):
    _, smoke = recipes.parse_arg(arg)
    config = default.get_config()
    config.flow = "prune_finetune"
    config.model.name = "vgg16"
    config.dataset.name = "cifar10"

    recipes.cifar_sgd(config)  # Liu et al.: 160 epochs, batch 64, 0.1 step-decayed, wd 1e-4

    config.structured.method = "l1_filter"
    config.structured.ratio = 0.5
    # Conv layers 1 and 8-13 (1-based) are pruned by half, layers 2-7 are kept.
    config.structured.skip = (r"^Conv_[1-6]$",)
    config.structured.rounding = "floor"  # Li et al.: keep int((1 - ratio) * n) filters

    # Li et al. retrain for 40 epochs at a constant 0.001.
    config.finetune.epochs = 40.0
    config.finetune.learning_rate = 0.001
    config.finetune.lr_schedule = "constant"

    if smoke:
        recipes.cifar_smoke(config)
    return config
