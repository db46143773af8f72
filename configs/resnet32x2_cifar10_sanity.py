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

from jaxprune.configs import default, recipes


def get_config(arg=None):
    method, smoke = recipes.parse_arg(arg, tuple(recipes.SANITY_METHODS), default="snip")
    config = default.get_config()
    config.flow = "prune_at_init"
    config.model.name = "resnet32"
    config.model.width = 2.0
    config.dataset.name = "cifar10"
    recipes.cifar_sgd(config)

    recipes.apply_sanity_method(config, method)
    config.pruning.sparsity = 0.95
    config.pruning.score_batch_size = 100

    if smoke:
        config.model.name = "resnet20"
        recipes.cifar_smoke(config, width=0.5)
        config.pruning.sparsity = 0.9
    return config
