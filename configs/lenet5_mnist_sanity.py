"""LeNet-5 on MNIST pruned at initialisation, for Su et al.'s sanity checks ("Random Tickets").

The mask is computed from the initial weights by the chosen method, then the sparse net is
trained (``flow='prune_at_init'``). Switch on a sanity check with ``--config.sanity.*``:

    python -m jaxprune.main --config configs/lenet5_mnist_sanity.py:snip --workdir runs/snip
    python -m jaxprune.main --config configs/lenet5_mnist_sanity.py:snip --workdir runs/snip_shuf \
        --config.sanity.shuffle_layerwise=True

Arguments (comma-separated): the method, one of ``snip`` (default), ``grasp``, ``synflow``,
``magnitude`` (magnitude at init, global), ``random_ticket`` (smart-ratio quotas, random
positions), ``hybrid_ticket`` (smart-ratio quotas, magnitude inside each layer); and ``smoke``
(seconds, for tests). ``experiments/sanity_checks.py`` runs every variant and tabulates them.

Expected (CPU, ~1 minute per run at 2 epochs, 98% sparsity): every method lands near 98% test
accuracy, and the layerwise-shuffled and random-label masks do as well as the original ones.
"""

from jaxprune.configs import default, recipes

# The methods and how they set the pruning fields (shared with the CIFAR sanity configs); the
# names stay importable from here for experiments/sanity_checks.py.
METHODS = recipes.SANITY_METHODS
apply_method = recipes.apply_sanity_method


def get_config(arg=None):
    method, smoke = recipes.parse_arg(arg, tuple(METHODS), default="snip")

    config = default.get_config()
    config.flow = "prune_at_init"
    config.model.name = "lenet5"
    config.dataset.name = "mnist"

    config.training.batch_size = 128
    config.training.epochs = 2.0
    config.training.optimizer = "adam"
    config.training.learning_rate = 1e-3
    config.training.lr_schedule = "cosine"
    config.training.log_every = 100
    config.training.checkpoint_every = 500

    apply_method(config, method)
    config.pruning.sparsity = 0.98
    config.pruning.score_batch_size = 256

    if smoke:
        config.training.plots = False
        config.training.steps = 20
        config.training.batch_size = 64
        config.training.log_every = 10
        config.training.checkpoint_every = 10
        config.pruning.synflow_rounds = 5
        config.pruning.score_batch_size = 64
        config.dataset.eval_limit = 512
    return config
