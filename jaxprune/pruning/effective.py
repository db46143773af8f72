"""Effective masks (Vysogorets & Kempe, "Connectivity Matters") on any JAX / Flax model.

A kept connection is *effective* iff it lies on at least one path from an input unit to an output
unit of the masked network (``docs/DESIGN.md``). ``effective_mask`` takes the usual apply
function (activations, max-pooling, norms, attention, ``nn.scan``, ... as they are; no special
model mode) and decides connectivity on the model's own computation.

Method: support propagation. ``apply_fn(params, x)`` is traced once to a jaxpr, which is then
re-evaluated in *support space*: every value is one of three kinds,

* a **signal** (computed from the input): a 0/1 float array, 1 where the unit is reachable from
  an input unit;
* a **weight** (computed from params only): a 0/1 array, the mask pattern of the leaf (every leaf
  of ``mask``, so non-prunable leaves count with their mask, normally all-True);
* a **constant** (computed from neither: literals, closed-over arrays such as ``batch_stats``,
  ``iota``): its real value, evaluated as the model would.

Each primitive has a support rule. Every rule is a sum / product / selection of its 0/1 inputs
followed by a *saturation* (``min(y, 1)``, which is ``y > 0`` on these nonnegative integer counts,
also applied to the cotangent on the way back), so nothing cancels, overflows or underflows at any
depth. ``jax.grad`` of the summed output support with
respect to the weight patterns is then positive exactly on the kept entries that connect a
reachable unit to a unit that reaches an output; the result is ``mask & (gradient > 0)``: it never
adds a connection and is idempotent. Every element of every array leaf of the output pytree is an
output unit; every element of every leaf of ``sample_input`` is an input unit (its values are never
used). The support computation is compiled once per traced program (cached by the jaxpr's text;
constants are arguments), so repeated calls with new masks (effective-target searches) are cheap;
a program whose ``while`` / ``cond`` needs concrete constants runs eagerly instead.

The rules (the graph semantics they implement):

* **Weights in products.** ``dot_general`` / ``conv_general_dilated`` of a signal with a weight
  connects input unit to output unit through every kept entry, at every position (padding taps
  connect nothing). ``mul`` of a signal by a weight keeps the units where the weight's pattern is
  1 (a masked elementwise weight cuts its unit); a constant factor of a product gates with its
  nonzero pattern (``x * 0.5`` is the identity, a fixed 0/1 mask cuts). A divisor is never a
  gate. Products of two weights compose patterns (``A @ B`` has the edges of the paths).
* **Biases and constants.** A weight or constant combined additively with a signal (``add``,
  ``sub``, ``max``, ``select_n`` cases, concatenated tokens, ...) carries no signal: biases are
  ignored. A weight used only additively is never effective.
* **Activations and elementwise functions** (``relu``, ``gelu``, ``tanh``, ``exp``, comparisons,
  casts, ``stop_gradient``, ``custom_vjp`` / ``custom_jvp`` functions through their primal body)
  are the identity on units; binary elementwise ops of two signals take the union of supports.
* **Products of two signals** (``x * gate``, ``Q K^T``, ``P V``): each factor connects to the
  product, i.e. the union of supports (for ``dot_general``: output ``(i, j)`` is connected from
  every ``a[i, k]`` and every ``b[k, j]``).
* **Moving units.** ``reshape``, ``transpose``, ``broadcast_in_dim``, ``slice``, ``pad``,
  ``concatenate``, ``split``, ``rev``, ``squeeze``, and ``gather`` / ``dynamic_slice`` /
  ``dynamic_update_slice`` / ``scatter`` with constant indices move supports exactly.
* **Input-dependent indices** (embedding lookups ``table[tokens]``, ``dynamic_slice`` at a
  computed offset): *any index* may be taken. An index unit connects to every output element it
  selects; an output element is connected from every operand element some index could select,
  and for a weight table (an embedding) the lookup is an edge: token ``t`` connects to output
  feature ``d`` through every kept entry ``(row, d)`` of the table.
* **Pooling and reductions.** ``reduce_window`` (max, min, sum: max-pooling and average pooling
  alike) connects every input of a window to its output; ``reduce_sum`` / ``max`` / ``min`` /
  ``prod`` / ``argmax`` / ``argmin`` connect every reduced unit to the result; cumulative sums
  connect prefixes; ``sort`` / ``top_k`` connect everything along the sorted axis.
* **Norms: statistics are not connections.** A value computed by a reduction (``reduce_sum``,
  ``reduce_max``, ... : what ``jnp.mean``, ``jnp.var`` and the Flax norms use) of an array ``a``
  is a *statistic of* ``a``. Values computed from ``a`` elementwise (unary functions, casts,
  reshapes, transposes, broadcasts, combinations with constants, weights, other statistics of
  ``a``, or another value computed from ``a`` elementwise; not slices, pads or gathers) belong to
  the same *origin* as ``a``. When a statistic of ``a`` is combined elementwise with a value of
  origin ``a``, the statistic is dropped: the result is connected exactly as the non-statistic
  operand. LayerNorm ``(x - mean(x)) * rsqrt(var(x) + eps) * scale + bias``, RMSNorm, GroupNorm,
  BatchNorm (train mode with batch statistics, or eval mode with running averages, which are
  constants), softmax and log-softmax therefore map unit ``i`` to unit ``i`` only. A statistic
  that reaches an output any other way is an ordinary connection: global average pooling into a
  Dense layer, a squeeze-and-excitation gate (its Dense layers make a new origin), an output that
  adds ``mean(x)`` to ``Dense(x)``. Statistics are recognised only when computed by reduction
  primitives (a mean written as ``x @ ones / n`` is a dense layer), and the rule does not look at
  the operation: a mixer ``x + mean(x, axis=tokens)`` also acts unit by unit. Flax multiplies a
  norm's ``scale`` into ``rsqrt(var + eps)``, so scales belong to the statistic: they never gate a
  unit and are never effective (they are not prunable by default).
* **Attention** ``softmax(Q K^T / sqrt(d) + mask) V`` follows from the rules above: a score
  ``s[h, i, j]`` is connected from every ``q[i, h, :]`` and ``k[j, h, :]``; the softmax is a
  statistic, so ``p[h, i, j]`` is connected from ``s[h, i, j]`` only; a constant mask applied with
  ``where`` (causal masks) disconnects the masked scores; the output ``o[i, h, d]`` is connected
  from every ``p[h, i, j]`` and every ``v[j, h, d]``. So the value path (``V`` through the
  attention weights to the output) is a signal path whatever ``Q`` and ``K`` are (attention with
  constant scores still averages the values), and a ``Q`` (``K``) kernel entry of head ``h`` is
  effective iff for some query token ``i`` (key token ``j``) its input unit is reachable and some
  ``o[i', h, :]`` it reaches through an unmasked score reaches an output: the attention weights can
  then influence an output. Because products of two signals are unions, this holds even when the
  head's value units all carry nothing (the weights then multiply zeros; a gate-aware rule would
  need to know which values are identically zero, which biases and softmax make
  input-independent). A masked score still lets ``v[j]`` reach ``o[i]`` (union); this changes no
  kernel entry when every token attends to itself (causal masks), as ``v[i]`` reaches ``o[i]``.
* **Calls** (``jit``, ``remat`` / ``jax.checkpoint``, ``custom_jvp_call``, ``custom_vjp_call``,
  ``closed_call``) are followed into their bodies, keeping origins and statistics.
* **Loops.** ``scan`` (``nn.scan``, ``fori_loop`` with static bounds) runs its body ``length`` times
  in support space with ``lax.scan`` (values stay 0/1, so depth does not matter); a carry whose
  kind changes in the body (e.g. a constant zero state that receives a signal) is promoted to the
  higher kind with an empty support. ``while_loop`` runs iteration by iteration while its condition
  is a concrete constant (a trip count fixed by constants); a condition that depends on the input
  or on params raises. ``cond`` with a concrete constant index takes that branch; otherwise the
  outputs are the union of all branches' (plus the index's support when it is a signal).
* ``jax.debug.print`` / ``jax.debug.callback`` (no results) are ignored. Any other primitive that
  touches a signal or a weight raises ``NotImplementedError`` naming it (``pure_callback``,
  ``shard_map``, scatters at input-dependent indices, ...); primitives on constants only are
  evaluated as they are.
"""

