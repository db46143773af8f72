"""Default configuration: every field of a jaxprune run, declared once with a comment.

The experiment configs in the repository's ``configs/`` import this module (``from
jaxprune.configs import default``), override a few fields and add a docstring with the command and
the expected result; it lives in the package so that they load from any working directory. Any
field can be overridden from the command line, e.g. ``--config.pruning.sparsity=0.99``; unknown
fields are rejected.

A config of its own (``configs/default.py`` re-exports :func:`get_config`) trains the dense
LeNet-300-100 on the embedded MNIST:

    python -m jaxprune.main --config configs/default.py --workdir runs/default
"""

import ml_collections


def get_config(arg=None):
    """Returns the default config; ``arg`` is accepted for symmetry and must be None."""
    if arg:
        raise ValueError(f"the default config takes no argument, got {arg!r}")
    config = ml_collections.ConfigDict()

    # Seed of everything random: init, data order, augmentation, random scores/masks.
    config.seed = 0
    # Experiment flow: 'dense' (train only), 'prune_finetune' (train dense, prune one-shot,
    # fine-tune), 'prune_at_init' (prune the initial weights, train the sparse net), 'gradual'
    # (masks recomputed inside training on pruning.schedule: warm-up, pruning window, recovery),
    # 'iterative' (lottery ticket: rounds of train, prune, rewind; see pruning.iterative),
    # 'scratch_e' / 'scratch_b' (Liu et al.: train dense, prune, then train the pruned
    # architecture or mask from a fresh init for as many steps as the dense phase (E) or for
    # that times the dense/pruned FLOPs ratio, capped at scratch.budget_cap (B)).
    config.flow = "dense"
    # Start from another run's weights: 'path/to/workdir' (its final checkpoint) or
    # 'path/to/workdir:phase' (the checkpoint that ends that phase). Flows whose first phase
    # trains the dense net (prune_finetune, scratch_e, scratch_b) skip it and prune these
    # weights; the others start from them. '' = the seed's initial weights.
    config.init_from = ""

    config.model = ml_collections.ConfigDict()
    # Zoo name (jaxprune.models.model_names()), e.g. 'lenet300', 'resnet20', 'wrn28_10', or an
    # import path 'package.module:factory' of your own model: called as
    # factory(num_classes=..., **model.kwargs), it returns a Flax Linen module (or, if it takes
    # rngs=, an NNX module). It needs no `train` argument and no linear mode.
    config.model.name = "lenet300"
    # Width multiplier applied to every layer's channels/units (zoo models only).
    config.model.width = 1.0
    # Keyword arguments of a user factory (model.name = 'package.module:factory').
    config.model.kwargs = ml_collections.ConfigDict()

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
    # Also write every metrics record as TensorBoard scalars in workdir/tensorboard (tensorboardX,
    # no TensorFlow): `tensorboard --logdir runs/`.
    config.training.tensorboard = True
    # Draw the run's PNG figures (learning curve, per-layer and effective sparsity) in
    # workdir/plots at the end of the run; smoke configs switch them off.
    config.training.plots = True
    # Stop as diverged when a logged train loss exceeds this multiple of the phase's first step's
    # loss (besides NaN/inf, which always stop); the last good checkpoint is kept. 0 = off.
    config.training.divergence_factor = 1000.0
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
    # Regexes of prunable layer names ('Dense_0/kernel'); empty = the default rule: every leaf
    # named 'kernel' with ndim >= 2 (biases, embeddings and norm scales are not prunable).
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

    # Smart-ratio quota (Su et al. random / hybrid tickets; used when pruning.quota='smart_ratio').
    config.pruning.smart_ratio = ml_collections.ConfigDict()
    # Keep ratio of layer l of L ~ (L-l+1)^2 + (L-l+1) ('quadratic', the paper) or the ablations
    # 'linear' (L-l+1), 'cubic' ((L-l+1)^3 + ...), 'uniform' (1).
    config.pruning.smart_ratio.ratio = "quadratic"
    # Drop the 1/l^2 factor (the paper's rule for residual nets); None = True for resnet*/wrn*.
    config.pruning.smart_ratio.residual = ml_collections.FieldReference(None, field_type=bool)
    # Keep ratio of the last (Dense) layer.
    config.pruning.smart_ratio.last_keep = 0.3

    # Sanity checks of Su et al. (flows 'prune_at_init' and 'prune_finetune', unstructured).
    config.sanity = ml_collections.ConfigDict()
    # Data the mask is scored on: 'none' (the true data), 'random_labels', 'random_pixels' (each
    # image's pixels permuted, labels random), 'half_data' (half the score batch). Training
    # always uses the true data.
    config.sanity.mask_data = "none"
    # Permute each layer's mask at random after it is computed (same count per layer).
    config.sanity.shuffle_layerwise = False
    # Re-initialise the weights (a fresh draw) under the computed mask before training.
    config.sanity.reinit = False
    # Permute the surviving weight values within each layer (mask kept).
    config.sanity.shuffle_weights = False

    # Structured pruning (Liu et al. "Rethinking"): flows 'prune_finetune', 'scratch_e' and
    # 'scratch_b' remove whole channels and continue with a really narrower model.
    config.structured = ml_collections.ConfigDict()
    # 'none' (unstructured masks from config.pruning), 'l1_filter' (Li et al.: per layer, drop
    # the filters of smallest L1 norm) or 'slimming' (Liu et al. 2017: one global threshold on
    # |BatchNorm scale|; every layer keeps at least one channel).
    config.structured.method = "none"
    # Fraction of channels pruned: per layer (l1_filter) or over all prunable layers (slimming).
    config.structured.ratio = 0.5
    # Per-layer / per-stage overrides: ((regex, ratio), ...) on channel-group names such as
    # 'Conv_3' or 'BasicBlock_4/Conv_0'; the first regex that matches wins.
    config.structured.ratios = ()
    # Regexes of channel groups never pruned (Li et al.'s sensitive layers).
    config.structured.skip = ()
    # l1_filter kept count per layer of n channels at ratio r: 'floor' keeps int((1 - r) * n), as
    # Li et al.'s code (ResNet-56-A: 28 of 32, 57 of 64); 'round' keeps n - round(r * n) (29, 58).
    config.structured.rounding = "floor"
    # Network slimming: L1 penalty weight on the BatchNorm scales of the prunable channel groups
    # during the dense phase (1e-4 in Liu et al. 2017); 0 = off.
    config.structured.slimming_l1 = 0.0

    # Training from scratch (flows 'scratch_e' / 'scratch_b').
    config.scratch = ml_collections.ConfigDict()
    # Scratch-B: the dense phase's steps times min(budget_cap, dense FLOPs / pruned FLOPs).
    config.scratch.budget_cap = 2.0
    # Fresh sparse weights scaled by sqrt(fan_in / surviving fan_in) per unit (unstructured).
    config.scratch.scale_fan_in = True

    config.finetune = ml_collections.ConfigDict()
    # Length of the fine-tuning phase (flow='prune_finetune') in epochs; ignored when steps > 0.
    config.finetune.epochs = 10.0
    # Length of the fine-tuning phase in optimizer steps (0 = use epochs).
    config.finetune.steps = 0
    # Peak learning rate of fine-tuning (same optimizer; its state is reset after pruning).
    config.finetune.learning_rate = 0.01
    # Learning-rate schedule of fine-tuning ('constant', 'cosine', 'step').
    config.finetune.lr_schedule = "cosine"

    config.mesh = ml_collections.ConfigDict()
    # Devices of the data axis: 0 = all devices (of all processes) / mesh.model.
    config.mesh.data = 0
    # Devices each param, mask and optimizer-moment leaf is split over (FSDP, along the leaf's
    # largest dimension this divides); 1 = every device holds the whole state. Batches are
    # split over all data x model devices either way; results do not depend on it (masks bit
    # for bit, floats up to the order of the gradient all-reduce).
    config.mesh.model = 1

    config.debug = ml_collections.ConfigDict()
    # Stop the run (as if killed) once this global step is reached, without a final save
    # (0 = off). Used by the resume tests; rerunning the same command resumes.
    config.debug.stop_at_step = 0
    return config
