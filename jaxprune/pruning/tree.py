"""Pytree helpers shared by the pruning core: layer names, prunable leaves, layer order.

Layer names are '/'-joined key paths (``'Dense_0/kernel'``), listed in ``jax.tree.flatten`` order.
A leaf is *prunable* by default iff the last part of its name is ``kernel`` and it has
``ndim >= 2``: the kernels of Dense, Conv, DenseGeneral and Einsum layers. Everything else is not
prunable: embeddings (``embedding``), learned positional embeddings, biases of any rank (the 2-D
biases of ``DenseGeneral`` attention projections too), norm scales and scalars. A rank test alone
would prune 2-D biases and embedding tables, which Global MP then empties first. Call
:func:`describe` to see which leaves of a params tree are prunable before pruning it.

The ``prunable=`` argument accepted across the library overrides the rule:

* ``None``: the default rule above (:func:`is_kernel`);
* a callable ``(name, leaf) -> bool``;
* a regular expression (``str``) or a sequence of them: a leaf is prunable iff its name matches
  one of them (``re.search``).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from typing import Any

import jax
import numpy as np

PyTree = Any
Prunable = None | str | Sequence[str] | Callable[[str, Any], bool]


def _key_name(entry: Any) -> str:
    for attr in ("key", "name", "idx"):
        if hasattr(entry, attr):
            return str(getattr(entry, attr))
    return str(entry)


def path_name(path: Sequence[Any]) -> str:
    """Joins a ``jax.tree_util`` key path into a layer name such as ``'Conv_0/kernel'``."""
    return "/".join(_key_name(entry) for entry in path)


def named_leaves(tree: PyTree) -> list[tuple[str, Any]]:
    """Returns ``(name, leaf)`` pairs in ``jax.tree.flatten`` order."""
    with_path, _ = jax.tree_util.tree_flatten_with_path(tree)
    return [(path_name(path), leaf) for path, leaf in with_path]


def layer_names(tree: PyTree) -> list[str]:
    """Returns the name of every leaf of ``tree`` in flatten order."""
    return [name for name, _ in named_leaves(tree)]


def is_kernel(name: str, leaf: Any) -> bool:
    """The default prunable rule: the name ends in ``kernel`` and the leaf has ``ndim >= 2``.

    Args:
      name: the '/'-joined layer name, e.g. ``'MultiHeadDotProductAttention_0/query/kernel'``.
      leaf: the array (or anything with a ``shape``).
    """
    return name.rsplit("/", 1)[-1] == "kernel" and len(np.shape(leaf)) >= 2


def prunable_predicate(prunable: Prunable = None) -> Callable[[str, Any], bool]:
    """Turns a ``prunable=`` argument into a predicate ``(name, leaf) -> bool``.

    Raises:
      TypeError: if ``prunable`` is none of the accepted forms.
      re.error: if a pattern is not a valid regular expression.
    """
    if prunable is None:
        return is_kernel
    if callable(prunable):
        return prunable
    if isinstance(prunable, str):
        prunable = [prunable]
    if isinstance(prunable, Sequence) and all(isinstance(p, str) for p in prunable):
        patterns = [re.compile(p) for p in prunable]
        return lambda name, leaf: any(p.search(name) for p in patterns)
    raise TypeError(
        f"prunable must be None, a callable, a regex or a list of regexes, got {prunable!r}"
    )


def prunable_flags(tree: PyTree, prunable: Prunable = None) -> list[bool]:
    """Returns one bool per leaf (flatten order): whether that leaf is prunable."""
    predicate = prunable_predicate(prunable)
    return [bool(predicate(name, leaf)) for name, leaf in named_leaves(tree)]


def prunable_names(tree: PyTree, prunable: Prunable = None) -> list[str]:
    """Returns the names of the prunable leaves of ``tree`` in flatten order."""
    flags = prunable_flags(tree, prunable)
    return [name for name, flag in zip(layer_names(tree), flags, strict=True) if flag]


def _dtype_name(leaf: Any) -> str:
    dtype = getattr(leaf, "dtype", None)
    return str(dtype) if dtype is not None else type(leaf).__name__


def _describe_rows(params: PyTree, prunable: Prunable) -> list[tuple[str, str, str, int, bool]]:
    """``(name, shape, dtype, size, prunable)`` for every leaf, in flatten order."""
    flags = prunable_flags(params, prunable)
    return [
        (name, str(tuple(np.shape(leaf))), _dtype_name(leaf), int(np.prod(np.shape(leaf))), flag)
        for (name, leaf), flag in zip(named_leaves(params), flags, strict=True)
    ]


def describe(params: PyTree, prunable: Prunable = None) -> str:
    """A readable table of the leaves of ``params`` and whether each is prunable.

    One line per leaf (flatten order): name, shape, dtype, number of entries and ``yes`` / ``no``
    for prunable, then a total line: prunable leaves over all leaves and prunable entries over all
    entries. Print it before pruning to check what the default rule (or ``prunable=``) selects::

        print(jp.describe(variables["params"]))

    Args:
      params: any pytree of arrays.
      prunable: which leaves are prunable (see the module docstring); None is the default rule.

    Returns:
      The table as one string (no trailing newline).
    """
    rows = _describe_rows(params, prunable)
    header = ("name", "shape", "dtype", "size", "prunable")
    cells = [header] + [
        (n, shape, d, f"{size:,}", "yes" if f else "no") for n, shape, d, size, f in rows
    ]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    lines = [
        "  ".join(
            cell.rjust(width) if i == 3 else cell.ljust(width)
            for i, (cell, width) in enumerate(zip(row, widths, strict=True))
        ).rstrip()
        for row in cells
    ]
    n_prunable = sum(1 for row in rows if row[4])
    size_prunable = sum(row[3] for row in rows if row[4])
    size_all = sum(row[3] for row in rows)
    share = 100.0 * size_prunable / size_all if size_all else 0.0
    lines.append(
        f"prunable: {n_prunable} of {len(rows)} leaves, "
        f"{size_prunable:,} of {size_all:,} entries ({share:.2f}%)"
    )
    return "\n".join(lines)


def natural_key(name: str) -> list[Any]:
    """Sort key that orders ``Conv_2`` before ``Conv_10`` (digits compared as numbers)."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", name)]