from __future__ import annotations

import collections
import dataclasses
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.extend.core as jex
import jax.numpy as jnp
import numpy as np
from jax import lax

from jaxprune.pruning.tree import Prunable, PyTree, check_same_structure, prunable_flags

ApplyFn = Callable[[PyTree, Any], Any]

_CALLS = frozenset(
    {
        "jit",
        "pjit",
        "closed_call",
        "core_call",
        "named_call",
        "custom_jvp_call",
        "custom_vjp_call",
        "custom_vjp_call_jaxpr",
        "remat",
        "remat2",
        "checkpoint",
    }
)
_SUB_JAXPR_KEYS = ("jaxpr", "call_jaxpr", "fun_jaxpr")

# Kinds of support-space values, ordered: a mix of kinds has the highest kind.
_CONST, _WEIGHT, _SIGNAL = 0, 1, 2


@jax.custom_vjp
def _saturate(y: jax.Array) -> jax.Array:
    # Supports and cotangents are sums of products of 0/1 values: nonnegative integers, so
    # ``min(y, 1)`` is ``y > 0``.
    return jnp.minimum(y, 1.0)


def _saturate_fwd(y: jax.Array):
    return _saturate(y), None


def _saturate_bwd(_, cotangent: jax.Array):
    return (jnp.minimum(cotangent, 1.0),)


_saturate.defvjp(_saturate_fwd, _saturate_bwd)


@dataclasses.dataclass(frozen=True, eq=False)
class _Val:
    """A value in support space.

    Attributes:
      kind: ``_CONST``, ``_WEIGHT`` or ``_SIGNAL``.
      value: the real value of a constant; the 0/1 float32 support of a weight or signal.
      origin: identity token shared by values computed elementwise from the same array.
      stat: for a statistic, the origin of the array it is a reduction of; else None.
    """

    kind: int
    value: Any
    origin: object = None
    stat: object = None


def _fresh(kind: int, value: Any) -> _Val:
    return _Val(kind, value, object(), None)


# ---------------------------------------------------------------------------------------------
# Sub-jaxprs (shared with layer_order and flops).


def call_sub_jaxpr(eqn: Any) -> tuple[Any, list[Any]] | None:
    """Returns ``(open jaxpr, consts)`` of a call-like equation whose inputs align, else None."""
    if eqn.primitive.name not in _CALLS:
        return None
    for key in _SUB_JAXPR_KEYS:
        sub = eqn.params.get(key)
        if isinstance(sub, jex.ClosedJaxpr):
            sub_jaxpr, consts = sub.jaxpr, list(sub.consts)
        elif isinstance(sub, jex.Jaxpr):
            sub_jaxpr, consts = sub, []
        else:
            continue
        if len(sub_jaxpr.invars) == len(eqn.invars) and len(sub_jaxpr.constvars) == len(consts):
            return sub_jaxpr, consts
    return None


