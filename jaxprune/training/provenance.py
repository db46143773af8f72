"""Where a result came from: package versions, devices and the jaxprune git commit.

``provenance()`` returns a JSON-ready dict for ``summary.json``::

    {"versions": {"jaxprune": "0.1.0", "jax": "0.10.2", "jaxlib": "0.10.2", "flax": "0.12.8",
                  "optax": "0.2.8", "orbax-checkpoint": "0.12.8", "numpy": "2.4.6",
                  "python": "3.11.7"},
     "devices": {"platform": "cpu", "kind": "cpu", "count": 1, "local_count": 1,
                 "process_count": 1},
     "git": {"commit": "4bf1da7...", "dirty": False}}

Versions are those of the installed distributions (``importlib.metadata``), None for one that
is not installed. jaxprune run from a source checkout without being installed (``PYTHONPATH=.``)
falls back to ``jaxprune.__version__`` if it has one, then to the ``version`` of the
``pyproject.toml`` beside the package.

``git`` describes the checkout that holds the imported ``jaxprune`` package (not the current
directory): ``commit`` is ``git rev-parse HEAD`` and ``dirty`` whether a tracked file differs
from it (``git status --porcelain --untracked-files=no``: run folders and other untracked files
inside the checkout do not count). It is None when git is missing, times out, the package is not
inside a git work tree, or its files are not tracked there (an installed copy in a virtual
environment that lies inside some repository). Nothing here raises: a value that cannot be found
is None.
"""

from __future__ import annotations

import importlib.metadata
import os
import platform
import subprocess
import tomllib
from pathlib import Path
from typing import Any

import jaxprune

# Distributions whose versions are recorded (``importlib.metadata`` names).
DISTRIBUTIONS = ("jaxprune", "jax", "jaxlib", "flax", "optax", "orbax-checkpoint", "numpy")
# Seconds each git command may take (a network file system or a huge repository can hang).
GIT_TIMEOUT_S = 5.0

_PACKAGE_DIR = Path(jaxprune.__file__).resolve().parent


def provenance() -> dict[str, Any]:
    """Versions, devices and the git commit of the jaxprune source (see the module docstring).

    Returns:
      ``{"versions": {distribution: str | None, ..., "python": str}, "devices": {"platform",
      "kind", "count", "local_count", "process_count"} | None, "git": {"commit": str, "dirty":
      bool} | None}``.
    """
    versions = {name: _distribution_version(name) for name in DISTRIBUTIONS}
    if versions["jaxprune"] is None:
        versions["jaxprune"] = _source_version(_PACKAGE_DIR)
    versions["python"] = platform.python_version()
    return {"versions": versions, "devices": _devices(), "git": git_info(_PACKAGE_DIR)}


def git_info(directory: str | os.PathLike) -> dict[str, Any] | None:
    """``{"commit": HEAD, "dirty": bool}`` of the git checkout holding ``directory``, or None.

    None when git is missing or fails or times out, ``directory`` is not in a work tree, or
    nothing in ``directory`` is tracked (an ignored copy, e.g. in a virtual environment).
    """
    directory = Path(directory)
    if not directory.is_dir():
        return None
    commit = _git(directory, "rev-parse", "--verify", "HEAD")
    if not commit or _git(directory, "ls-files", "--", ".") in (None, ""):
        return None
    status = _git(directory, "status", "--porcelain", "--untracked-files=no")
    return {"commit": commit, "dirty": None if status is None else bool(status)}


def _git(directory: Path, *args: str) -> str | None:
    """Stripped stdout of ``git args`` run in ``directory``; None on any failure."""
    env = {**os.environ, "GIT_OPTIONAL_LOCKS": "0", "LC_ALL": "C"}  # status takes no lock
    try:
        done = subprocess.run(
            ["git", *args],
            cwd=directory,
            env=env,
            capture_output=True,
            text=True,
            timeout=GIT_TIMEOUT_S,
            check=False,
        )
    except (OSError, subprocess.SubprocessError, ValueError):
        return None
    return done.stdout.strip() if done.returncode == 0 else None


def _distribution_version(name: str) -> str | None:
    try:
        return importlib.metadata.version(name)
    except (importlib.metadata.PackageNotFoundError, ValueError):
        return None


def _source_version(package_dir: Path) -> str | None:
    """``jaxprune.__version__``, else ``project.version`` of ``pyproject.toml`` beside it."""
    version = getattr(jaxprune, "__version__", None)
    if isinstance(version, str):
        return version
    try:
        with open(package_dir.parent / "pyproject.toml", "rb") as f:
            project = tomllib.load(f).get("project", {})
    except (OSError, tomllib.TOMLDecodeError):
        return None
    if project.get("name") != "jaxprune" or not isinstance(project.get("version"), str):
        return None
    return project["version"]


def _devices() -> dict[str, Any] | None:
    """Platform, kind and counts of the JAX devices; None if the backend cannot start."""
    try:
        import jax

        devices = jax.devices()
        return {
            "platform": devices[0].platform,
            "kind": devices[0].device_kind,
            "count": jax.device_count(),
            "local_count": jax.local_device_count(),
            "process_count": jax.process_count(),
        }
    except Exception:  # noqa: BLE001 - provenance never fails a run
        return None
