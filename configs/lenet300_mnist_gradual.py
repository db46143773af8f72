"""LeNet-300-100 on MNIST: gradual magnitude pruning to 98% inside training (Zhu & Gupta).

    python -m jaxprune.main --config configs/lenet300_mnist_gradual.py \
        --workdir runs/lenet300_mnist_gradual

One run of 20 epochs (9,360 steps, Adam, cosine): dense warm-up for 1,000 steps, then the masks
are recomputed from the current weights every 250 steps up to step 6,000 on the cubic schedule
0% -> 98% (Global MP + MT, as in ``lenet300_mnist_gmp.py``, so the two can be compared at the
same 5,324 kept weights), then 3,360 steps of recovery at 98%. Every mask update writes the
target and the achieved sparsity to metrics.jsonl.

Expected (measured on a shared 2-core CPU, about 74 s): exactly 98% sparsity at the end (5,324 of
266,200 kernel weights kept; Dense_0 98.73%, Dense_1 93.96%, Dense_2 46.80%), every update's
achieved sparsity equal to its target up to the rounding of n_keep; test accuracy 97.40% after the
dense warm-up (step 936), 97.26% at the end of the window (step 5,616), 97.86% at the end, vs
97.71% for one-shot Global MP + MT at the same target after 30 epochs in total.

`--config configs/lenet300_mnist_gradual.py:smoke` shrinks it to a few seconds (tests).
"""

from jaxprune.configs import default


def get_config(arg=None):
    config = default.get_config()
    config.flow = "gradual"
    config.model.name = "lenet300"
    config.dataset.name = "mnist"

    config.training.batch_size = 128
    config.training.epochs = 20.0
    config.training.optimizer = "adam"
    config.training.learning_rate = 1e-3
    config.training.lr_schedule = "cosine"
    config.training.momentum = 0.9
    config.training.log_every = 100
    config.training.eval_every = 936  # every 2 epochs (468 steps per epoch)
    config.training.checkpoint_every = 1000

    config.pruning.score = "magnitude"
    config.pruning.selection = "global"
    config.pruning.sparsity = 0.98  # unused by flow='gradual'; kept equal to the final target
    config.pruning.min_keep_fraction = 0.002

    config.pruning.schedule.type = "polynomial"
    config.pruning.schedule.initial_sparsity = 0.0
    config.pruning.schedule.final_sparsity = 0.98
    config.pruning.schedule.begin_step = 1000
    config.pruning.schedule.end_step = 6000
    config.pruning.schedule.frequency = 250
    config.pruning.schedule.power = 3.0

    if arg == "smoke":
        config.training.plots = False
        config.training.steps = 60
        config.training.log_every = 10
        config.training.eval_every = 0
        config.training.checkpoint_every = 20
        config.dataset.eval_limit = 1024
        config.pruning.schedule.begin_step = 10
        config.pruning.schedule.end_step = 40
        config.pruning.schedule.frequency = 10
    elif arg:
        raise ValueError(f"unknown config argument {arg!r}; use 'smoke' or nothing")
    return config