def sub_jaxprs(eqn: Any) -> list[tuple[Any, list[int]]]:
    """Bodies an equation runs, each with the outer operand position of every body input.

    Covers calls (``jit``, ``remat``, ``custom_vjp_call``, ...), ``scan`` (body inputs: consts,
    carry, slices of ``xs``, in operand order), ``while`` (condition, then body) and ``cond``
    (every branch). Returns an empty list for other equations.
    """
    name, params, n = eqn.primitive.name, eqn.params, len(eqn.invars)
    call = call_sub_jaxpr(eqn)
    if call is not None:
        return [(call[0], list(range(n)))]
    if name == "scan":
        return [(params["jaxpr"].jaxpr, list(range(n)))]
    if name == "while":
        n_cond, n_body = params["cond_nconsts"], params["body_nconsts"]
        carry = list(range(n_cond + n_body, n))
        return [
            (params["cond_jaxpr"].jaxpr, [*range(n_cond), *carry]),
            (params["body_jaxpr"].jaxpr, [*range(n_cond, n_cond + n_body), *carry]),
        ]
    if name == "cond":
        return [(branch.jaxpr, list(range(1, n))) for branch in params["branches"]]
    return []


def trace_flat(
    apply_fn: ApplyFn, params: PyTree, sample_input: Any
) -> tuple[jex.ClosedJaxpr, int, list[jax.ShapeDtypeStruct]]:
    """Traces ``apply_fn(params, sample_input)`` over flat leaves (shapes and dtypes only).

    Returns:
      ``(closed jaxpr, number of params leaves, input leaf shapes)``; the jaxpr's inputs are the
      params leaves (flatten order) followed by the leaves of ``sample_input``.
    """
    leaves, treedef = jax.tree.flatten(params)
    inputs, in_treedef = jax.tree.flatten(sample_input)
    param_shapes = [_shape_struct(v) for v in leaves]
    input_shapes = [_shape_struct(v) for v in inputs]

    def flat_apply(flat_params, flat_inputs):
        return apply_fn(
            jax.tree.unflatten(treedef, flat_params), jax.tree.unflatten(in_treedef, flat_inputs)
        )

    closed = jax.make_jaxpr(flat_apply)(param_shapes, input_shapes)
    return closed, len(leaves), input_shapes


def _shape_struct(x: Any) -> jax.ShapeDtypeStruct:
    dtype = getattr(x, "dtype", None)
    return jax.ShapeDtypeStruct(np.shape(x), dtype if dtype is not None else jnp.result_type(x))


# ---------------------------------------------------------------------------------------------
# Helpers of the rules.


def _unsupported(eqn: Any, why: str = "") -> NotImplementedError:
    detail = f": {why}" if why else ""
    return NotImplementedError(
        f"effective_mask cannot reason about primitive {eqn.primitive.name!r}{detail} "
        "(it receives values computed from the input or the params)"
    )


def _out_shape(eqn: Any, i: int = 0) -> tuple[int, ...]:
    return tuple(eqn.outvars[i].aval.shape)


def _in_shape(eqn: Any, i: int) -> tuple[int, ...]:
    return tuple(np.shape(eqn.invars[i].aval))


def _top(ins: Sequence[_Val]) -> int:
    return max(v.kind for v in ins)


def _support(v: _Val, kind: int, shape: Sequence[int]) -> jax.Array:
    """The support of ``v`` as a value of ``kind`` (empty if ``v`` is of a lower kind)."""
    if v.kind == kind:
        return jnp.broadcast_to(v.value, shape)
    return jnp.zeros(shape, jnp.float32)


def _pattern(v: _Val) -> jax.Array:
    """What ``v`` lets through as a factor of a product: its support, or a constant's nonzeros."""
    if v.kind == _CONST:
        return (jnp.asarray(v.value) != 0).astype(jnp.float32)
    return v.value


def _concrete(value: Any) -> Any:
    """``value`` as a numpy array, or None if it is only known at run time (a tracer)."""
    try:
        return np.asarray(value)
    except TypeError:  # jax.errors.ConcretizationTypeError and friends
        return None


def _combine(vals: Sequence[_Val]) -> tuple[list[_Val], object, object]:
    """The statistic rule for an elementwise op of same-kind operands.

    Returns the operands that connect (statistics of a non-statistic operand's origin are
    dropped), and the result's origin and statistic tags.
    """
    plain = [v for v in vals if v.stat is None]
    plain_origins = [v.origin for v in plain]
    kept = plain + [v for v in vals if v.stat is not None and not _has(plain_origins, v.stat)]
    origins = [v.origin for v in kept]
    origin = origins[0] if all(o is origins[0] for o in origins) else object()
    if plain:
        return kept, origin, None
    stats = [v.stat for v in kept]
    stat = stats[0] if all(s is stats[0] for s in stats) else None
    return kept, origin, stat


def _has(tokens: Sequence[object], token: object) -> bool:
    return any(t is token for t in tokens)


def _union(arrays: Sequence[jax.Array]) -> jax.Array:
    """Elementwise OR of 0/1 arrays (of one shape)."""
    if len(arrays) == 1:
        return arrays[0]
    total = arrays[0]
    for a in arrays[1:]:
        total = total + a
    return _saturate(total)


