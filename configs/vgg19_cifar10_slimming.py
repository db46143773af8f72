"""VGG-19 on CIFAR-10 with network slimming (Liu et al. 2017), 70% of the channels pruned.

The dense phase adds an L1 penalty (1e-4) on every BatchNorm scale; then one global threshold
over all |scale| values removes 70% of the conv channels (each layer keeps at least one) and
the narrower VGG-19 is fine-tuned, or trained from scratch with ``--config.flow=scratch_e`` /
``scratch_b`` (Liu et al. "Rethinking", Table 4).

Needs CIFAR-10 prepared for tensorflow-datasets (see README, "Datasets"), then on a GPU/TPU:

    python -m jaxprune.main --config configs/vgg19_cifar10_slimming.py --workdir runs/vgg19_slim \
        --config.dataset.data_dir=~/tensorflow_datasets

Expected (Liu et al.'s numbers; not measured here): dense ~93.5%, fine-tuned ~93.6%,
Scratch-E ~93.3%, Scratch-B ~93.8%, with ~51% fewer FLOPs and ~89% fewer parameters.

`:smoke` runs a 1/8-width VGG-19 on a small synthetic CIFAR-shaped set in seconds.
"""

from jaxprune.configs import default, recipes


def get_config(arg=None):
    _, smoke = recipes.parse_arg(arg)
    config = default.get_config()
    config.flow = "prune_finetune"
    config.model.name = "vgg19"
    config.dataset.name = "cifar10"

    recipes.cifar_sgd(config)  # Liu et al.: 160 epochs, batch 64, 0.1 step-decayed, wd 1e-4

    config.structured.method = "slimming"
    config.structured.ratio = 0.7
    config.structured.slimming_l1 = 1e-4

    config.finetune.epochs = 160.0
    config.finetune.learning_rate = 0.1
    config.finetune.lr_schedule = "step"

    if smoke:
        recipes.cifar_smoke(config)
        config.finetune.learning_rate = 0.05
    return config
