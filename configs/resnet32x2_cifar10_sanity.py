"""ResNet-32 at double width (32/64/128 channels) on CIFAR-10 pruned at initialisation (Su et al.).

Su et al.'s residual-network setting: the mask is computed at initialisation by the chosen
method (smart ratio without the 1/l^2 factor for this residual net) at 95% sparsity and the
sparse net is trained for 160 epochs. Sanity checks via ``--config.sanity.*``;
``experiments/sanity_checks.py --setting resnet32x2`` runs them all.

Needs CIFAR-10 prepared for tensorflow-datasets (see README, "Datasets"), then on a GPU/TPU:

    python -m jaxprune.main --config configs/resnet32x2_cifar10_sanity.py:grasp \
        --workdir runs/resnet32x2_grasp --config.dataset.data_dir=~/tensorflow_datasets

Expected (Su et al.'s numbers at 95% sparsity; not measured here): SNIP ~91.5%, GraSP ~91.4%,
random tickets ~91.6%; shuffled / random-label variants within noise of the originals.

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
    config.model.name = "resnet32"
    config.model.width = 2.0
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
    config.pruning.sparsity = 0.95
    config.pruning.score_batch_size = 100

    if "smoke" in tokens:
        config.model.name = "resnet20"
        config.model.width = 0.5
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