# ---------------------------------------------------------------------------------------------
# Rules. Each takes (interpreter, eqn, inputs) and returns the list of outputs.

_UNARY = frozenset(
    {
        "neg",
        "exp",
        "exp2",
        "log",
        "log1p",
        "expm1",
        "tanh",
        "logistic",
        "sin",
        "cos",
        "tan",
        "asin",
        "acos",
        "atan",
        "sinh",
        "cosh",
        "asinh",
        "acosh",
        "atanh",
        "sqrt",
        "rsqrt",
        "cbrt",
        "abs",
        "sign",
        "floor",
        "ceil",
        "round",
        "integer_pow",
        "square",
        "erf",
        "erfc",
        "erf_inv",
        "lgamma",
        "digamma",
        "bessel_i0e",
        "bessel_i1e",
        "is_finite",
        "not",
        "stop_gradient",
        "convert_element_type",
        "copy",
        "copy_p",
        "reduce_precision",
        "real",
        "imag",
        "conj",
        "population_count",
        "clz",
        "optimization_barrier",
        "device_put",
        "sharding_constraint",
        "mesh_cast",
        "reshard",
        "pvary",
    }
)
_ADD_LIKE = frozenset(
    {
        "add",
        "add_any",
        "sub",
        "max",
        "min",
        "atan2",
        "rem",
        "pow",
        "nextafter",
        "eq",
        "ne",
        "lt",
        "le",
        "gt",
        "ge",
        "or",
        "xor",
        "shift_left",
        "shift_right_logical",
        "shift_right_arithmetic",
        "complex",
        "clamp",
        "igamma",
        "igammac",
        "polygamma",
        "zeta",
    }
)
_VIEWS = frozenset({"reshape", "transpose", "broadcast_in_dim", "squeeze", "rev", "slice"})
_REDUCTIONS = frozenset(
    {
        "reduce_sum",
        "reduce_max",
        "reduce_min",
        "reduce_prod",
        "reduce_and",
        "reduce_or",
        "reduce_xor",
        "argmax",
        "argmin",
    }
)
_CUMULATIVE = frozenset({"cumsum", "cumprod", "cummax", "cummin", "cumlogsumexp"})
_WINDOWS = frozenset({"reduce_window_sum", "reduce_window_max", "reduce_window_min"})
_SCATTERS = frozenset({"scatter", "scatter-add", "scatter_add", "scatter-mul", "scatter-min",
                       "scatter-max"})  # fmt: skip


def _unary(_, eqn, ins):
    if len(ins) != len(eqn.outvars):
        raise _unsupported(eqn, "operands and results do not correspond")
    for i, v in enumerate(ins):
        if v.kind != _CONST and tuple(np.shape(v.value)) != _out_shape(eqn, i):
            raise _unsupported(eqn, "it changes the shape")
    return list(ins)


def _elementwise(eqn, ins, gates: Sequence[int]):
    """Union over the highest-kind operands (statistic rule), gated by lower-kind ``gates``."""
    shape, kind = _out_shape(eqn), _top(ins)
    kept, origin, stat = _combine([v for v in ins if v.kind == kind])
    support = _union([jnp.broadcast_to(v.value, shape) for v in kept])
    for i in gates:
        if ins[i].kind < kind:
            support = support * jnp.broadcast_to(_pattern(ins[i]), shape)
    return [_Val(kind, support, origin, stat)]


def _add_like(_, eqn, ins):
    return _elementwise(eqn, ins, ())


def _mul(_, eqn, ins):
    return _elementwise(eqn, ins, range(len(ins)))


def _div(_, eqn, ins):
    return _elementwise(eqn, ins, (0,))


def _select_n(_, eqn, ins):
    pred, cases = ins[0], ins[1:]
    if pred.kind != _CONST:  # the choice depends on the input: everything connects
        return _add_like(None, eqn, ins)
    shape, kind = _out_shape(eqn), _top(cases)
    top = [v for v in cases if v.kind == kind]
    _, origin, stat = _combine(top)
    supports = [_support(v, kind, shape) for v in cases]
    value = lax.select_n(jnp.asarray(pred.value), *supports)
    return [_Val(kind, value, origin, stat)]


def _bind_float(eqn, *operands, **overrides):
    params = {**eqn.params, **overrides}
    out = eqn.primitive.bind(*operands, **params)
    return out if eqn.primitive.multiple_results else [out]


def _view(_, eqn, ins):
    operand = ins[0]
    if any(v.kind != _CONST for v in ins[1:]):
        raise _unsupported(eqn, "its shape operands depend on the input")
    (out,) = _bind_float(eqn, operand.value)
    if eqn.primitive.name == "slice":  # a part of an array is a new origin
        return [_fresh(operand.kind, out)]
    return [_Val(operand.kind, out, operand.origin, operand.stat)]


def _linear(eqn, ins, data: Sequence[int]):
    """A primitive linear in the operands at ``data`` (zeros for lower kinds), constants else."""
    kind = _top([ins[i] for i in data])
    if any(v.kind != _CONST for i, v in enumerate(ins) if i not in data):
        raise _unsupported(eqn, "its indices depend on the input or the params")
    operands = [
        _support(v, kind, _in_shape(eqn, i)) if i in data else jnp.asarray(v.value)
        for i, v in enumerate(ins)
    ]
    return [_fresh(kind, _saturate(o)) for o in _bind_float(eqn, *operands)]


def _pad(_, eqn, ins):
    return _linear(eqn, ins, (0, 1))


def _concatenate(_, eqn, ins):
    return _linear(eqn, ins, range(len(ins)))


