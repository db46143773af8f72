"""Pytree helpers shared by the pruning core: layer names, prunable leaves, layer order.

Layer names are '/'-joined key paths (``'Dense_0/kernel'``), listed in ``jax.tree.flatten`` order.
A leaf is *prunable* by default iff ``leaf.ndim >= 2`` (Dense and Conv kernels); biases, norm
scales and scalars are not. The ``prunable=`` argument accepted across the library overrides it:

* ``None``: the default rule above;
* a callable ``(name, leaf) -> bool``;
* a regular expression (``str``) or a sequence of them: a leaf is prunable iff its name matches
  one of them (``re.search``).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from typing import Any

import jax

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


def prunable_predicate(prunable: Prunable = None) -> Callable[[str, Any], bool]:
    """Turns a ``prunable=`` argument into a predicate ``(name, leaf) -> bool``.

    Raises:
      TypeError: if ``prunable`` is none of the accepted forms.
      re.error: if a pattern is not a valid regular expression.
    """
    if prunable is None:
        return lambda name, leaf: getattr(leaf, "ndim", 0) >= 2
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

    Args:
      tree: the tree to check (e.g. a mask).
      reference: the tree it must match (e.g. params).
      what: a name for ``tree`` used in the message.
      reference_what: a name for ``reference`` used in the message.
    """
    names = layer_names(tree)
    reference_names = layer_names(reference)
    if jax.tree.structure(tree) != jax.tree.structure(reference):
        extra = sorted(set(names) - set(reference_names))
        missing = sorted(set(reference_names) - set(names))
        raise ValueError(
            f"{what} does not have the structure of {reference_what}: "
            f"extra leaves {extra}, missing leaves {missing}"
        )
    for name, leaf, ref in zip(
        names, jax.tree.leaves(tree), jax.tree.leaves(reference), strict=True
    ):
        if getattr(leaf, "shape", ()) != getattr(ref, "shape", ()):
            raise ValueError(
                f"{what}[{name!r}] has shape {getattr(leaf, 'shape', ())}, "
                f"but {reference_what}[{name!r}] has shape {getattr(ref, 'shape', ())}"
            )
