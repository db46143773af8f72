"""Scoring functions and their registry.

A score maps a params pytree to a pytree of the same structure and shapes; larger means more
important. Every scorer is called as ``fn(params, **ctx)`` and must accept (and may ignore) the
context keywords ``key``, ``batch``, ``apply_fn``, ``prunable`` and any others, so that training
code can call any registered score the same way. ``prunable`` (the library's ``prunable=``
argument, see ``jaxprune.pruning.tree``) matters only to scores whose value on one leaf depends on
which other leaves are being pruned (GraSP's Hessian-gradient product).

A notebook adds a score in three lines (re-running or editing the cell re-registers it; a
different function under a taken name needs ``overwrite=True``, see ``register``)::

    @jp.scores.register("my_score")
    def my_score(params, **ctx):
        return jax.tree.map(lambda w: w**2, params)

``get`` also takes an import path ``package.module:function`` (how a config names a score kept
in the user's own module). ``call`` runs a score with a context, passing only the keywords the
function declares (all of them when it takes ``**ctx``); the training engine's context holds
``key``, ``batch``, ``apply_fn``, ``prunable``, ``init_params`` (the run's initial weights) and
``step`` (the global step), so movement-style scores run from a config::

    def movement(params, *, init_params, **ctx):  # |w| - |w0|
        return jax.tree.map(lambda w, w0: jnp.abs(w) - jnp.abs(w0), params, init_params)
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

from jaxprune import import_path
from jaxprune.pruning.select import check_sparsity, global_mask
from jaxprune.pruning.tree import Prunable, PyTree, prunable_flags

ScoreFn = Callable[..., PyTree]
_REGISTRY: dict[str, ScoreFn] = {}
_BUILTINS: frozenset[str] = frozenset()  # set at the end of this module


def register(name: str, *, overwrite: bool = False) -> Callable[[ScoreFn], ScoreFn]:
    """Decorator that registers a scoring function under ``name``.

    A taken name is refused unless ``overwrite=True`` (catches two scores sharing a name), except
    for a re-registration of *the same function*, which is allowed silently and replaces the
    entry (re-running a notebook cell, ``importlib.reload`` of a module). The same function
    means either

    * the very object already registered, or
    * a redefinition of it: a function with the same ``__module__`` and ``__qualname__``
      (re-running a cell creates a new object; in a notebook both are ``'__main__'`` and
      ``'my_score'``), defined at module or class level (a ``<locals>`` qualname is made by a
      factory or inside a function, where two calls give two different closures: refused; so is
      a ``lambda``, since two lambdas of one module share the qualname ``<lambda>``), and the
      registered one is not a built-in. The body may differ: editing a score and re-running
      its cell is the point.

    Built-in scores (``magnitude``, ``random``, ``snip``, ``synflow``, ``grasp``) are replaced
    only with ``overwrite=True``, never silently.

    Args:
      name: registry name, e.g. ``"magnitude"``.
      overwrite: allow replacing a different function registered under ``name``.

    Returns:
      The decorator; it returns the function unchanged.

    Raises:
      ValueError: if ``name`` is taken by a different function (or a built-in) and
        ``overwrite`` is false; the message names the score and ``overwrite=True``.
    """

    def decorator(fn: ScoreFn) -> ScoreFn:
        old = _REGISTRY.get(name)
        if old is not None and not overwrite and not _same_function(name, old, fn):
            what = "a built-in score" if name in _BUILTINS else f"score {_describe(old)}"
            raise ValueError(
                f"score {name!r} is already registered ({what}); to replace it with "
                f"{_describe(fn)}, pass overwrite=True: jp.scores.register({name!r}, "
                "overwrite=True)"
            )
        _REGISTRY[name] = fn
        return fn

    return decorator


def _describe(fn: ScoreFn) -> str:
    module = getattr(fn, "__module__", None)
    qualname = getattr(fn, "__qualname__", None) or repr(fn)
    return f"{module}.{qualname}" if module else qualname


def _same_function(name: str, old: ScoreFn, new: ScoreFn) -> bool:
    """Whether ``new`` is ``old`` or a redefinition of it (see ``register``)."""
    if old is new:
        return True
    if name in _BUILTINS:
        return False
    qualname = getattr(new, "__qualname__", None)
    module = getattr(new, "__module__", None)
    return (
        isinstance(qualname, str)
        and "<locals>" not in qualname
        and "<lambda>" not in qualname
        and module is not None
        and qualname == getattr(old, "__qualname__", None)
        and module == getattr(old, "__module__", None)
    )


def get(name: str) -> ScoreFn:
    """Returns the registered score ``name``, or the function at import path ``name``.

    Args:
      name: a registered name (``names()``) or ``package.module:function``.

    Raises:
      KeyError: naming the unknown score and listing the known ones.
      ValueError: for an import path that cannot be imported or is not callable.
    """
    if import_path.is_import_path(name):
        return import_path.load(name, "score")
    if name not in _REGISTRY:
        raise KeyError(f"unknown score {name!r}; known scores: {names()}")
    return _REGISTRY[name]


def call(fn: ScoreFn, params: PyTree, **context: Any) -> PyTree:
    """Calls score ``fn`` on ``params`` with the keywords of ``context`` it accepts.

    A function with ``**kwargs`` gets the whole context; otherwise only the keywords its
    signature names. A required keyword the context lacks is an error naming it.
    """
    try:
        signature = inspect.signature(fn)
    except (TypeError, ValueError):  # builtins / C callables: pass everything
        return fn(params, **context)
    parameters = list(signature.parameters.values())
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters):
        return fn(params, **context)
    accepted = {
        p.name
        for p in parameters[1:]
        if p.kind in (inspect.Parameter.KEYWORD_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    }
    missing = [
        p.name
        for p in parameters[1:]
        if p.name in accepted and p.default is inspect.Parameter.empty and p.name not in context
    ]
    if missing:
        raise TypeError(
            f"score {getattr(fn, '__name__', fn)!r} needs {missing}, which the context "
            f"({sorted(context)}) does not provide"
        )
    return fn(params, **{k: v for k, v in context.items() if k in accepted})


def names() -> list[str]:
    """Registered score names, sorted."""
    return sorted(_REGISTRY)


@register("magnitude")
def magnitude(params: PyTree, **ctx) -> PyTree:
    """``|w|`` for every leaf (Global MP ranks these)."""
    del ctx
    return _abs_tree(params)


@jax.jit
def _abs_tree(params: PyTree) -> PyTree:
    """``|w|`` of every leaf in one program (eager ``jnp.abs`` compiles one per leaf shape)."""
    return jax.tree.map(jnp.abs, params)


@register("random")
def random(params: PyTree, *, key: jax.Array | None = None, **ctx) -> PyTree:
    """Uniform ``[0, 1)`` scores, one independent draw per leaf (``fold_in(key, leaf_index)``).

    Raises:
      ValueError: if no ``key`` is given.
    """
    del ctx
    if key is None:
        raise ValueError("score 'random' needs key=<a jax PRNG key>")
    leaves, treedef = jax.tree.flatten(params)
    draws = [
        jax.random.uniform(jax.random.fold_in(key, i), jnp.shape(leaf))
        for i, leaf in enumerate(leaves)
    ]
    return jax.tree.unflatten(treedef, draws)


def _cross_entropy(logits: jax.Array, labels: jax.Array) -> jax.Array:
    """Mean cross-entropy; ``labels`` are class indices or (one-hot / soft) distributions.

    Computed in at least float32; float64 logits (under ``jax.enable_x64``) stay float64, which
    second-order scores (GraSP) need.
    """
    dtype = jnp.promote_types(logits.dtype, jnp.float32)
    log_probs = jax.nn.log_softmax(logits.astype(dtype), axis=-1)
    if labels.ndim == logits.ndim:
        return -jnp.mean(jnp.sum(labels.astype(dtype) * log_probs, axis=-1))
    picked = jnp.take_along_axis(log_probs, labels.astype(jnp.int32)[..., None], axis=-1)
    return -jnp.mean(picked)


def _check_data_inputs(name: str, batch: dict | None, apply_fn: Callable | None) -> None:
    """ValueError naming score ``name`` unless ``apply_fn`` and an image/label batch are given."""
    if apply_fn is None:
        raise ValueError(f"score {name!r} needs apply_fn=<(params, images) -> logits>")
    if batch is None or "image" not in batch or "label" not in batch:
        got = None if batch is None else sorted(batch)
        raise ValueError(f"score {name!r} needs batch={{'image': ..., 'label': ...}}, got {got}")


def _masked(params: PyTree, mask: PyTree | None) -> PyTree:
    if mask is None:
        return params
    return jax.tree.map(lambda w, m: jnp.where(m, w, jnp.zeros_like(w)), params, mask)


@register("snip")
def snip(
    params: PyTree,
    *,
    batch: dict[str, jax.Array] | None = None,
    apply_fn: Callable[[PyTree, jax.Array], jax.Array] | None = None,
    mask: PyTree | None = None,
    **ctx,
) -> PyTree:
    """SNIP connection sensitivity (Lee et al. 2019): ``|g * w|`` on one batch.

    ``g`` is the gradient of the mean cross-entropy of ``apply_fn(params, batch["image"])``
    against ``batch["label"]`` (class indices, or one-hot rows). With ``mask`` the masked params
    are scored, so pruned weights score 0.

    Raises:
      ValueError: if ``batch`` (with ``"image"`` and ``"label"``) or ``apply_fn`` is missing.
    """
    del ctx
    _check_data_inputs("snip", batch, apply_fn)
    weights = _masked(params, mask)

    def loss(p):
        return _cross_entropy(apply_fn(p, batch["image"]), jnp.asarray(batch["label"]))

    grads = jax.jit(jax.grad(loss))(weights)
    return jax.tree.map(lambda g, w: jnp.abs(g * w), grads, weights)


def _synflow_input(sample_input: jax.Array | None, batch: dict | None, dtype: Any) -> jax.Array:
    if sample_input is None and batch is not None and "image" in batch:
        sample_input = batch["image"]
    if sample_input is None:
        raise ValueError("score 'synflow' needs sample_input=<an input batch> (or batch['image'])")
    return jnp.ones((1, *jnp.shape(sample_input)[1:]), dtype)


def _synflow_raw(params: PyTree, mask: PyTree | None, apply_fn, x: jax.Array) -> PyTree:
    weights = jax.tree.map(lambda w: jnp.abs(jnp.asarray(w, x.dtype)), _masked(params, mask))

    def total(p):
        return sum(jnp.sum(out.astype(x.dtype)) for out in jax.tree.leaves(apply_fn(p, x)))

    grads = jax.grad(total)(weights)
    return jax.tree.map(lambda g, w: g * w, grads, weights)


def _normalised(raw: PyTree) -> PyTree:
    """Divides by the global maximum (ranking unchanged) and casts to float32.

    Raises:
      ValueError: if the scores overflowed (inf or NaN).
    """
    leaves = [leaf for leaf in jax.tree.leaves(raw) if jnp.size(leaf)]
    top = jnp.max(jnp.stack([jnp.max(leaf) for leaf in leaves]))
    if not bool(jnp.isfinite(top)):
        raise ValueError(
            f"synflow scores overflowed (max {top}); evaluate apply_fn in float64 "
            "(e.g. model.clone(linear=True, dtype=jnp.float64)) or in a shallower network"
        )
    scale = jnp.where(top > 0, top, 1)
    return jax.tree.map(lambda s: (s / scale).astype(jnp.float32), raw)


@register("synflow")
def synflow(
    params: PyTree,
    *,
    apply_fn: Callable[[PyTree, jax.Array], Any] | None = None,
    sample_input: jax.Array | None = None,
    batch: dict[str, jax.Array] | None = None,
    mask: PyTree | None = None,
    **ctx,
) -> PyTree:
    """One round of SynFlow (Tanaka et al. 2020): ``|dR/dw * w|``, data-free.

    ``R = sum(apply_fn(|params|, ones))`` with one all-ones input shaped like ``sample_input``
    (or ``batch["image"]``) and every parameter replaced by its absolute value (pruned ones by
    0). ``apply_fn`` should run the model in its linear mode (``model.clone(linear=True)``). The
    pass runs under ``jax.enable_x64`` with float64 inputs and weights, so a model that computes in
    its inputs' dtype (Flax with ``dtype=None``, or ``dtype=jnp.float64``) does not overflow in deep
    nets; scores are then divided by their global maximum (one constant: global ranking is
    unchanged) and returned as float32. The full method prunes iteratively: see
    :func:`synflow_mask`.

    Raises:
      ValueError: if ``apply_fn`` or the input is missing, or the scores overflow.
    """
    del ctx
    if apply_fn is None:
        raise ValueError("score 'synflow' needs apply_fn=<(params, x) -> output>")
    with jax.enable_x64(True):
        x = _synflow_input(sample_input, batch, jnp.float64)
        raw = jax.jit(lambda p, m: _synflow_raw(p, m, apply_fn, x))(params, mask)
        return _normalised(raw)


def synflow_mask(
    params: PyTree,
    sparsity: float,
    *,
    apply_fn: Callable[[PyTree, jax.Array], Any],
    sample_input: jax.Array,
    rounds: int = 100,
    prunable: Any = None,
) -> PyTree:
    """Iterative SynFlow pruning to ``sparsity`` (Tanaka et al. 2020, Algorithm 1).

    Round ``k = 1..rounds`` scores the currently masked params with :func:`synflow` and keeps
    the global top ``(1 - sparsity) ** (k / rounds)`` fraction (exponential schedule) with
    ``jp.global_mask``. Already pruned weights score below every kept one, so masks are nested.

    Args:
      params: the params pytree (at initialisation).
      sparsity: final pruned fraction over the prunable leaves.
      apply_fn: ``apply_fn(params, x)`` in linear mode (see :func:`synflow`).
      sample_input: an input batch (its shape without the batch axis is used).
      rounds: number of pruning rounds (100 in the paper).
      prunable: which leaves are prunable.

    Returns:
      A bool mask pytree like ``params`` with exactly ``round((1 - sparsity) * N)`` kept.

    Raises:
      ValueError: if ``rounds < 1`` or ``sparsity`` is not in ``[0, 1]``.
    """
    check_sparsity(sparsity)
    if isinstance(rounds, bool) or not isinstance(rounds, int) or rounds < 1:
        raise ValueError(f"rounds must be a positive int, got {rounds!r}")
    mask = jax.tree.map(lambda w: jnp.ones(jnp.shape(w), bool), params)
    with jax.enable_x64(True):
        x = _synflow_input(sample_input, None, jnp.float64)
    raw_fn = jax.jit(lambda p, m: _synflow_raw(p, m, apply_fn, x))
    for k in range(1, rounds + 1):
        with jax.enable_x64(True):
            scores = _normalised(raw_fn(params, mask))
        scores = jax.tree.map(lambda s, m: jnp.where(m, s, -1.0), scores, mask)
        step_sparsity = sparsity if k == rounds else 1.0 - (1.0 - sparsity) ** (k / rounds)
        mask = global_mask(scores, step_sparsity, prunable=prunable)
    return mask


@register("grasp")
def grasp(
    params: PyTree,
    *,
    batch: dict[str, jax.Array] | None = None,
    apply_fn: Callable[[PyTree, jax.Array], jax.Array] | None = None,
    mask: PyTree | None = None,
    temperature: float = 200.0,
    prunable: Prunable = None,
    **ctx,
) -> PyTree:
    """GraSP (Wang et al. 2020, gradient signal preservation), sign-flipped so higher = keep.

    Let ``theta`` be the prunable leaves (by default the conv / dense kernels) and ``L(theta)``
    the mean cross-entropy of ``apply_fn(params, batch["image"]) / temperature`` against
    ``batch["label"]`` (class indices or one-hot rows) with every other leaf (biases, norm scales,
    embeddings) held fixed at its value. With ``g = grad L(theta)`` and the Hessian-gradient
    product ``Hg = jvp(grad L, (theta,), (stop_gradient(g),))`` (forward over reverse, no explicit
    Hessian), the paper's score is ``S = -theta * Hg`` and GraSP **removes the weights with the
    highest** ``S``. As in the authors' code, ``g`` and ``H`` are taken with respect to the
    prunable weights only: non-prunable parameters are not in the tangent, so they add nothing to
    ``Hg`` (with them in, scores change by a few percent and the kept set changes).

    **Sign convention:** every selection in jaxprune keeps the highest scores, so this function
    returns ``theta * Hg = -S``; ``jp.global_mask(grasp(...), s)`` then keeps exactly the weights
    GraSP keeps. Scores can be negative. Non-prunable leaves score 0 (they are never selected).

    With ``mask`` the masked params are scored (``theta`` is 0 at pruned entries), so pruned
    weights score exactly 0, which is *not* below the negative scores of live weights. The whole
    computation is jitted; float64 params and inputs (under ``jax.enable_x64``) are honoured.

    Args:
      params: the params pytree (at initialisation).
      batch: ``{"image": ..., "label": ...}``, one batch of data.
      apply_fn: ``apply_fn(params, images) -> logits``.
      mask: optional bool mask pytree like ``params``.
      temperature: logits are divided by it before the softmax (200 in the paper's code).
      prunable: which leaves are the weights ``theta`` (default: kernels with ``ndim >= 2``); use
        the same value as for the selection.
      **ctx: other context keywords (``key``, ...), ignored.

    Returns:
      A pytree like ``params`` with ``theta * Hg`` on the prunable leaves and 0 elsewhere.

    Raises:
      ValueError: if ``batch`` (with ``"image"`` and ``"label"``) or ``apply_fn`` is missing,
        ``temperature`` is not a positive number, or no leaf is prunable.
    """
    del ctx
    _check_data_inputs("grasp", batch, apply_fn)
    if not float(temperature) > 0:
        raise ValueError(f"score 'grasp' needs temperature > 0, got {temperature!r}")
    flags = tuple(prunable_flags(params, prunable))
    if not any(flags):
        raise ValueError(
            "score 'grasp' found no prunable leaves (default: leaves named 'kernel' with "
            "ndim >= 2); pass prunable= (see jp.describe(params))"
        )
    images, labels = jnp.asarray(batch["image"]), jnp.asarray(batch["label"])
    weights = _masked(params, mask)
    return _grasp_theta_hg(weights, images, labels, apply_fn, float(temperature), flags)


def _merge(leaves: list, flags: tuple[bool, ...], chosen: list) -> list:
    """``leaves`` with the flagged positions replaced, in order, by the entries of ``chosen``."""
    it = iter(chosen)
    return [next(it) if flag else leaf for leaf, flag in zip(leaves, flags, strict=True)]


def _grasp_theta_hg_impl(params, images, labels, apply_fn, temperature, flags):
    """``theta * Hg`` over the flagged leaves; jitted below (once per apply_fn, flags, shapes)."""
    leaves, treedef = jax.tree.flatten(params)
    theta = [leaf for leaf, flag in zip(leaves, flags, strict=True) if flag]

    def loss(weights):
        full = jax.tree.unflatten(treedef, _merge(leaves, flags, weights))
        return _cross_entropy(apply_fn(full, images) / temperature, labels)

    grad_fn = jax.grad(loss)
    g = jax.lax.stop_gradient(grad_fn(theta))
    _, hg = jax.jvp(grad_fn, (theta,), (g,))
    zeros = [jnp.zeros_like(leaf) for leaf in leaves]
    scores = [w * h for w, h in zip(theta, hg, strict=True)]
    return jax.tree.unflatten(treedef, _merge(zeros, flags, scores))


_grasp_theta_hg = jax.jit(
    _grasp_theta_hg_impl, static_argnames=("apply_fn", "temperature", "flags")
)

# Names registered by this module; ``register`` never replaces them silently.
_BUILTINS = frozenset(_REGISTRY)