def _split(_, eqn, ins):
    return _linear(eqn, ins, (0,))


def _dynamic_update_slice(_, eqn, ins):
    return _linear(eqn, ins, (0, 1))


def _scatter(_, eqn, ins):
    operand, indices, updates = ins
    if indices.kind != _CONST:
        raise _unsupported(eqn, "its indices depend on the input or the params")
    kind = _top([operand, updates])
    args = (
        _support(operand, kind, _in_shape(eqn, 0)),
        jnp.asarray(indices.value),
        _support(updates, kind, _in_shape(eqn, 2)),
    )
    params = eqn.params
    common = {
        "dimension_numbers": params["dimension_numbers"],
        "indices_are_sorted": params["indices_are_sorted"],
        "unique_indices": params["unique_indices"],
        "mode": params["mode"],
    }
    if eqn.primitive.name == "scatter":
        out = lax.scatter(*args, **common)
    else:
        out = lax.scatter_add(*args, **common)
    return [_fresh(kind, _saturate(out))]


def _reduction(_, eqn, ins):
    (operand,) = ins
    value = _saturate(jnp.sum(operand.value, axis=tuple(eqn.params["axes"])))
    stat = operand.stat if operand.stat is not None else operand.origin
    return [_Val(operand.kind, value, object(), stat)]


def _cumulative(_, eqn, ins):
    (operand,) = ins
    out = lax.cumsum(operand.value, axis=eqn.params["axis"], reverse=eqn.params["reverse"])
    return [_fresh(operand.kind, _saturate(out))]


_WINDOW_KEYS = (
    "window_dimensions",
    "window_strides",
    "padding",
    "base_dilation",
    "window_dilation",
)


def _window_sum(eqn, value):
    params = {k: eqn.params[k] for k in _WINDOW_KEYS}
    return lax.reduce_window_sum_p.bind(value, **params)


def _pool(_, eqn, ins):
    (operand,) = ins
    return [_fresh(operand.kind, _saturate(_window_sum(eqn, operand.value)))]


def _generic_pool(_, eqn, ins):
    n = len(ins) // 2
    operands, inits = ins[:n], ins[n:]
    if any(v.kind != _CONST for v in inits):
        raise _unsupported(eqn, "its initial value depends on the input or the params")
    kind = _top(operands)
    total = _saturate(sum(_window_sum(eqn, v.value) for v in operands if v.kind == kind))
    return [_fresh(kind, total) for _ in range(n)]


def _along_axis(eqn, ins, axis: int) -> tuple[int, jax.Array]:
    """Union of the top-kind operands over ``axis``, kept as a size-1 axis."""
    kind = _top(ins)
    total = _saturate(
        sum(jnp.sum(v.value, axis=axis, keepdims=True) for v in ins if v.kind == kind)
    )
    return kind, total


def _sort(_, eqn, ins):
    kind, total = _along_axis(eqn, ins, eqn.params["dimension"])
    return [_fresh(kind, jnp.broadcast_to(total, _out_shape(eqn, i))) for i in range(len(ins))]


def _top_k(_, eqn, ins):
    axis = eqn.params.get("axis", -1)
    kind, total = _along_axis(eqn, ins, axis)
    return [_fresh(kind, jnp.broadcast_to(total, _out_shape(eqn, i))) for i in range(2)]


def _product(_, eqn, ins):
    """``dot_general`` / ``conv_general_dilated``: edges of a weight, union of two signals."""
    a, b = ins[:2]
    if len(ins) > 2:
        raise _unsupported(eqn, "it has more than two operands")
    kind = max(a.kind, b.kind)
    overrides = {"preferred_element_type": jnp.float32}
    if a.kind == b.kind == _SIGNAL:
        ones_a = jnp.ones(np.shape(a.value), jnp.float32)
        ones_b = jnp.ones(np.shape(b.value), jnp.float32)
        (left,) = _bind_float(eqn, a.value, ones_b, **overrides)
        (right,) = _bind_float(eqn, ones_a, b.value, **overrides)
        return [_fresh(kind, _union([left, right]))]
    (out,) = _bind_float(eqn, _pattern(a), _pattern(b), **overrides)
    return [_fresh(kind, _saturate(out))]


def _any_start(value: jax.Array, dims: Sequence[int], sizes: Sequence[int]) -> jax.Array:
    """Along each of ``dims``: what a size-``sizes[d]`` window at *any* start could hold."""
    for d in dims:
        n, s = value.shape[d], sizes[d]
        if n == s:
            continue
        window = [1] * value.ndim
        window[d] = n - s + 1
        value = lax.reduce_window(value, 0.0, lax.add, tuple(window), (1,) * value.ndim, "VALID")
    return value


def _lookup(kind_operand: int, part: jax.Array, index: jax.Array | None) -> jax.Array:
    """Combines what an operand could give with the support of input-dependent indices."""
    if index is None:
        return _saturate(part)
    if kind_operand == _SIGNAL:
        return _union([part, index])
    return _saturate(part * index)


