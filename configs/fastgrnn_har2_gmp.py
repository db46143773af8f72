"""FastGRNN on HAR-2: train dense, prune with Global MP + MT, fine-tune (Gupta et al.'s RNN case).

    python -m jaxprune.main --config configs/fastgrnn_har2_gmp.py --workdir runs/fastgrnn_har2 \
        --config.dataset.data_dir=/path/to/folder/with/UCI_HAR

`dataset.data_dir` is the folder that holds the unzipped `UCI HAR Dataset/` (or that folder
itself; default `~/.cache/jaxprune/har`); nothing is downloaded (`jaxprune/data/har.py` says where
to get the archive). HAR-2 merges the six UCI activities into {Sitting, Laying, Walking_Upstairs}
vs {Standing, Walking, Walking_Downstairs} (Kusupati et al. 2018, Appendix B): 7,352 / 2,947
windows of 128 steps x 9 inertial signals, standardised per (step, signal) as EdgeML does.

Model: full-rank FastGRNN with 80 hidden units (the paper's HAR-2 size), sigmoid gate, tanh
update; 7,444 parameters, 7,280 of them prunable (W 9x80, U 80x80, classifier 80x2). Recipe
(ours, after the paper's: learning rate 1e-2, SGD with momentum, 300 epochs with a tenfold
decay): 300 dense epochs of SGD + momentum 0.9 at 1e-2 (step schedule), one-shot Global MP to
90% sparsity (728 weights kept) with MT (every layer keeps at least 0.5% of all prunable
weights, i.e. 36: this protects the 160-weight classifier), 100 fine-tuning epochs at 1e-3.
Batch 128 (the paper: 100) so that it divides over 8 devices. The 90% target and the MT fraction
are our choices, not values taken from Gupta et al.

Expected: not measured here (this machine has no HAR data). Published, not measured here:
Kusupati et al. (2018), Table 3, HAR-2 test accuracy 95.38% for the dense full-rank model
(FastGRNN-LSQ, 29 KB) and 95.59% for FastGRNN (low rank, sparse and 8-bit quantised, 3 KB);
Table 8: 96.37% (FastGRNN-Q) and 96.81% (FastGRNN-SQ). Gupta et al.'s HAR-2 numbers are not
quoted (not verified).

`--config configs/fastgrnn_har2_gmp.py:smoke` runs a few seconds on synthetic HAR-shaped data
(`har2_synthetic`, no download; tests).
"""

from jaxprune.configs import default, recipes


def get_config(arg=None):
    _, smoke = recipes.parse_arg(arg)
    config = default.get_config()
    config.flow = "prune_finetune"
    config.model.name = "fastgrnn"
    config.dataset.name = "har2"

    config.training.batch_size = 128
    config.training.epochs = 300.0
    config.training.optimizer = "sgd"
    config.training.learning_rate = 1e-2
    config.training.lr_schedule = "step"
    config.training.momentum = 0.9
    config.training.log_every = 100
    config.training.eval_every = 2870  # every 50 epochs (57 steps per epoch)
    config.training.checkpoint_every = 2870

    config.pruning.score = "magnitude"
    config.pruning.selection = "global"
    config.pruning.sparsity = 0.9
    config.pruning.min_keep_fraction = 0.005

    config.finetune.epochs = 100.0
    config.finetune.learning_rate = 1e-3
    config.finetune.lr_schedule = "cosine"

    if smoke:
        config.training.plots = False
        config.dataset.name = "har2_synthetic"
        config.training.batch_size = 32
        config.training.steps = 16
        config.finetune.steps = 8
        config.training.learning_rate = 0.05
        config.training.log_every = 8
        config.training.eval_every = 0
        config.training.checkpoint_every = 8
    return config
