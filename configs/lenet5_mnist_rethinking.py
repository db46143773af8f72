"""LeNet-5 on MNIST, Liu et al. "Rethinking the Value of Network Pruning" at CPU scale.

Trains the dense LeNet-5 (Caffe variant), prunes it, then either fine-tunes the pruned model
(``flow='prune_finetune'``, the default) or trains the pruned architecture / mask from a fresh
initialisation (``--config.flow=scratch_e``: as many steps as the dense phase;
``--config.flow=scratch_b``: that times the dense/pruned FLOPs ratio, capped at 2x).

    python -m jaxprune.main --config configs/lenet5_mnist_rethinking.py --workdir runs/rethink_l1
    python -m jaxprune.main --config configs/lenet5_mnist_rethinking.py:magnitude \
        --config.flow=scratch_b --workdir runs/rethink_mag_b

Arguments (comma-separated): ``l1_filter`` (default; Li et al. L1-norm filter pruning, half of
the filters/units of conv1, conv2 and dense1 removed: widths 20/50/500 -> 10/25/250, a really
smaller model with 3.5x fewer FLOPs) or ``magnitude`` (unstructured Global MP to 90% sparsity),
and ``smoke`` (seconds, for tests).

Expected (CPU, ~1 minute per run at the default 3 epochs): dense ~98.9%; all three flows within
a few tenths of a percent of each other (see ``experiments/rethinking.py`` for the table).
"""

from jaxprune.configs import default, recipes

VARIANTS = ("l1_filter", "magnitude")


def get_config(arg=None):
    variant, smoke = recipes.parse_arg(arg, VARIANTS, default="l1_filter")

    config = default.get_config()
    config.flow = "prune_finetune"
    config.model.name = "lenet5"
    config.dataset.name = "mnist"

    config.training.batch_size = 128
    config.training.epochs = 3.0
    config.training.optimizer = "adam"
    config.training.learning_rate = 1e-3
    config.training.lr_schedule = "cosine"
    config.training.log_every = 100
    config.training.checkpoint_every = 500

    if variant == "l1_filter":
        config.structured.method = "l1_filter"
        config.structured.ratio = 0.5
    else:
        config.pruning.score = "magnitude"
        config.pruning.selection = "global"
        config.pruning.sparsity = 0.9

    # Fine-tuning: a quarter of the training length at a tenth of the learning rate.
    config.finetune.epochs = 0.75
    config.finetune.learning_rate = 1e-4
    config.finetune.lr_schedule = "cosine"

    if smoke:
        config.training.plots = False
        config.training.steps = 30
        config.finetune.steps = 10
        config.training.batch_size = 64
        config.training.log_every = 10
        config.training.checkpoint_every = 20
        config.dataset.eval_limit = 512
    return config