def _gather(_, eqn, ins):
    operand, indices = ins
    params, shape = eqn.params, _out_shape(eqn)
    dnums = params["dimension_numbers"]
    if indices.kind == _CONST:
        out = lax.gather(
            operand.value,
            jnp.asarray(indices.value),
            dnums,
            params["slice_sizes"],
            indices_are_sorted=params["indices_are_sorted"],
            unique_indices=params["unique_indices"],
            mode=params["mode"],
            fill_value=0,
        )
        return [_fresh(operand.kind, _saturate(out))]
    if dnums.operand_batching_dims:
        raise _unsupported(eqn, "batched gather with input-dependent indices")
    sizes = params["slice_sizes"]
    part = _any_start(_pattern(operand), dnums.start_index_map, sizes)
    part = part[tuple(slice(0, size) for size in sizes)]  # dims not indexed start at 0
    dropped = set(dnums.collapsed_slice_dims)
    part = part.reshape([s for d, s in enumerate(part.shape) if d not in dropped])
    batch_dims = [d for d in range(len(shape)) if d not in dnums.offset_dims]
    part = lax.broadcast_in_dim(part, shape, tuple(dnums.offset_dims))
    index = None
    if indices.kind == _SIGNAL:
        per_index = _saturate(jnp.sum(indices.value, axis=-1))
        index = lax.broadcast_in_dim(per_index, shape, tuple(batch_dims))
    kind = _SIGNAL if _SIGNAL in (operand.kind, indices.kind) else _WEIGHT
    return [_fresh(kind, _lookup(operand.kind, part, index))]


def _dynamic_slice(_, eqn, ins):
    operand, starts = ins[0], ins[1:]
    sizes = eqn.params["slice_sizes"]
    if all(v.kind == _CONST for v in starts):
        out = lax.dynamic_slice(operand.value, [jnp.asarray(v.value) for v in starts], sizes)
        return [_fresh(operand.kind, out)]
    moving = [d for d, v in enumerate(starts) if v.kind != _CONST]
    part = _any_start(_pattern(operand), moving, sizes)
    fixed = [jnp.asarray(v.value if v.kind == _CONST else 0, jnp.int32) for v in starts]
    part = lax.dynamic_slice(part, fixed, sizes)
    signals = [v.value for v in starts if v.kind == _SIGNAL]
    index = jnp.broadcast_to(_union(signals), part.shape) if signals else None
    kind = _SIGNAL if _SIGNAL in [v.kind for v in ins] else _WEIGHT
    return [_fresh(kind, _lookup(operand.kind, part, index))]


# ---------------------------------------------------------------------------------------------
# The interpreter, with calls and control flow.


class _KindChange(Exception):
    """Raised while tracing a scan body whose carry changes kind; carries the joined kinds."""

    def __init__(self, kinds: list[int]):
        super().__init__("scan carry kinds changed")
        self.kinds = kinds


def _array(v: _Val, kind: int, aval: Any) -> jax.Array:
    """The array that represents ``v`` as a value of ``kind`` in a loop (lower kinds: empty).

    Constants keep the dtype of ``aval`` (the loop's own type); supports are float32.
    """
    if kind == _CONST:
        return jnp.asarray(v.value, aval.dtype)
    if v.kind == kind:
        return jnp.asarray(v.value, jnp.float32)
    return jnp.zeros(aval.shape, jnp.float32)


class _NeedsConcrete(Exception):
    """A loop condition or branch index is a constant that tracing under ``jit`` left abstract."""


