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

from jaxprune.configs import default, recipes


def get_config(arg=None):
    method, smoke = recipes.parse_arg(arg, tuple(recipes.SANITY_METHODS), default="snip")
    config = default.get_config()
    config.flow = "prune_at_init"
    config.model.name = "vgg19"
    config.dataset.name = "cifar10"
    recipes.cifar_sgd(config)

    recipes.apply_sanity_method(config, method)
    config.pruning.sparsity = 0.98
    config.pruning.score_batch_size = 100

    if smoke:
        recipes.cifar_smoke(config, width=0.125)
        config.pruning.sparsity = 0.9
    return config