def ordered_names(names: Sequence[str], order: Sequence[str] | None = None) -> list[str]:
    """Orders layer names by ``order`` if given, else by natural sort.

    Args:
      names: the layer names to order (e.g. the prunable ones).
      order: the forward-pass order (from ``jp.layer_order``); names missing from it are an error.

    Raises:
      ValueError: if ``order`` misses some of ``names``.
    """
    if order is None:
        return sorted(names, key=natural_key)
    position = {name: i for i, name in enumerate(order)}
    missing = [name for name in names if name not in position]
    if missing:
        raise ValueError(f"order is missing layers {missing}; it has {list(order)}")
    return sorted(names, key=position.__getitem__)


def check_same_structure(tree: PyTree, reference: PyTree, what: str, reference_what: str) -> None:
    """Raises ``ValueError`` if two pytrees differ in structure or leaf shapes.

    The message names the first leaf where they differ. Works on traced leaves (only static
    shapes are read).

    Args:
      tree: the tree to check (e.g. a mask).
      reference: the tree it must match (e.g. params).
      what: a name for ``tree`` used in the message.
      reference_what: a name for ``reference`` used in the message.
    """
    names = layer_names(tree)
    reference_names = layer_names(reference)
    if jax.tree.structure(tree) != jax.tree.structure(reference):
        pairs = zip(names, reference_names, strict=False)
        first = next(
            (i for i, (a, b) in enumerate(pairs) if a != b),
            min(len(names), len(reference_names)),
        )
        if first < len(names) or first < len(reference_names):
            here = repr(names[first]) if first < len(names) else "nothing"
            there = repr(reference_names[first]) if first < len(reference_names) else "nothing"
            where = (
                f"first mismatch at leaf {first}: {what} has {here}, {reference_what} has {there}"
            )
        else:
            where = (
                f"the leaf paths agree but the containers differ: {jax.tree.structure(tree)} "
                f"vs {jax.tree.structure(reference)}"
            )
        extra = sorted(set(names) - set(reference_names))
        missing = sorted(set(reference_names) - set(names))
        raise ValueError(
            f"{what} does not have the structure of {reference_what}: {where} "
            f"(extra leaves {extra}, missing leaves {missing})"
        )
    for name, leaf, ref in zip(
        names, jax.tree.leaves(tree), jax.tree.leaves(reference), strict=True
    ):
        shape, ref_shape = np.shape(leaf), np.shape(ref)
        if shape != ref_shape:
            raise ValueError(
                f"{what}[{name!r}] has shape {shape}, but {reference_what}[{name!r}] has "
                f"shape {ref_shape}"
            )
