"""Validation of a run config before anything is built.

Every check raises a ``ValueError`` whose message names the config field and the offending
value, e.g. ``pruning.sparsity must be in [0, 1], got 1.5``. Unknown *fields* are rejected
earlier by the locked ``ConfigDict`` (``--config.pruning.sparsty=...`` fails at flag parsing);
this module checks names against the registries and numbers against their ranges.
"""

import math
import re
from collections.abc import Collection

import ml_collections

STRUCTURED_METHODS = ("none", "l1_filter", "slimming")
STRUCTURED_ROUNDINGS = ("floor", "round")  # jaxprune.pruning.structured.ROUNDINGS
SMART_RATIOS = ("quadratic", "linear", "cubic", "uniform")
SELECTIONS = ("global", "layerwise")
TARGETS = ("direct", "effective")
OPTIMIZERS = ("sgd", "adam", "adamw")
LR_SCHEDULES = ("constant", "cosine", "step")


def _one_of(field: str, value, allowed: Collection[str]) -> None:
    if value not in allowed:
        raise ValueError(f"{field} must be one of {sorted(allowed)}, got {value!r}")


def _number(
    field: str,
    value,
    *,
    low: float | None = None,
    high: float | None = None,
    low_open: bool = False,
    high_open: bool = False,
    integer: bool = False,
) -> None:
    kind = "an integer" if integer else "a number"
    ok_type = isinstance(value, int) if integer else isinstance(value, int | float)
    if isinstance(value, bool) or not ok_type:
        raise ValueError(f"{field} must be {kind}, got {value!r}")
    if not math.isfinite(value):
        raise ValueError(f"{field} must be finite, got {value!r}")
    too_low = low is not None and (value <= low if low_open else value < low)
    too_high = high is not None and (value >= high if high_open else value > high)
    if too_low or too_high:
        left = "(" if low_open else "["
        right = ")" if high_open else "]"
        lo = "-inf" if low is None else f"{low:g}"
        hi = "inf" if high is None else f"{high:g}"
        raise ValueError(f"{field} must be in {left}{lo}, {hi}{right}, got {value!r}")


def phase_length(prefix: str, phase: ml_collections.ConfigDict) -> None:
    """Checks a phase block (``training`` / ``finetune``): length, learning rate, schedule."""
    _number(f"{prefix}.epochs", phase.epochs, low=0)
    _number(f"{prefix}.steps", phase.steps, low=0, integer=True)
    _number(f"{prefix}.learning_rate", phase.learning_rate, low=0, low_open=True)
    _one_of(f"{prefix}.lr_schedule", phase.lr_schedule, LR_SCHEDULES)
    if phase.steps == 0 and phase.epochs == 0:
        raise ValueError(f"{prefix}.epochs and {prefix}.steps are both 0: nothing to train")


