"""VGG-19 on CIFAR-10 pruned at initialisation (Su et al. "Sanity-Checking Pruning Methods").

Su et al.'s CIFAR-10 setting: the mask is computed at initialisation by the chosen method at
98% sparsity and the sparse VGG-19 is trained for 160 epochs. Sanity checks are switched on with
``--config.sanity.*`` (see ``configs/lenet5_mnist_sanity.py``); ``experiments/sanity_checks.py
--setting vgg19`` runs them all.

Needs CIFAR-10 prepared for tensorflow-datasets (see README, "Datasets"), then on a GPU/TPU:

    python -m jaxprune.main --config configs/vgg19_cifar10_sanity.py:random_ticket \
        --workdir runs/vgg19_rt --config.dataset.data_dir=~/tensorflow_datasets

Expected (Su et al.'s numbers at 98% sparsity; not measured here): SNIP ~92.0%, GraSP ~92.1%,
random tickets ~92.2%, and the sanity-check variants of SNIP/GraSP within noise of the originals.

Arguments (comma-separated): the method (as in ``configs/lenet5_mnist_sanity.py``), ``smoke``.
"""

from configs import default
from configs.lenet5_mnist_sanity import METHODS, apply_method


def get_config(arg=None):
    tokens = [t for t in (arg or "").split(",") if t]
    unknown = [t for t in tokens if t not in (*METHODS, "smoke")]
    if unknown or sum(t in METHODS for t in tokens) > 1:
        raise ValueError(
            f"unknown config argument {arg!r}; use one of {sorted(METHODS)} and/or 'smoke'"
        )
    method = next((t for t in tokens if t in METHODS), "snip")

    config = default.get_config()
    config.flow = "prune_at_init"
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

    apply_method(config, method)
    config.pruning.sparsity = 0.98
    config.pruning.score_batch_size = 100

    if "smoke" in tokens:
        config.model.width = 0.125
        config.dataset.name = "synthetic"
        config.dataset.shape_like = "cifar10"
        config.dataset.num_train = 256
        config.dataset.num_test = 128
        config.training.batch_size = 32
        config.training.steps = 12
        config.training.learning_rate = 0.05
        config.training.log_every = 4
        config.training.eval_every = 0
        config.training.checkpoint_every = 8
        config.pruning.sparsity = 0.9
        config.pruning.synflow_rounds = 5
        config.pruning.score_batch_size = 32
    return config
