"""Objects named by an import path ``package.module:attribute`` (user models and scores).

Configs name user code the way entry points do: ``model.name = "my_lab.nets:mixer"``,
``pruning.score = "my_lab.scores:movement"``. The module is imported with ``importlib`` (so it
must be importable: installed, or on ``PYTHONPATH``), and the attribute may be dotted
(``module:Class.factory``).
"""

import importlib
from typing import Any


def is_import_path(name: Any) -> bool:
    """Whether ``name`` looks like ``package.module:attribute``."""
    return isinstance(name, str) and ":" in name


def load(path: str, field: str) -> Any:
    """Imports the object named by ``path``.

    Args:
      path: ``package.module:attribute`` (attribute may be dotted).
      field: the config field or argument holding ``path``, for error messages.

    Returns:
      The object.

    Raises:
      ValueError: naming ``field`` and ``path`` when the path is malformed, the module cannot be
        imported, the attribute is missing, or the object is not callable.
    """
    module_name, _, attribute = path.partition(":")
    if not module_name or not attribute or ":" in attribute:
        raise ValueError(f"{field} must look like 'package.module:function', got {path!r}")
    try:
        module = importlib.import_module(module_name)
    except ImportError as e:
        raise ValueError(
            f"{field}={path!r}: cannot import module {module_name!r} ({e}); install it or add "
            "its directory to PYTHONPATH"
        ) from e
    obj: Any = module
    for part in attribute.split("."):
        if not hasattr(obj, part):
            raise ValueError(f"{field}={path!r}: module {module_name!r} has no {attribute!r}")
        obj = getattr(obj, part)
    if not callable(obj):
        raise ValueError(f"{field}={path!r} is not callable (got {type(obj).__name__})")
    return obj