def validate_config(config: ml_collections.ConfigDict) -> None:
    """Checks names and ranges of every field a run uses.

    Args:
      config: a run config shaped like ``configs/default.py``.

    Raises:
      ValueError: naming the first bad field and its value.
    """
    # Imported here so that importing jaxprune.training stays light and acyclic.
    import jaxprune as jp
    from jaxprune import data, import_path, models
    from jaxprune.training import flows

    _number("seed", config.seed, low=0, integer=True)
    flow = flows.get(config.flow)  # ValueError naming `flow` and the registered flows
    if import_path.is_import_path(config.model.name):
        import_path.load(config.model.name, "model.name")
    else:
        try:
            models.get_model(config.model.name, 10)
        except KeyError:
            raise ValueError(
                f"model.name must be one of {models.model_names()}, got {config.model.name!r} "
                "(zoo names also take resnet{6n+2} and wrn{6n+4}_{k}; your own model: an "
                "import path 'package.module:factory')"
            ) from None
    _number("model.width", config.model.width, low=0, low_open=True)
    if "kwargs" in config.model and not isinstance(
        config.model.kwargs, ml_collections.ConfigDict | dict
    ):
        raise ValueError(
            f"model.kwargs must be a dict of factory arguments, got {config.model.kwargs!r}"
        )
    if "mesh" in config:
        _number("mesh.data", config.mesh.data, low=0, integer=True)
        _number("mesh.model", config.mesh.model, low=1, integer=True)
    _one_of("dataset.name", config.dataset.name, data.dataset_names())
    if config.dataset.name == "synthetic":
        from jaxprune.data import synthetic

        _one_of("dataset.shape_like", config.dataset.shape_like, synthetic.SHAPES)
    _number("dataset.num_train", config.dataset.num_train, low=0, integer=True)
    _number("dataset.num_test", config.dataset.num_test, low=0, integer=True)
    _number("dataset.eval_limit", config.dataset.eval_limit, low=0, integer=True)

    training = config.training
    _number("training.batch_size", training.batch_size, low=1, integer=True)
    phase_length("training", training)
    _one_of("training.optimizer", training.optimizer, OPTIMIZERS)
    _number("training.warmup_steps", training.warmup_steps, low=0, integer=True)
    _number("training.momentum", training.momentum, low=0, high=1, high_open=True)
    _number("training.weight_decay", training.weight_decay, low=0)
    _number("training.log_every", training.log_every, low=1, integer=True)
    _number("training.divergence_factor", training.get("divergence_factor", 0.0), low=0)
    for field in ("tensorboard", "plots"):
        if not isinstance(training.get(field, True), bool):
            raise ValueError(f"training.{field} must be a bool, got {training.get(field)!r}")
    _number("training.eval_every", training.eval_every, low=0, integer=True)
    _number("training.checkpoint_every", training.checkpoint_every, low=0, integer=True)
    _number("training.keep_checkpoints", training.keep_checkpoints, low=1, integer=True)

    pruning = config.pruning
    if import_path.is_import_path(pruning.score):
        jp.scores.get(pruning.score)  # ValueError naming the import path
    else:
        _one_of("pruning.score", pruning.score, jp.scores.names())
    _one_of("pruning.selection", pruning.selection, SELECTIONS)
    _one_of("pruning.quota", pruning.quota, jp.quotas.names())
    if pruning.quota == "custom":
        raise ValueError(
            "pruning.quota 'custom' takes a dict of per-layer sparsities and is only available "
            "from Python (jp.quotas.get('custom')); choose one of "
            f"{sorted(set(jp.quotas.names()) - {'custom'})}"
        )
    _number("pruning.sparsity", pruning.sparsity, low=0, high=1)
    _one_of("pruning.target", pruning.target, TARGETS)
    _number("pruning.min_keep_fraction", pruning.min_keep_fraction, low=0, high=1, high_open=True)
    if pruning.min_keep_fraction > 0 and pruning.selection != "global":
        raise ValueError(
            "pruning.min_keep_fraction (MT) needs pruning.selection='global', "
            f"got selection={pruning.selection!r}"
        )
    if isinstance(pruning.prunable, str) or not all(isinstance(p, str) for p in pruning.prunable):
        raise ValueError(
            f"pruning.prunable must be a tuple of regex strings, got {pruning.prunable!r}"
        )
    for pattern in pruning.prunable:
        try:
            re.compile(pattern)
        except re.error as e:
            raise ValueError(f"pruning.prunable has an invalid regex {pattern!r}: {e}") from e
    _number("pruning.score_batch_size", pruning.score_batch_size, low=1, integer=True)
    _number("pruning.synflow_rounds", pruning.synflow_rounds, low=1, integer=True)

    _one_of("pruning.smart_ratio.ratio", pruning.smart_ratio.ratio, SMART_RATIOS)
    _number("pruning.smart_ratio.last_keep", pruning.smart_ratio.last_keep, low=0, high=1)
    _sanity(config)
    _structured(config)
    _number("scratch.budget_cap", config.scratch.budget_cap, low=1)
    _number("debug.stop_at_step", config.debug.stop_at_step, low=0, integer=True)
    init_from = config.get("init_from", "")
    if init_from is not None and not isinstance(init_from, str):
        raise ValueError(f"init_from must be a run directory path (str), got {init_from!r}")
    flow.check(config)


def check_schedule(block: ml_collections.ConfigDict) -> None:
    """Checks ``pruning.schedule`` (flow='gradual'): names, ranges, cross-field order."""
    from jaxprune.training import prune

    _one_of("pruning.schedule.type", block.type, prune.SCHEDULE_TYPES)
    _number("pruning.schedule.initial_sparsity", block.initial_sparsity, low=0, high=1)
    _number("pruning.schedule.final_sparsity", block.final_sparsity, low=0, high=1)
    for field in ("begin_step", "end_step", "frequency"):
        _number(f"pruning.schedule.{field}", block[field], low=0, integer=True)
    _number("pruning.schedule.power", block.power, low=0, low_open=True)
    prune.make_schedule(block)  # cross-field checks (end_step >= begin_step, frequency >= 1)


