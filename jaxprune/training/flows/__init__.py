"""The flow registry: ``config.flow`` names one of these; a notebook can add its own.

    from jaxprune.training import flows

    @flows.register
    class Warmstart(flows.Flow):
        name = "warmstart"
        def phases(self, config, steps_per_epoch):
            return [flows.training_phase("dense", config, 0, steps_per_epoch, prune=False)]

Built-in flows: ``dense``, ``prune_finetune``, ``prune_at_init``, ``gradual``, ``iterative``,
``scratch_e``, ``scratch_b`` (each in its own module here).
"""

from jaxprune.training.flows.base import Flow, Phase, PhaseStart, phase_steps, training_phase

_REGISTRY: dict[str, Flow] = {}


def register(cls: type[Flow] | None = None, *, overwrite: bool = True):
    """Class decorator: registers an instance of ``cls`` under ``cls.name``.

    Re-registering a name replaces the old flow (re-running a notebook cell works); pass
    ``overwrite=False`` to make that an error instead.
    """

    def decorator(flow_cls: type[Flow]) -> type[Flow]:
        name = getattr(flow_cls, "name", "")
        if not isinstance(name, str) or not name:
            raise ValueError(f"flow class {flow_cls.__name__} needs a non-empty `name`")
        if not overwrite and name in _REGISTRY:
            raise ValueError(f"flow {name!r} is already registered")
        _REGISTRY[name] = flow_cls()
        return flow_cls

    return decorator if cls is None else decorator(cls)


def get(name: str) -> Flow:
    """The registered flow ``name``.

    Raises:
      ValueError: naming ``flow`` and the known flows.
    """
    if name not in _REGISTRY:
        raise ValueError(f"flow must be one of {names()}, got {name!r}")
    return _REGISTRY[name]


def names() -> list[str]:
    """Registered flow names, sorted."""
    return sorted(_REGISTRY)


# Built-in flows register themselves on import.
from jaxprune.training.flows import (  # noqa: E402,F401
    dense,
    gradual,
    iterative,
    prune_at_init,
    prune_finetune,
    scratch,
)

__all__ = [
    "Flow",
    "Phase",
    "PhaseStart",
    "get",
    "names",
    "phase_steps",
    "register",
    "training_phase",
]
