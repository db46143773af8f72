"""Default configuration: every field of a jaxprune run, declared once with a comment.

Experiment configs in this directory import this file, override a few fields and add a
docstring with the command and the expected result. Any field can be overridden from the
command line, e.g. ``--config.pruning.sparsity=0.99``; unknown fields are rejected.

A config of its own trains the dense LeNet-300-100 on the embedded MNIST:

    python -m jaxprune.main --config configs/default.py --workdir runs/default
"""

import ml_collections


def get_config(arg=None):
    """Returns the default config; ``arg`` is accepted for symmetry and must be None."""
    if arg:
        raise ValueError(f"configs/default.py takes no argument, got {arg!r}")
    config = ml_collections.ConfigDict()

    # Seed of everything random: init, data order, augmentation, random scores/masks.
    config.seed = 0
    # Experiment flow: 'dense' (train only), 'prune_finetune' (train dense, prune one-shot,
    # fine-tune), 'prune_at_init' (prune the initial weights, train the sparse net), 'gradual'
    # (masks recomputed inside training on pruning.schedule: warm-up, pruning window, recovery),
    # 'iterative' (lottery ticket: rounds of train, prune, rewind; see pruning.iterative).
    config.flow = "dense"

    config.model = ml_collections.ConfigDict()
    # Model registry name (jaxprune.models.model_names()), e.g. 'lenet300', 'resnet20', 'wrn28_10'.
    config.model.name = "lenet300"
    # Width multiplier applied to every layer's channels/units.
    config.model.width = 1.0

    config.dataset = ml_collections.ConfigDict()
    # Dataset name (jaxprune.data.dataset_names()): 'mnist' (embedded), 'synthetic', tfds names.
    config.dataset.name = "mnist"
    # Data root: prepared TFDS data (default ~/tensorflow_datasets) or the embedded-MNIST cache.
    config.dataset.data_dir = ml_collections.FieldReference(None, field_type=str)
    # Training augmentation: None = the dataset's standard choice (crop+flip on CIFAR), or a bool.
    config.dataset.augment = ml_collections.FieldReference(None, field_type=bool)
    # Synthetic data only: the dataset whose shape and class count it imitates.
    config.dataset.shape_like = "mnist"
    # Synthetic data only: training / test set sizes (0 = the generator's default).
    config.dataset.num_train = 0
    config.dataset.num_test = 0
    # Use only the first N test examples for evaluation (0 = the whole test split).
    config.dataset.eval_limit = 0

    config.training = ml_collections.ConfigDict()
    # Global batch size; must be divisible by the number of devices.
    config.training.batch_size = 128
    # Length of the (dense or sparse) training phase in epochs; ignored when steps > 0.
    config.training.epochs = 10.0
    # Length of the training phase in optimizer steps (0 = use epochs).
    config.training.steps = 0
    # Optimizer: 'sgd' (momentum, Nesterov), 'adam' (L2 weight decay), 'adamw' (decoupled decay).
    config.training.optimizer = "sgd"
    # Peak learning rate.
    config.training.learning_rate = 0.1
    # Learning-rate schedule: 'constant', 'cosine' (to 0), 'step' (x0.1 at 50% and 75%).
    config.training.lr_schedule = "cosine"
    # Linear warm-up from 0 to the peak learning rate over this many steps.
    config.training.warmup_steps = 0
    # SGD momentum (Nesterov); for Adam(W) this is b1.
    config.training.momentum = 0.9
    # Weight decay on kernels (ndim >= 2); pruned weights stay exactly zero regardless.
    config.training.weight_decay = 0.0
    # Log train metrics (metrics.jsonl, progress bar, NaN check) every this many steps.
    config.training.log_every = 100
    # Evaluate on the test split every this many steps (0 = only at the end of each phase).
    config.training.eval_every = 0
    # Save a checkpoint every this many steps (0 = only at the end of each phase).
    config.training.checkpoint_every = 1000
    # Number of checkpoints kept in workdir/checkpoints.
    config.training.keep_checkpoints = 2

    config.pruning = ml_collections.ConfigDict()
    # Score (jaxprune.scores.names()): 'magnitude', 'random', 'snip', 'grasp', 'synflow', ...
    config.pruning.score = "magnitude"
    # 'global' (one ranking over all prunable weights, optional MT) or 'layerwise' (quota).
    config.pruning.selection = "global"
    # Layerwise sparsity allocation (jaxprune.quotas.names()); used when selection='layerwise'.
    config.pruning.quota = "uniform"
    # Target sparsity: pruned fraction of the prunable weights, in [0, 1].
    config.pruning.sparsity = 0.9
    # What pruning.sparsity means for one-shot pruning: 'direct' (pruned fraction of the weights)
    # or 'effective' (Vysogorets & Kempe: also count kept weights on no input-output path; the
    # direct sparsity is searched so that the effective sparsity is <= pruning.sparsity).
    config.pruning.target = "direct"
    # Minimum threshold (MT): every layer keeps at least this fraction of ALL prunable weights
    # (Global MP + MT); 0 = off. Only with selection='global'.
    config.pruning.min_keep_fraction = 0.0
    # Regexes of prunable layer names ('Dense_0/kernel'); empty = every leaf with ndim >= 2.
    config.pruning.prunable = ()
    # Rounds of iterative SynFlow (Tanaka et al.: 100) when score='synflow' with global, direct
    # selection and no MT; 1 = a single round of scores ranked once (layer collapse at high s).
    config.pruning.synflow_rounds = 100
    # Number of training examples fed to data-dependent scores (snip, grasp, ...).
    config.pruning.score_batch_size = 256

    # Sparsity schedule of flow='gradual' (Zhu & Gupta; global steps, see DESIGN.md).
    config.pruning.schedule = ml_collections.ConfigDict()
    # 'polynomial' (s_i -> s_f over [begin_step, end_step]), 'one_shot' (final_sparsity once at
    # begin_step) or 'constant' (final_sparsity, re-pruned every `frequency` steps in the window).
    config.pruning.schedule.type = "polynomial"
    # Sparsity at begin_step (polynomial only) and at end_step and after.
    config.pruning.schedule.initial_sparsity = 0.0
    config.pruning.schedule.final_sparsity = 0.9
    # Pruning window: masks are updated at begin_step + k * frequency up to end_step.
    config.pruning.schedule.begin_step = 0
    config.pruning.schedule.end_step = 1000
    config.pruning.schedule.frequency = 100
    # Exponent of the polynomial decay (3 in the paper, 1 = linear).
    config.pruning.schedule.power = 3.0

    # Lottery-ticket rounds of flow='iterative' (Frankle & Carbin): round 0 trains the dense net;
    # each of the `rounds` later rounds prunes `rate` of the remaining prunable weights of the
    # trained net (cumulative sparsity 1 - (1 - rate)^r, scored by pruning.score/selection and
    # nested in the previous mask), rewinds the survivors and retrains with a fresh optimizer.
    config.pruning.iterative = ml_collections.ConfigDict()
    # Number of prune-rewind-retrain rounds after the dense round 0.
    config.pruning.iterative.rounds = 3
    # Fraction of the remaining prunable weights pruned in each round, in (0, 1).
    config.pruning.iterative.rate = 0.2
    # Rewind to the initial weights (0) or to the weights after this many steps of round 0.
    config.pruning.iterative.rewind_step = 0

    config.finetune = ml_collections.ConfigDict()
    # Length of the fine-tuning phase (flow='prune_finetune') in epochs; ignored when steps > 0.
    config.finetune.epochs = 10.0
    # Length of the fine-tuning phase in optimizer steps (0 = use epochs).
    config.finetune.steps = 0
    # Peak learning rate of fine-tuning (same optimizer; its state is reset after pruning).
    config.finetune.learning_rate = 0.01
    # Learning-rate schedule of fine-tuning ('constant', 'cosine', 'step').
    config.finetune.lr_schedule = "cosine"

    config.debug = ml_collections.ConfigDict()
    # Stop the run (as if killed) once this global step is reached, without a final save
    # (0 = off). Used by the resume tests; rerunning the same command resumes.
    config.debug.stop_at_step = 0
    return config
