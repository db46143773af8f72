"""The model of a run: a zoo name or a user factory, and how the engine calls it.

``model.name`` is a zoo name (``jaxprune.models.model_names()``) or an import path
``package.module:factory``. A factory is called as ``factory(num_classes=...,
**model.kwargs)`` and returns a Flax Linen module; an ``nnx.Module`` class or a factory with an
``rngs`` parameter builds an NNX module and is wrapped with ``flax.nnx.bridge.ToLinen`` (its
state then lives in Linen variable collections: ``params``, ``batch_stats``). Models need
neither a ``train`` argument (the engine passes ``train=`` only to modules whose ``__call__``
declares it) nor a linear mode (effective sparsity propagates support through the jaxpr of the
ordinary forward pass).
"""

import dataclasses
import inspect
import sys
from collections.abc import Callable
from typing import Any

import flax.linen as nn
import jax
import ml_collections

from jaxprune import import_path, models

PyTree = Any


def _loaded_nnx() -> Any:
    """``flax.nnx`` if this process has imported it, else None.

    ``flax.nnx`` takes about 0.3 s to import and zoo models are Linen: it is imported only for an
    NNX model, and a class or module can only be NNX if its author imported ``flax.nnx``.
    """
    return sys.modules.get("flax.nnx")


def _builds_nnx(factory: Callable[..., Any]) -> bool:
    """Whether ``factory`` builds an NNX module: an ``nnx.Module`` class, or ``rngs`` by name.

    A factory that only has ``**kwargs`` is a Linen factory: it is called without ``rngs``.
    """
    if isinstance(factory, type):
        nnx = _loaded_nnx()
        return nnx is not None and issubclass(factory, nnx.Module)
    try:
        parameters = inspect.signature(factory).parameters
    except (TypeError, ValueError):
        return False
    return "rngs" in parameters


def build_module(block: ml_collections.ConfigDict, num_classes: int) -> nn.Module:
    """The Linen module of ``config.model`` for ``num_classes`` outputs.

    Raises:
      ValueError: naming ``model.name`` / ``model.width`` when the name cannot be resolved, the
        factory does not return a Flax module, or a width multiplier is set for a user model.
    """
    kwargs = dict(block.get("kwargs", {}) or {})
    if not import_path.is_import_path(block.name):
        try:
            return models.get_model(block.name, num_classes, width=block.width, **kwargs)
        except KeyError as e:
            raise ValueError(f"model.name: {e.args[0]}") from None
    if block.width != 1.0:
        raise ValueError(
            f"model.width scales zoo models only, got model.width={block.width} with "
            f"model.name={block.name!r}; pass your factory's own width through model.kwargs"
        )
    factory = import_path.load(block.name, "model.name")
    if _builds_nnx(factory):
        from flax import nnx  # noqa: PLC0415 - only for NNX models (see _loaded_nnx)

        return nnx.bridge.ToLinen(
            factory, kwargs={"num_classes": num_classes, **kwargs}
        )  # NNX: built inside Linen init/apply
    module = factory(num_classes=num_classes, **kwargs)
    if not isinstance(module, nn.Module):
        raise ValueError(
            f"model.name={block.name!r} returned {type(module).__name__}, not a Flax module; "
            "return a flax.linen.Module, or take rngs= and return an nnx.Module"
        )
    return module


def _takes_train(module: nn.Module) -> bool:
    nnx = _loaded_nnx()
    if nnx is not None and isinstance(module, nnx.bridge.ToLinen):
        abstract = nnx.eval_shape(
            lambda: module.nnx_class(*module.args, **module.kwargs, rngs=nnx.Rngs(0))
        )
        return "train" in inspect.signature(type(abstract).__call__).parameters
    return "train" in inspect.signature(type(module).__call__).parameters


@dataclasses.dataclass(frozen=True)
class ModelFns:
    """A Linen module and the calls the engine makes to it.

    Attributes:
      module: the Linen module (possibly an NNX module wrapped by ``ToLinen``).
      takes_train: whether its ``__call__`` has a ``train`` argument.
    """

    module: nn.Module
    takes_train: bool

    @classmethod
    def of(cls, module: nn.Module) -> "ModelFns":
        """Wraps ``module``, detecting whether it takes ``train=``."""
        return cls(module, _takes_train(module))

    def _mode(self, train: bool) -> dict[str, bool]:
        return {"train": train} if self.takes_train else {}

    def init(self, key: jax.Array, sample: jax.Array) -> PyTree:
        """Initial variables (``{'params': ...}`` plus any other collection) in eval mode."""
        return self.module.init({"params": key}, sample, **self._mode(False))

    def apply(self, variables: PyTree, x: jax.Array, *, train: bool = False, **kwargs: Any):
        """``module.apply`` with ``train=`` passed only to modules that take it."""
        return self.module.apply(variables, x, **self._mode(train), **kwargs)

    def eval_apply(self, batch_stats: PyTree) -> Callable[[PyTree, jax.Array], jax.Array]:
        """``apply_fn(params, images) -> logits`` in eval mode with fixed ``batch_stats``."""

        def apply_fn(params: PyTree, x: jax.Array) -> jax.Array:
            variables = {"params": params}
            if jax.tree.leaves(batch_stats):
                variables["batch_stats"] = batch_stats
            return self.apply(variables, x, train=False)

        return apply_fn

    def linear_apply(self) -> Callable[[PyTree, jax.Array], jax.Array] | None:
        """The zoo's linear mode (SynFlow on the linearised net), or None without one."""
        if "linear" not in getattr(type(self.module), "__dataclass_fields__", {}):
            return None
        linear = self.module.clone(linear=True)
        return lambda params, x: linear.apply({"params": params}, x)
