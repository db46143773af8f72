"""FLOPs and parameter counts of a (masked) model, and Liu et al.'s Scratch-B training budget.

Convention. FLOPs are the **multiply-accumulates (MACs) of the conv and dense layers for one
example**, the number Li et al. (2017, "Pruning Filters for Efficient ConvNets") and Liu et al.
(2019, "Rethinking the Value of Network Pruning") report: VGG-16 on CIFAR-10 is 3.13e8 conv MACs
(313,196,544) plus 5,120 for the ``Dense(512 -> 10)`` head. A convolution costs
``output_height * output_width * kh * kw * (cin / groups) * cout`` (padding counted as full taps,
so every kernel entry is used at every output position of its channel; dilated kernels count
their ``kh * kw`` taps, input dilation counts the inserted zeros), a dense layer ``in * out``.
Bias adds, BatchNorm, activations, pooling, residual adds and softmax are **not** counted, and
neither are matrix products between two activations (attention scores): only products one of
whose operands is a params leaf.

Sparse FLOPs of a layer count only the kernel entries the mask keeps:
``output positions * kept(mask)``, i.e. the dense FLOPs scaled by the kept fraction, exactly
(each kernel entry is used at the same number of positions). "Kept" means *kept by the mask*:
a kept weight that happens to be zero still counts, so the numbers depend only on shapes and the
mask and ``params`` may be abstract (``jax.eval_shape(model.init, ...)``). Without a mask every
entry is kept. Parameter counts: ``total_params`` is every entry of every params leaf (biases and
norm scales included); ``total_nonzero`` is every entry the mask keeps over all leaves, i.e. the
kept kernel entries plus all other leaves for masks from ``jp.global_mask`` and friends (their
non-prunable leaves are all-True).

Method. ``apply_fn(params, x)`` is traced once with ``jax.make_jaxpr`` over the flattened params
and an input of batch size one (the leading axis of ``sample_input`` is replaced by 1, so a larger
sample batch gives the same per-example numbers). Every ``conv_general_dilated`` (kernel operand)
and ``dot_general`` (right operand, else left) whose operand is a params leaf is costed from its
shapes: ``output size * kernel entries used per output`` MACs. The operand may reach the product
through a chain of entry-preserving unary ops (``convert_element_type``, ``reshape``,
``transpose``, ``squeeze``, ``rev``, ``copy``) or a ``slice``; which leaf entries it holds is
tracked exactly (an index array, built only when a slice needs it). Calls into sub-jaxprs
(``jit``, ``custom_jvp_call``, ``custom_vjp_call``, ``remat`` / ``jax.checkpoint``: the call kinds
``jp.effective_mask`` follows) are followed, and their outputs mapped back. Nothing depends on a
model mode: norms, attention (its activation-by-activation products are not counted), embeddings
(lookups, not products) and ``nn.scan`` stacks work as they are. In a ``scan`` a leaf passed
as a constant counts once per step (``length`` times), a leaf passed as ``xs`` once in total
(each step uses its own slice); ``cond`` counts its costliest branch; a ``while`` body is counted
once (its trip count is unknown: a warning says so). A leaf used by several products adds them
up; layers are listed in forward order of first use.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
import warnings
from typing import Any

import jax
import jax.extend.core as jex
import jax.numpy as jnp
import numpy as np

from jaxprune.pruning.effective import ApplyFn, call_sub_jaxpr
from jaxprune.pruning.tree import PyTree, check_same_structure, layer_names

_IDENTITY_OPS = frozenset(
    {"convert_element_type", "copy", "copy_p", "reduce_precision", "optimization_barrier"}
)
_VIEW_OPS = frozenset({"reshape", "transpose", "squeeze", "rev", "slice"})


@dataclasses.dataclass(frozen=True)
class LayerCost:
    """Cost of one kernel leaf (a conv or dense layer) for one example.

    Attributes:
      name: the leaf's layer name, e.g. ``'Conv_0/kernel'``.
      flops: dense multiply-accumulates per example.
      sparse_flops: multiply-accumulates of the entries the mask keeps.
      params: entries of the kernel.
      nonzero: entries of the kernel the mask keeps (all of them without a mask).
    """

    name: str
    flops: int
    sparse_flops: int
    params: int
    nonzero: int


@dataclasses.dataclass(frozen=True)
class FlopsReport:
    """FLOPs (MACs per example) and parameter counts of a model, per layer and in total.

    Attributes:
      layers: one :class:`LayerCost` per kernel leaf used by a conv / dense product, in forward
        order.
      total_flops: dense MACs per example, summed over ``layers``.
      total_sparse_flops: MACs of the kept kernel entries, summed over ``layers``.
      total_params: every entry of every params leaf (biases and norms included).
      total_nonzero: entries kept by the mask over all leaves (all entries without a mask).
    """

    layers: tuple[LayerCost, ...]
    total_flops: int
    total_sparse_flops: int
    total_params: int
    total_nonzero: int

    def as_dict(self) -> dict[str, Any]:
        """JSON-friendly dict: ``layers`` as a list of dicts, then the totals."""
        return {
            "layers": [dataclasses.asdict(layer) for layer in self.layers],
            "total_flops": self.total_flops,
            "total_sparse_flops": self.total_sparse_flops,
            "total_params": self.total_params,
            "total_nonzero": self.total_nonzero,
        }

    def table(self) -> str:
        """A fixed-width table: one row per layer, a total row and the reductions."""
        header = ["layer", "MACs", "sparse MACs", "params", "kept"]
        rows = [
            [
                layer.name,
                f"{layer.flops:,}",
                f"{layer.sparse_flops:,}",
                f"{layer.params:,}",
                f"{layer.nonzero:,}",
            ]
            for layer in self.layers
        ]
        total = [
            "TOTAL (params: all leaves)",
            f"{self.total_flops:,}",
            f"{self.total_sparse_flops:,}",
            f"{self.total_params:,}",
            f"{self.total_nonzero:,}",
        ]
        widths = [max(len(c) for c in col) for col in zip(header, *rows, total, strict=True)]

        def line(cells):
            rest = [c.rjust(w) for c, w in zip(cells[1:], widths[1:], strict=True)]
            return "  ".join([cells[0].ljust(widths[0]), *rest])

        rule = "-" * len(line(header))
        flops_x = (
            self.total_flops / self.total_sparse_flops if self.total_sparse_flops else math.inf
        )
        params_x = self.total_params / self.total_nonzero if self.total_nonzero else math.inf
        footer = (
            f"MACs per example {self.total_flops:.3e} dense, {self.total_sparse_flops:.3e} sparse "
            f"({flops_x:.2f}x fewer); params {self.total_params:,}, kept {self.total_nonzero:,} "
            f"({params_x:.2f}x fewer)"
        )
        return "\n".join([line(header), rule, *map(line, rows), rule, line(total), footer])

    def __str__(self) -> str:
        return self.table()


@dataclasses.dataclass(frozen=True)
class _Operand:
    """Which entries of a params leaf a jaxpr variable holds.

    ``index`` is ``None`` for the leaf itself in its own layout (possibly with leading axes
    that a ``scan`` slices as ``xs``), else an int array of flat leaf indices whose trailing axes
    have the variable's shape; leading extra axes enumerate scan steps. ``reps``: how many times
    each listed entry is used per execution of the enclosing top-level program (scan constants).
    """

    leaf: int
    index: np.ndarray | None
    reps: int


def _index(operand: _Operand, leaf_shape: tuple[int, ...]) -> np.ndarray:
    if operand.index is not None:
        return operand.index
    size = math.prod(leaf_shape)
    dtype = np.int32 if size < 2**31 else np.int64
    return np.arange(size, dtype=dtype).reshape(leaf_shape)


def _view(eqn: Any, operand: _Operand, leaf_shape: tuple[int, ...]) -> _Operand | None:
    """Applies an entry-selecting unary op to the tracked indices, or None if unsupported."""
    name, params = eqn.primitive.name, eqn.params
    in_shape = tuple(eqn.invars[0].aval.shape)
    out_shape = tuple(eqn.outvars[0].aval.shape)
    index = _index(operand, leaf_shape)
    lead = index.ndim - len(in_shape)
    lead_axes = tuple(range(lead))
    if name == "reshape":
        if params.get("dimensions") is not None:
            return None
        new = index.reshape(index.shape[:lead] + out_shape)
    elif name == "transpose":
        new = np.transpose(index, lead_axes + tuple(lead + p for p in params["permutation"]))
    elif name == "squeeze":
        new = np.squeeze(index, axis=tuple(lead + d for d in params["dimensions"]))
    elif name == "rev":
        new = np.flip(index, axis=tuple(lead + d for d in params["dimensions"]))
    elif name == "slice":
        strides = params.get("strides") or (1,) * len(in_shape)
        window = tuple(
            slice(start, stop, step)
            for start, stop, step in zip(
                params["start_indices"], params["limit_indices"], strides, strict=True
            )
        )
        new = index[(slice(None),) * lead + window]
    else:
        return None
    if new.shape[lead:] != out_shape:
        return None
    return _Operand(operand.leaf, new, operand.reps)


def _product_macs(eqn: Any) -> tuple[int, int] | None:
    """Returns ``(MACs per execution, position of the kernel operand)`` of a conv / dot."""
    out_size = math.prod(eqn.outvars[0].aval.shape)
    if eqn.primitive.name == "conv_general_dilated":
        rhs_shape = eqn.invars[1].aval.shape
        out_feature_dim = eqn.params["dimension_numbers"].rhs_spec[0]
        return out_size * math.prod(rhs_shape) // rhs_shape[out_feature_dim], 1
    if eqn.primitive.name == "dot_general":
        (lhs_contract, _), _ = eqn.params["dimension_numbers"]
        lhs_shape = eqn.invars[0].aval.shape
        return out_size * math.prod(lhs_shape[d] for d in lhs_contract), -1
    return None


class _Counter:
    """Walks a jaxpr and accumulates dense / sparse MACs per params leaf."""

    def __init__(self, shapes: list[tuple[int, ...]], masks: list[np.ndarray | None]):
        self.shapes = shapes
        self.masks = masks
        self.warned = False

    def kept(self, operand: _Operand) -> tuple[int, int]:
        """Returns ``(entries, kept entries)`` listed by ``operand`` (with repetitions)."""
        mask = self.masks[operand.leaf]
        if operand.index is None:
            size = math.prod(self.shapes[operand.leaf])
            return size, size if mask is None else int(np.count_nonzero(mask))
        size = int(operand.index.size)
        if mask is None:
            return size, size
        return size, int(np.count_nonzero(mask.reshape(-1)[operand.index]))

    def walk(self, jaxpr: Any, env: dict[Any, _Operand], acc: dict[int, list[int]]) -> None:
        """Adds the MACs of ``jaxpr``'s products to ``acc[leaf] = [dense, sparse]``."""

        def tracked(var):
            return None if isinstance(var, jex.Literal) else env.get(var)

        for eqn in jaxpr.eqns:
            name = eqn.primitive.name
            inputs = [tracked(v) for v in eqn.invars]
            if not any(op is not None for op in inputs):
                continue
            macs = _product_macs(eqn)
            if macs is not None:
                self.add_product(eqn, inputs, macs, acc)
                continue
            if name in _IDENTITY_OPS and len(eqn.outvars) == len(eqn.invars):
                for op, out in zip(inputs, eqn.outvars, strict=True):
                    if op is not None:
                        env[out] = op
                continue
            if name in _VIEW_OPS and inputs[0] is not None:
                view = _view(eqn, inputs[0], self.shapes[inputs[0].leaf])
                if view is not None:
                    env[eqn.outvars[0]] = view
                continue
            sub = call_sub_jaxpr(eqn)
            if sub is not None:
                inner = self.bind(sub[0].invars, inputs)
                self.walk(sub[0], inner, acc)
                for inner_out, out in zip(sub[0].outvars, eqn.outvars, strict=True):
                    if not isinstance(inner_out, jex.Literal) and inner_out in inner:
                        env[out] = inner[inner_out]
                continue
            if name == "scan":
                self.scan(eqn, inputs, acc)
            elif name == "cond":
                self.cond(eqn, inputs, acc)
            elif name == "while":
                self.while_loop(eqn, inputs, acc)

    @staticmethod
    def bind(invars: list[Any], inputs: list[_Operand | None]) -> dict[Any, _Operand]:
        return {var: op for var, op in zip(invars, inputs, strict=True) if op is not None}

    def add_product(self, eqn: Any, inputs: list, macs: tuple[int, int], acc: dict) -> None:
        per_execution, position = macs
        candidates = [1] if position == 1 else [1, 0]
        for i in candidates:
            operand = inputs[i]
            if operand is None:
                continue
            operand_size = math.prod(eqn.invars[i].aval.shape)
            if operand_size == 0:
                return
            positions = per_execution // operand_size
            entries, kept = self.kept(operand)
            row = acc.setdefault(operand.leaf, [0, 0])
            row[0] += operand.reps * positions * entries
            row[1] += operand.reps * positions * kept
            return

    def scan(self, eqn: Any, inputs: list, acc: dict) -> None:
        closed = eqn.params["jaxpr"]
        n_consts, n_carry = eqn.params["num_consts"], eqn.params["num_carry"]
        length = int(eqn.params["length"])
        body_inputs: list[_Operand | None] = []
        for i, op in enumerate(inputs):
            if op is None or n_consts <= i < n_consts + n_carry:
                body_inputs.append(None)  # carries may change from step to step
            elif i < n_consts:
                body_inputs.append(_Operand(op.leaf, op.index, op.reps * length))
            else:
                body_inputs.append(op)  # xs: each step a slice; indices keep the scan axis
        self.walk(closed.jaxpr, self.bind(closed.jaxpr.invars, body_inputs), acc)

    def cond(self, eqn: Any, inputs: list, acc: dict) -> None:
        best: dict[int, list[int]] = {}
        for branch in eqn.params["branches"]:
            branch_acc: dict[int, list[int]] = {}
            self.walk(branch.jaxpr, self.bind(branch.jaxpr.invars, inputs[1:]), branch_acc)
            if sum(v[0] for v in branch_acc.values()) > sum(v[0] for v in best.values()):
                best = branch_acc
        for leaf, (dense, sparse) in best.items():
            row = acc.setdefault(leaf, [0, 0])
            row[0] += dense
            row[1] += sparse

    def while_loop(self, eqn: Any, inputs: list, acc: dict) -> None:
        body = eqn.params["body_jaxpr"].jaxpr
        n_cond, n_body = eqn.params["cond_nconsts"], eqn.params["body_nconsts"]
        body_inputs = [*inputs[n_cond : n_cond + n_body], *[None] * (len(inputs) - n_cond - n_body)]
        before = {leaf: list(v) for leaf, v in acc.items()}
        self.walk(body, self.bind(body.invars, body_inputs), acc)
        if acc != before and not self.warned:
            self.warned = True
            warnings.warn(
                "flops_report: a while_loop body uses params; its trip count is unknown, so its "
                "products are counted once",
                stacklevel=3,
            )