class _Interpreter:
    """Evaluates jaxprs in support space.

    Args:
      staged: True when tracing under ``jit``, where constants are abstract: a ``while`` / ``cond``
        that needs a concrete constant then raises ``_NeedsConcrete`` (the caller re-runs eagerly).
    """

    def __init__(self, staged: bool):
        self.staged = staged

    def concrete(self, v: _Val) -> Any:
        """The concrete value of a constant, or None (a signal, a weight, a run-time constant)."""
        if v.kind != _CONST:
            return None
        value = _concrete(v.value)
        if value is None and self.staged:
            raise _NeedsConcrete
        return value

    def constant(self, eqn: Any, ins: list[_Val]) -> list[_Val]:
        """Evaluates an equation on constants as the model would.

        Unstaged, concrete constants stay concrete even under an outer ``jit`` (for loop
        conditions); staged, constants are traced like everything else.
        """
        params = eqn.primitive.get_bind_params(eqn.params)
        if self.staged:
            outs = eqn.primitive.bind(*[v.value for v in ins], **params)
        else:
            with jax.ensure_compile_time_eval():
                outs = eqn.primitive.bind(*[v.value for v in ins], **params)
        outs = outs if eqn.primitive.multiple_results else [outs]
        return [_Val(_CONST, o) for o in outs]

    def run(self, jaxpr: Any, consts: Sequence[_Val], args: Sequence[_Val]) -> list[_Val]:
        """Evaluates ``jaxpr`` on support-space constants and arguments."""
        env: dict[Any, _Val] = {}

        def read(var):
            if isinstance(var, jex.Literal):
                return _Val(_CONST, var.val)
            return env[var]

        for var, value in zip(jaxpr.constvars, consts, strict=True):
            env[var] = value
        for var, value in zip(jaxpr.invars, args, strict=True):
            env[var] = value
        for eqn in jaxpr.eqns:
            outs = self.eqn([read(v) for v in eqn.invars], eqn)
            for var, value in zip(eqn.outvars, outs, strict=True):
                if not isinstance(var, jex.DropVar):
                    env[var] = value
        return [read(v) for v in jaxpr.outvars]

    def eqn(self, ins: list[_Val], eqn: Any) -> list[_Val]:
        """Evaluates one equation."""
        name = eqn.primitive.name
        if all(v.kind == _CONST for v in ins):
            return self.constant(eqn, ins)
        call = call_sub_jaxpr(eqn)
        if call is not None:
            return self.run(call[0], [_Val(_CONST, c) for c in call[1]], ins)
        rule = _RULES.get(name)
        if rule is None:
            raise _unsupported(eqn)
        return rule(self, eqn, ins)

    def scan(self, eqn: Any, ins: list[_Val]) -> list[_Val]:
        """``lax.scan`` of the body in support space (carry kinds found by a fixed point)."""
        n_consts, n_carry = eqn.params["num_consts"], eqn.params["num_carry"]
        kinds = [v.kind for v in ins[n_consts : n_consts + n_carry]]
        for _ in range(3):
            try:
                return self._scan_with(eqn, ins, kinds)
            except _KindChange as change:
                kinds = change.kinds
        raise _unsupported(eqn, "the kinds of its carry do not settle")  # pragma: no cover

    def _scan_with(self, eqn: Any, ins: list[_Val], kinds: list[int]) -> list[_Val]:
        params = eqn.params
        body = params["jaxpr"]
        n_consts, n_carry = params["num_consts"], params["num_carry"]
        consts = ins[:n_consts]
        init, xs = ins[n_consts : n_consts + n_carry], ins[n_consts + n_carry :]
        body_consts = [_Val(_CONST, c) for c in body.consts]
        carry_avals = [v.aval for v in eqn.invars[n_consts : n_consts + n_carry]]
        y_avals = [v.aval for v in body.jaxpr.outvars[n_carry:]]
        y_kinds: list[int] = []

        def step(carry, x):
            carry_vals = [_fresh(k, c) for k, c in zip(kinds, carry, strict=True)]
            x_vals = [_fresh(v.kind, s) for v, s in zip(xs, x, strict=True)]
            outs = self.run(body.jaxpr, body_consts, [*consts, *carry_vals, *x_vals])
            joined = [max(k, o.kind) for k, o in zip(kinds, outs[:n_carry], strict=True)]
            if joined != kinds:
                raise _KindChange(joined)
            y_kinds[:] = [o.kind for o in outs[n_carry:]]
            return (
                [
                    _array(o, k, a)
                    for o, k, a in zip(outs[:n_carry], kinds, carry_avals, strict=True)
                ],
                [_array(o, o.kind, a) for o, a in zip(outs[n_carry:], y_avals, strict=True)],
            )

        start = [_array(v, k, a) for v, k, a in zip(init, kinds, carry_avals, strict=True)]
        final, ys = lax.scan(
            step,
            start,
            [jnp.asarray(v.value) for v in xs],
            length=params["length"],
            reverse=params["reverse"],
        )
        return [
            *[_fresh(k, c) for k, c in zip(kinds, final, strict=True)],
            *[_fresh(k, y) for k, y in zip(y_kinds, ys, strict=True)],
        ]

    def while_loop(self, eqn: Any, ins: list[_Val]) -> list[_Val]:
        """Runs the loop step by step while its condition is a concrete constant."""
        params = eqn.params
        n_cond, n_body = params["cond_nconsts"], params["body_nconsts"]
        cond, body = params["cond_jaxpr"], params["body_jaxpr"]
        cond_consts, body_consts = ins[:n_cond], ins[n_cond : n_cond + n_body]
        carry = ins[n_cond + n_body :]
        while True:
            (flag,) = self.run(
                cond.jaxpr, [_Val(_CONST, c) for c in cond.consts], [*cond_consts, *carry]
            )
            value = self.concrete(flag)
            if value is None:
                raise _unsupported(
                    eqn,
                    "a while loop whose condition is not a constant known when tracing (it "
                    "depends on the input or the params)",
                )
            if not bool(value):
                return carry
            carry = self.run(
                body.jaxpr, [_Val(_CONST, c) for c in body.consts], [*body_consts, *carry]
            )

    def cond(self, eqn: Any, ins: list[_Val]) -> list[_Val]:
        """Takes the branch of a concrete index, else the union of all branches."""
        branches = eqn.params["branches"]
        index, ops = ins[0], ins[1:]
        concrete = self.concrete(index)
        if concrete is not None:
            branch = branches[int(np.clip(concrete, 0, len(branches) - 1))]
            return self.run(branch.jaxpr, [_Val(_CONST, c) for c in branch.consts], ops)
        results = [self.run(b.jaxpr, [_Val(_CONST, c) for c in b.consts], ops) for b in branches]
        outs = []
        for i, column in enumerate(zip(*results, strict=True)):
            shape = _out_shape(eqn, i)
            kind = max(max(v.kind for v in column), index.kind)
            if kind == _CONST:  # a constant index known only at run time (inside a scan)
                which = jnp.clip(jnp.asarray(index.value), 0, len(branches) - 1)
                outs.append(_Val(_CONST, jnp.stack([v.value for v in column])[which]))
                continue
            supports = [_support(v, kind, shape) for v in column]
            if index.kind == kind:
                supports.append(jnp.broadcast_to(index.value, shape))
            outs.append(_fresh(kind, _union(supports)))
        return outs


def _no_outputs(_, eqn, ins):
    """``jax.debug.print`` / ``jax.debug.callback``: side effects only, nothing to connect."""
    if eqn.outvars:
        raise _unsupported(eqn, "a callback with results")
    return []