def check_iterative(block: ml_collections.ConfigDict, training: ml_collections.ConfigDict) -> None:
    """Checks ``pruning.iterative`` (flow='iterative')."""
    _number("pruning.iterative.rounds", block.rounds, low=1, integer=True)
    _number("pruning.iterative.rate", block.rate, low=0, high=1, low_open=True, high_open=True)
    _number("pruning.iterative.rewind_step", block.rewind_step, low=0, integer=True)
    if training.steps > 0 and block.rewind_step >= training.steps:
        raise ValueError(
            "pruning.iterative.rewind_step must be < training.steps "
            f"({training.steps}, the length of round 0), got {block.rewind_step}"
        )


def _sanity(config: ml_collections.ConfigDict) -> None:
    """Checks ``sanity.*`` (Su et al.): names, types and the flows they apply to."""
    from jaxprune.data import corrupt
    from jaxprune.training import flows

    block = config.sanity
    _one_of("sanity.mask_data", block.mask_data, corrupt.CORRUPTIONS)
    switches = ("shuffle_layerwise", "reinit", "shuffle_weights")
    for field in switches:
        if not isinstance(block[field], bool):
            raise ValueError(f"sanity.{field} must be a bool, got {block[field]!r}")
    active = [f"sanity.{f}" for f in switches if block[f]]
    if block.mask_data != "none":
        active.append(f"sanity.mask_data={block.mask_data!r}")
    sanity_flows = [n for n in flows.names() if flows.get(n).supports_sanity]
    if active and config.flow not in sanity_flows:
        raise ValueError(
            f"{', '.join(active)} applies to one-shot unstructured pruning (flow one of "
            f"{sanity_flows}), got flow={config.flow!r}"
        )
    if active and config.structured.method != "none":
        raise ValueError(
            f"{', '.join(active)} applies to unstructured masks, got "
            f"structured.method={config.structured.method!r}"
        )


def _structured(config: ml_collections.ConfigDict) -> None:
    """Checks ``structured.*`` (Liu et al.): method, ratios, model and flow."""
    from jaxprune import import_path
    from jaxprune.training import flows

    block = config.structured
    _one_of("structured.method", block.method, STRUCTURED_METHODS)
    _number("structured.ratio", block.ratio, low=0, high=1)
    _one_of("structured.rounding", block.rounding, STRUCTURED_ROUNDINGS)
    _number("structured.slimming_l1", block.slimming_l1, low=0)
    pairs = block.ratios
    if isinstance(pairs, str) or not all(
        isinstance(p, tuple | list) and len(p) == 2 and isinstance(p[0], str) for p in pairs
    ):
        raise ValueError(
            f"structured.ratios must be a tuple of (regex, ratio) pairs, got {pairs!r}"
        )
    for pattern, ratio in pairs:
        _regex("structured.ratios", pattern)
        _number(f"structured.ratios[{pattern!r}]", ratio, low=0, high=1)
    if isinstance(block.skip, str) or not all(isinstance(p, str) for p in block.skip):
        raise ValueError(f"structured.skip must be a tuple of regex strings, got {block.skip!r}")
    for pattern in block.skip:
        _regex("structured.skip", pattern)
    if block.method == "none":
        if block.slimming_l1 > 0:
            raise ValueError(
                "structured.slimming_l1 is the network-slimming penalty and needs "
                f"structured.method='slimming', got method={block.method!r}"
            )
        return
    structured_flows = [n for n in flows.names() if flows.get(n).supports_structured]
    if config.flow not in structured_flows:
        raise ValueError(
            f"structured.method={block.method!r} needs flow one of {structured_flows}, "
            f"got flow={config.flow!r}"
        )
    if import_path.is_import_path(config.model.name):
        raise ValueError(
            f"structured.method={block.method!r} needs a zoo model with channel groups, got "
            f"model.name={config.model.name!r}"
        )
    name = config.model.name.lower()
    families = ("lenet", "vgg", "resnet", "mobilenet", "wrn", "fastgrnn")
    if block.method != "l1_filter":  # slimming needs BatchNorm scales
        families = families[1:-1]
    # The channel topology (models.channels) knows LeNet, VGG, the CIFAR and ImageNet ResNets,
    # MobileNet-V1, WRN and FastGRNN (not user models).
    if not name.startswith(families):
        what = "channel groups" if block.method == "l1_filter" else "BatchNorm scales"
        raise ValueError(
            f"structured.method={block.method!r} needs a model with {what} "
            f"({', '.join(f + '*' for f in families)}), got model.name={config.model.name!r}"
        )


def _regex(field: str, pattern: str) -> None:
    try:
        re.compile(pattern)
    except re.error as e:
        raise ValueError(f"{field} has an invalid regex {pattern!r}: {e}") from e