def _shape_struct(x: Any) -> jax.ShapeDtypeStruct:
    dtype = getattr(x, "dtype", None)
    return jax.ShapeDtypeStruct(np.shape(x), dtype if dtype is not None else jnp.result_type(x))


def flops_report(
    apply_fn: ApplyFn, params: PyTree, sample_input: Any, mask: PyTree | None = None
) -> FlopsReport:
    """Counts the conv / dense MACs per example and the parameters of a (masked) model.

    Args:
      apply_fn: ``apply_fn(params, x) -> logits`` (any output pytree), the model as it is (any
        Flax / JAX model: norms, attention, ``nn.scan``, ``nn.remat``, ...). For Linen models
        with BatchNorm, close over concrete ``batch_stats`` (only their shapes matter: zeros will
        do).
      params: the params pytree; arrays or ``jax.ShapeDtypeStruct`` leaves (only shapes are used).
      sample_input: an input batch (array or ``ShapeDtypeStruct``); its leading axis is the batch
        axis and is traced at size 1, so the result is per example whatever the batch size.
      mask: optional bool pytree like ``params``; ``None`` keeps every entry.

    Returns:
      A :class:`FlopsReport` (see the module docstring for what is counted).

    Raises:
      ValueError: if ``mask`` does not match ``params`` or ``sample_input`` has no batch axis.

    Example::

      from jaxprune.models import get_model
      model, x = get_model("vgg16", 10), jnp.zeros((1, 32, 32, 3))
      variables = jax.eval_shape(model.init, jax.random.key(0), x)
      stats = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), variables["batch_stats"])
      apply_fn = lambda p, x: model.apply({"params": p, "batch_stats": stats}, x)
      report = flops_report(apply_fn, variables["params"], x)
      report.total_flops  # 313_201_664 = 313,196,544 conv + 5,120 dense
    """
    if mask is not None:
        check_same_structure(mask, params, "mask", "params")
    input_shape = np.shape(sample_input)
    if len(input_shape) == 0:
        raise ValueError("sample_input must have a leading batch axis, got a scalar of shape ()")
    names = layer_names(params)
    leaves, treedef = jax.tree.flatten(params)
    shapes = [tuple(np.shape(x)) for x in leaves]
    masks = (
        [None] * len(leaves)
        if mask is None
        else [np.asarray(m).astype(bool, copy=False) for m in jax.tree.leaves(mask)]
    )
    x = _shape_struct(sample_input)
    x = jax.ShapeDtypeStruct((1, *input_shape[1:]), x.dtype)

    def flat_apply(flat_leaves, inputs):
        return apply_fn(jax.tree.unflatten(treedef, flat_leaves), inputs)

    closed = jax.make_jaxpr(flat_apply)([_shape_struct(v) for v in leaves], x)
    env = {var: _Operand(i, None, 1) for i, var in enumerate(closed.jaxpr.invars[: len(leaves)])}
    acc: dict[int, list[int]] = {}
    counter = _Counter(shapes, masks)
    counter.walk(closed.jaxpr, env, acc)

    layers = []
    for leaf, (dense, sparse) in acc.items():
        size = math.prod(shapes[leaf])
        kept = size if masks[leaf] is None else int(np.count_nonzero(masks[leaf]))
        layers.append(LayerCost(names[leaf], int(dense), int(sparse), size, kept))
    total_params = sum(math.prod(s) for s in shapes)
    total_nonzero = total_params if mask is None else sum(int(np.count_nonzero(m)) for m in masks)
    return FlopsReport(
        layers=tuple(layers),
        total_flops=sum(layer.flops for layer in layers),
        total_sparse_flops=sum(layer.sparse_flops for layer in layers),
        total_params=total_params,
        total_nonzero=total_nonzero,
    )