def _rule_table() -> dict[str, Callable[..., list[_Val]]]:
    table: dict[str, Callable[..., list[_Val]]] = {}
    table.update(dict.fromkeys(_UNARY, _unary))
    table.update(dict.fromkeys(_ADD_LIKE, _add_like))
    table.update(dict.fromkeys(_VIEWS, _view))
    table.update(dict.fromkeys(_REDUCTIONS, _reduction))
    table.update(dict.fromkeys(_CUMULATIVE, _cumulative))
    table.update(dict.fromkeys(_WINDOWS, _pool))
    table.update(dict.fromkeys(_SCATTERS, _scatter))
    table.update(
        {
            "mul": _mul,
            "and": _mul,
            "div": _div,
            "select_n": _select_n,
            "pad": _pad,
            "concatenate": _concatenate,
            "split": _split,
            "dynamic_update_slice": _dynamic_update_slice,
            "dynamic_slice": _dynamic_slice,
            "gather": _gather,
            "dot_general": _product,
            "conv_general_dilated": _product,
            "reduce_window": _generic_pool,
            "sort": _sort,
            "top_k": _top_k,
            "debug_callback": _no_outputs,
            "debug_print": _no_outputs,
            "scan": lambda interp, eqn, ins: interp.scan(eqn, ins),
            "while": lambda interp, eqn, ins: interp.while_loop(eqn, ins),
            "cond": lambda interp, eqn, ins: interp.cond(eqn, ins),
        }
    )
    return table


_RULES = _rule_table()


def effective_mask(
    apply_fn: ApplyFn,
    params: PyTree,
    mask: PyTree,
    sample_input: Any,
    prunable: Prunable = None,
) -> PyTree:
    """Keeps only the kept connections that lie on an input-to-output path.

    Args:
      apply_fn: ``apply_fn(params, x) -> output`` running the model as usual (eval mode: no
        dropout; other collections such as ``batch_stats`` closed over). The output may be any
        pytree of arrays; every element of every leaf is an output unit, so return only the
        model's outputs (not, e.g., updated batch statistics).
      params: the params pytree (only structure, shapes, dtypes and names are used; arrays or
        ``jax.ShapeDtypeStruct``).
      mask: bool pytree like ``params``.
      sample_input: an input batch or pytree of arrays (only shapes and dtypes are used; one
        example suffices).
      prunable: which leaves are prunable; the others keep their mask unchanged.

    Returns:
      A bool pytree like ``mask``: ``mask & effective`` on prunable leaves; other leaves keep
      their mask (all-True for masks from ``jp.global_mask`` and friends).

    Raises:
      ValueError: if ``mask`` does not match ``params``.
      NotImplementedError: naming a primitive the support rules do not cover (see the module
        docstring), e.g. a ``pure_callback`` on activations or a data-dependent ``while_loop``.
    """
    check_same_structure(mask, params, "mask", "params")
    mask_leaves, treedef = jax.tree.flatten(mask)
    closed, _, input_shapes = trace_flat(apply_fn, params, sample_input)
    flags = tuple(prunable_flags(params, prunable))
    masks = [jnp.asarray(m, bool) for m in mask_leaves]
    return jax.tree.unflatten(treedef, _effective_leaves(closed, input_shapes, flags, masks))


def _effective_fn(jaxpr: Any, input_shapes: Sequence[Any], flags: tuple[bool, ...], staged: bool):
    """``fn(masks, consts) -> effective masks`` of the flat leaves, for the traced ``jaxpr``."""

    def total(flat_patterns, consts):
        args = [_fresh(_WEIGHT, p) for p in flat_patterns]
        args += [_fresh(_SIGNAL, jnp.ones(s.shape, jnp.float32)) for s in input_shapes]
        outs = _Interpreter(staged).run(jaxpr, [_Val(_CONST, c) for c in consts], args)
        sums = [jnp.sum(o.value) for o in outs if o.kind == _SIGNAL]
        return sum(sums, jnp.zeros((), jnp.float32))

    def fn(masks, consts):
        grads = jax.grad(total)([m.astype(jnp.float32) for m in masks], consts)
        return [m & (g > 0) if f else m for f, m, g in zip(flags, masks, grads, strict=True)]

    return fn


def _compiler_options() -> dict[str, Any] | None:
    """XLA's CPU backend optimises slowly; 0/1 bookkeeping needs no optimised code."""
    return {"xla_backend_optimization_level": 0} if jax.default_backend() == "cpu" else None


_JIT_CACHE: collections.OrderedDict[Any, Any] = collections.OrderedDict()
_JIT_CACHE_SIZE = 32
_EAGER = object()  # cache entry of a jaxpr that needs concrete constants


def _effective_leaves(
    closed: Any, input_shapes: Sequence[Any], flags: tuple[bool, ...], masks: list[jax.Array]
) -> list[jax.Array]:
    """Effective masks of the flat leaves, compiled once per jaxpr.

    The compiled function is cached by the jaxpr's text, the shapes of its constants (passed as
    arguments) and the prunable flags. A jaxpr whose loops need concrete constants runs eagerly.
    """
    consts = list(closed.consts)
    key = (
        str(closed.jaxpr),
        tuple(str(jax.typeof(c)) for c in consts),
        flags,
    )
    compiled = _JIT_CACHE.get(key)
    if compiled is None:
        fn = _effective_fn(closed.jaxpr, input_shapes, flags, staged=True)
        compiled = jax.jit(fn, compiler_options=_compiler_options())
    if compiled is not _EAGER:
        try:
            out = compiled(masks, consts)
        except _NeedsConcrete:
            compiled = _EAGER
    if compiled is _EAGER:
        out = _effective_fn(closed.jaxpr, input_shapes, flags, staged=False)(masks, consts)
    _JIT_CACHE[key] = compiled
    _JIT_CACHE.move_to_end(key)
    while len(_JIT_CACHE) > _JIT_CACHE_SIZE:
        _JIT_CACHE.popitem(last=False)
    return out
