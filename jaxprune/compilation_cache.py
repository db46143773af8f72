"""JAX's persistent compilation cache, on for jaxprune's command line and available to any caller.

Compiling a train step, an eval step and a model init takes seconds on CPU, and a new process
(a run, a notebook kernel, a sweep point) would pay that again for the same programs. JAX can keep
compiled programs on disk, keyed by the program and the machine; a cached program is loaded in
milliseconds and gives the same results as a fresh compile. ``python -m jaxprune.main`` turns the
cache on; from Python (a notebook, your own loop) call ``jp.enable_compilation_cache()``.
"""

from __future__ import annotations

import os

import jax

ENV = "JAXPRUNE_COMPILATION_CACHE"
DEFAULT = "~/.cache/jaxprune/xla"
_OFF = ("", "0", "off", "none")


def enable_compilation_cache(path: str | os.PathLike[str] | None = None) -> str | None:
    """Turns on JAX's persistent compilation cache for this process.

    Every program is cached, however quick its compilation (JAX's default skips those under one
    second, which is most of a small model's programs).

    Args:
      path: the cache folder; ``None`` reads ``$JAXPRUNE_COMPILATION_CACHE``, else
        ``~/.cache/jaxprune/xla``. ``"off"`` (or ``"0"``, ``"none"``, ``""``) leaves the cache
        off.

    Returns:
      The folder in use, or ``None`` when the cache stays off.
    """
    value = os.fspath(path) if path is not None else os.environ.get(ENV, DEFAULT)
    if value.strip().lower() in _OFF:
        return None
    folder = os.path.expanduser(value)
    jax.config.update("jax_compilation_cache_dir", folder)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
    return folder