def _positive_flops(value: FlopsReport | numbers.Real, what: str, sparse: bool) -> float:
    if isinstance(value, FlopsReport):
        value = value.total_sparse_flops if sparse else value.total_flops
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ValueError(f"{what} must be a FlopsReport or a positive number, got {value!r}")
    if not value > 0 or math.isinf(value):
        raise ValueError(f"{what} must be positive and finite, got {value!r}")
    return float(value)


def flops_ratio(
    large: FlopsReport | int, small: FlopsReport | int, *, sparse: bool = False
) -> float:
    """Returns ``large / small`` FLOPs (e.g. the dense model's over the pruned model's).

    Args:
      large: a report or a FLOPs count (the numerator).
      small: a report or a FLOPs count (the denominator).
      sparse: use ``total_sparse_flops`` of reports instead of ``total_flops`` (plain numbers are
        used as they are).

    Raises:
      ValueError: if a count is not positive (naming ``large`` or ``small``).
    """
    return _positive_flops(large, "large", sparse) / _positive_flops(small, "small", sparse)


def scratch_b_steps(base_steps: int, flops_large: int, flops_pruned: int, cap: float = 2.0) -> int:
    """Training steps of Liu et al.'s Scratch-B: the large model's budget, capped.

    Scratch-B trains the pruned model from scratch for as much computation as the large model
    got, i.e. ``base_steps * flops_large / flops_pruned`` steps, but at most ``cap`` times the
    large model's steps (Liu et al. double the epochs when the FLOPs shrink by more than 2x).
    The factor is ``min(cap, max(1, flops_large / flops_pruned))``: a pruned model that is not
    cheaper (ratio <= 1) trains for ``base_steps``, never fewer. The result is rounded half up.

    Args:
      base_steps: steps of the large model's training (``>= 0``).
      flops_large: FLOPs of the large (unpruned) model, ``> 0``.
      flops_pruned: FLOPs of the pruned model, ``> 0``.
      cap: the largest multiple of ``base_steps`` allowed, ``>= 1``.

    Returns:
      ``round_half_up(base_steps * factor)``, at least ``base_steps``.

    Raises:
      ValueError: naming the argument, if ``base_steps`` is not a nonnegative int, a FLOPs count
        is not positive, or ``cap`` is below 1 or not finite.
    """
    if isinstance(base_steps, bool) or not isinstance(base_steps, numbers.Integral):
        raise ValueError(f"base_steps must be a nonnegative int, got {base_steps!r}")
    if base_steps < 0:
        raise ValueError(f"base_steps must be a nonnegative int, got {base_steps!r}")
    large = _positive_flops(flops_large, "flops_large", False)
    pruned = _positive_flops(flops_pruned, "flops_pruned", False)
    if isinstance(cap, bool) or not isinstance(cap, numbers.Real) or not 1 <= cap < math.inf:
        raise ValueError(f"cap must be a finite number >= 1, got {cap!r}")
    factor = min(float(cap), max(1.0, large / pruned))
    return max(int(base_steps), math.floor(int(base_steps) * factor + 0.5))
