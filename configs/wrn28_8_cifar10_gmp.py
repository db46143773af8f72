"""WRN-28-8 on CIFAR-10: train dense, prune to 90% with Global MP, fine-tune (Gupta et al.).

Gupta et al. (2022), "Is Complexity Required for Neural Network Pruning? A Case Study on Global
Magnitude Pruning" (arXiv:2209.14624), WRN-28-8 setting. Needs CIFAR-10 prepared for
tensorflow-datasets (see README, "Datasets"), then on a GPU/TPU:

    python -m jaxprune.main --config configs/wrn28_8_cifar10_gmp.py \
        --workdir runs/wrn28_8_cifar10_gmp --config.dataset.data_dir=~/tensorflow_datasets

Model: WRN-28-8 (Zagoruyko & Komodakis; 23,354,842 parameters, 23,340,464 prunable kernels).
Dense phase (the WRN recipe, with cosine instead of the x0.2 steps at 60/120/160): 200 epochs at
batch 128 (390 steps per epoch), SGD with Nesterov momentum 0.9 at 0.1, cosine, weight decay
5e-4. Then one-shot Global MP (no MT: a residual net does not collapse at this sparsity) to 90%
sparsity (2,334,046 kernels kept) and 100 epochs of fine-tuning from 0.01, cosine. The 90% target
and the fine-tuning length and rate are our choices, not values verified from the paper; the
authors' script (GPMT-Authors/Global-Pruning-With-Minimum-Threshold, ``GP + MT/prune_GPMT.py``)
builds WRN-28-8 with dropout 0.3, which this zoo model only gets through its own ``dropout_rate``
field (not set here).

Expected: published, not measured here. The authors' script starts from a dense WRN-28-8 of
96.04% CIFAR-10 test accuracy (its ``pre_acc`` for ``wrn-28-8``); Gupta et al.'s pruned WRN-28-8
accuracies could not be verified from the sources available to us and are not quoted.

`--config configs/wrn28_8_cifar10_gmp.py:smoke` runs WRN-28-8 (full depth) at width 1/16 for a
few steps on a small synthetic CIFAR-shaped set (tests).
"""

from jaxprune.configs import default, recipes


def get_config(arg=None):
    _, smoke = recipes.parse_arg(arg)
    config = default.get_config()
    config.flow = "prune_finetune"
    config.model.name = "wrn28_8"
    config.dataset.name = "cifar10"

    training = config.training
    training.batch_size = 128
    training.epochs = 200.0
    training.optimizer = "sgd"
    training.learning_rate = 0.1
    training.lr_schedule = "cosine"
    training.momentum = 0.9
    training.weight_decay = 5e-4
    training.log_every = 100
    training.eval_every = 3900  # every 10 epochs (390 steps per epoch)
    training.checkpoint_every = 3900

    config.pruning.score = "magnitude"
    config.pruning.selection = "global"
    config.pruning.sparsity = 0.9

    config.finetune.epochs = 100.0
    config.finetune.learning_rate = 0.01
    config.finetune.lr_schedule = "cosine"

    if smoke:
        recipes.cifar_smoke(config, width=0.0625)
        config.dataset.num_train = 64
        config.dataset.num_test = 16
        config.training.batch_size = 8
        config.training.steps = 3
        config.finetune.steps = 2
        config.training.log_every = 1
        config.training.checkpoint_every = 0
        config.pruning.score_batch_size = 8
    return config
