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

from configs import default


def get_config(arg=None):
    config = default.get_config()
    config.flow = "prune_finetune"
    config.model.name = "vgg19"
    config.dataset.name = "cifar10"

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

    config.structured.method = "slimming"
    config.structured.ratio = 0.7
    config.structured.slimming_l1 = 1e-4

    config.finetune.epochs = 160.0
    config.finetune.learning_rate = 0.1
    config.finetune.lr_schedule = "step"

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
        config.finetune.learning_rate = 0.05
        config.training.log_every = 4
        config.training.eval_every = 0
        config.training.checkpoint_every = 8
    elif arg:
        raise ValueError(f"unknown config argument {arg!r}; use 'smoke' or nothing")
    return config
