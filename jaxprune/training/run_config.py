"""``config.json`` of a run and the check that a resumed run uses the same config.

Fields that cannot change the trained weights (logging/eval/checkpoint cadence, the tfds data
directory, the debug stop step) may differ between the original run and a resumed one; any
other difference refuses to resume and names the fields. ``config_hash`` digests the same
fields (the run marker of ``workdir.py`` stores it); ``config.json`` is written atomically.
"""

import hashlib
import json
from pathlib import Path
from typing import Any

import ml_collections

from jaxprune.training import workdir as workdir_lib

# Dotted config fields that do not affect the result of training.
IGNORED_ON_RESUME = frozenset(
    {
        "training.log_every",
        "training.eval_every",
        "training.checkpoint_every",
        "training.keep_checkpoints",
        "dataset.data_dir",
        "debug.stop_at_step",
        "training.divergence_factor",
        "training.tensorboard",
        "training.plots",
        "mesh.data",
        "mesh.model",
    }
)


def config_to_dict(config: ml_collections.ConfigDict) -> dict[str, Any]:
    """Plain JSON-compatible dict of ``config`` (tuples become lists)."""
    return json.loads(config.to_json())


def _flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    flat = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(_flatten(value, name + "."))
        else:
            flat[name] = value
    return flat


def _canonical(value: Any) -> Any:
    """``value`` with integral floats as ints, so that values equal under ``==`` hash equal."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, list | tuple):
        return [_canonical(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _canonical(v) for k, v in value.items()}
    return value


def config_hash(config_dict: dict[str, Any]) -> str:
    """``'sha256:<hex>'`` of the fields of ``config_dict`` that matter for the result.

    Fields in ``IGNORED_ON_RESUME`` are left out, and key order does not matter, so two configs
    hash equal exactly when ``config_differences`` finds nothing between them (up to ``1 == 1.0``
    style equalities, which hash equal too).

    Args:
      config_dict: a config as a (nested) JSON-compatible dict (``config_to_dict``).
    """
    flat = {
        name: _canonical(value)
        for name, value in _flatten(config_dict).items()
        if name not in IGNORED_ON_RESUME
    }
    text = json.dumps(flat, sort_keys=True, separators=(",", ":"), default=repr)
    return "sha256:" + hashlib.sha256(text.encode("utf-8")).hexdigest()


def config_differences(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """Fields that matter and differ between two config dicts, as 'field: old -> new'."""
    old_flat, new_flat = _flatten(old), _flatten(new)
    missing = object()
    diffs = []
    for name in sorted(old_flat.keys() | new_flat.keys()):
        if name in IGNORED_ON_RESUME:
            continue
        a, b = old_flat.get(name, missing), new_flat.get(name, missing)
        if a != b:
            show = lambda v: "<absent>" if v is missing else repr(v)  # noqa: E731
            diffs.append(f"{name}: {show(a)} -> {show(b)}")
    return diffs


def check_same_config(stored: dict[str, Any], config_dict: dict[str, Any], where: str) -> None:
    """Raises ValueError if ``stored`` and ``config_dict`` differ in a field that matters.

    Args:
      stored: the config dict of the existing run.
      config_dict: the config dict of this invocation.
      where: what ``stored`` came from, for the message.
    """
    diffs = config_differences(stored, config_dict)
    if diffs:
        raise ValueError(
            f"refusing to resume: the config differs from {where} in "
            + "; ".join(diffs)
            + ". Use another --workdir, or restore the original config."
        )


def write_or_check_config(
    workdir: str | Path, config_dict: dict[str, Any], *, write: bool = True
) -> None:
    """Writes ``workdir/config.json``, or checks it against ``config_dict`` if it exists.

    ``write=False`` (processes other than 0 of a multi-process run) only checks.

    Raises:
      ValueError: if an existing ``config.json`` differs in a field that matters, or is not
        valid JSON.
    """
    path = Path(workdir) / "config.json"
    if path.exists():
        try:
            stored = json.loads(path.read_text())
        except json.JSONDecodeError as e:
            raise ValueError(f"{path} is not valid JSON ({e}); cannot resume this run") from e
        check_same_config(stored, config_dict, str(path))
    if write:
        text = json.dumps(config_dict, indent=2, sort_keys=True) + "\n"
        workdir_lib.atomic_write_text(path, text)
