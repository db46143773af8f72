"""ResNet-56 on CIFAR-10 with Li et al.'s L1-norm filter pruning, settings "A" and "B".

Only the first conv of each residual block is pruned (its output channels are free; the block
outputs are tied together by the residual sums). Li et al. / Liu et al. (Table 1):

* ``A`` (default): 10% of the filters of every block's first conv, except the sensitive layers
  16, 20, 38 and 54 (blocks 7, 9, 18 and 26);
* ``B``: 60% / 30% / 10% in stages 1 / 2 / 3, skipping layers 16, 18, 20, 34, 38 and 54
  (blocks 7, 8, 9, 16, 18, 26).

A layer of ``n`` filters at ratio ``r`` keeps ``int((1 - r) * n)`` of them, as Li et al.'s code
(``structured.rounding = "floor"``): A keeps 14 / 28 / 57 of 16 / 32 / 64 filters in the pruned
blocks, B keeps 6 / 22 / 57. Only these widths give the published FLOPs (conv + fc
multiply-accumulates per example, BatchNorm not counted): 1.124e8 for A (paper: 1.12e8) and
9.091e7 for B (9.09e7) against 1.255e8 dense (1.25e8). Rounding the pruned count instead
(``"round"``: 29 / 58 filters) gives 1.141e8 for A.

Our ResNet uses 1x1 projection shortcuts (option B) where Li et al. use zero padding, so the
dense model has 0.21% more FLOPs (262,144 MACs on top of 125,485,696); the pruned layers are the
same.

Needs CIFAR-10 prepared for tensorflow-datasets (see README, "Datasets"), then on a GPU/TPU:

    python -m jaxprune.main --config configs/resnet56_cifar10_l1_filter.py:B \
        --workdir runs/resnet56_b --config.dataset.data_dir=~/tensorflow_datasets

Expected (Liu et al.'s numbers; not measured here): dense ~93.1%; A: fine-tuned ~92.97%,
Scratch-E ~92.96%, Scratch-B ~93.09%; B: fine-tuned ~92.67%, Scratch-E ~92.54%, Scratch-B ~93.05%.

Arguments (comma-separated): ``A`` or ``B``, and ``smoke`` (a width-1/2 ResNet-20 on a small
synthetic CIFAR-shaped set, seconds).
"""

from jaxprune.configs import default, recipes

SKIP = {
    "A": (r"^BasicBlock_(7|9|18|26)/",),
    "B": (r"^BasicBlock_(7|8|9|16|18|26)/",),
}
RATIOS = {
    "A": (),
    "B": (
        (r"^BasicBlock_[0-8]/", 0.6),
        (r"^BasicBlock_(9|1[0-7])/", 0.3),
        (r"^BasicBlock_(1[89]|2[0-6])/", 0.1),
    ),
}


def get_config(arg=None):
    variant, smoke = recipes.parse_arg(arg, tuple(SKIP), default="A")

    config = default.get_config()
    config.flow = "prune_finetune"
    config.model.name = "resnet56"
    config.dataset.name = "cifar10"

    recipes.cifar_sgd(config)

    config.structured.method = "l1_filter"
    config.structured.ratio = 0.1
    config.structured.ratios = RATIOS[variant]
    config.structured.skip = SKIP[variant]
    config.structured.rounding = "floor"  # Li et al.: keep int((1 - ratio) * n) filters

    config.finetune.epochs = 40.0
    config.finetune.learning_rate = 0.001
    config.finetune.lr_schedule = "constant"

    if smoke:
        config.model.name = "resnet20"
        recipes.cifar_smoke(config, width=0.5)
    return config
