"""Orbax checkpoints of a run, with validation before anything is restored.

A checkpoint at step ``t`` holds two or three items:

* ``state``: the whole ``TrainState`` (params, batch stats, optimizer state with the masks, step,
  rng), restored against an abstract state built from the current config;
* ``meta``: JSON with the flow phase the state belongs to and the run config;
* ``carry`` (only when a flow keeps one): arrays the flow needs later, e.g. the lottery rewind
  weights of ``flow='iterative'``.

The data order needs no state of its own: the batch at global step ``t`` is a pure function of
``(seed, t)``, so restoring the step restores the data position.

Nothing here ever silently starts from scratch: a checkpoint that cannot be read, belongs to a
different config, or whose arrays do not match the model raises ``CheckpointError`` naming the
step directory and the problem.
"""

from pathlib import Path
from typing import Any

import jax
import orbax.checkpoint as ocp

PyTree = Any


_FIX = ". Delete that step directory to resume from an older checkpoint, or use another --workdir."


def _short(error: Exception, limit: int = 300) -> str:
    text = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    return text if len(text) <= limit else text[:limit] + "..."


class CheckpointError(RuntimeError):
    """A checkpoint exists but cannot be used to resume this run."""


def _path_name(path: tuple) -> str:
    parts = []
    for key in path:
        for attr in ("key", "name", "idx"):
            if hasattr(key, attr):
                parts.append(str(getattr(key, attr)))
                break
        else:
            parts.append(str(key))
    return "/".join(parts)


def _shapes(tree: PyTree) -> dict[str, tuple[tuple[int, ...], str]]:
    leaves = jax.tree_util.tree_flatten_with_path(tree)[0]
    return {_path_name(path): (tuple(leaf.shape), str(leaf.dtype)) for path, leaf in leaves}


def _describe_mismatch(
    field: str, stored: dict[str, tuple], expected: dict[str, tuple], limit: int = 5
) -> list[str]:
    def show(shape_dtype):
        shape, dtype = shape_dtype
        return f"{dtype}{list(shape)}"

    problems = []
    for name in sorted(expected.keys() - stored.keys())[:limit]:
        problems.append(f"{field}/{name} is missing")
    for name in sorted(stored.keys() - expected.keys())[:limit]:
        problems.append(f"{field}/{name} is not in the model")
    for name in sorted(expected.keys() & stored.keys()):
        if stored[name] != expected[name]:
            problems.append(
                f"{field}/{name} is {show(stored[name])} in the checkpoint but the model has "
                f"{show(expected[name])}"
            )
    return problems[: 3 * limit]


class Checkpointer:
    """Thin wrapper over ``ocp.CheckpointManager`` for a run directory.

    Args:
      directory: ``workdir/checkpoints``; created if missing.
      keep: how many checkpoints to keep.
    """

    def __init__(self, directory: str | Path, *, keep: int = 2):
        self.directory = Path(directory).absolute()
        self._manager = ocp.CheckpointManager(
            self.directory,
            options=ocp.CheckpointManagerOptions(max_to_keep=keep, create=True),
            item_handlers={
                "state": ocp.StandardCheckpointHandler(),
                "meta": ocp.JsonCheckpointHandler(),
                "carry": ocp.StandardCheckpointHandler(),
            },
        )

    def latest_step(self) -> int | None:
        """The newest complete checkpoint's step, or None when there is none."""
        return self._manager.latest_step()

    def save(
        self, step: int, state: PyTree, meta: dict[str, Any], carry: PyTree | None = None
    ) -> None:
        """Saves ``state``, JSON ``meta`` and ``carry`` at ``step`` (asynchronously; ``wait``)."""
        if step in self._manager.all_steps():
            return
        items = {"state": ocp.args.StandardSave(state), "meta": ocp.args.JsonSave(meta)}
        if carry:
            items["carry"] = ocp.args.StandardSave(carry)
        self._manager.save(step, args=ocp.args.Composite(**items), force=True)

    def restore_carry(self, step: int) -> dict[str, PyTree]:
        """The ``carry`` item at ``step`` as host arrays (an empty dict when there is none).

        Raises:
          CheckpointError: if it exists but cannot be read.
        """
        if not (self.directory / str(step) / "carry").exists():
            return {}
        try:
            restored = self._manager.restore(
                step, args=ocp.args.Composite(carry=ocp.args.StandardRestore())
            )
        except Exception as e:  # noqa: BLE001
            raise CheckpointError(
                f"checkpoint {self.directory / str(step)} is corrupt, its carry item could not "
                f"be read: {_short(e)}{_FIX}"
            ) from e
        return jax.device_get(dict(restored["carry"]))

    def wait(self) -> None:
        """Blocks until pending saves are on disk."""
        self._manager.wait_until_finished()

    def restore_meta(self, step: int) -> dict[str, Any]:
        """The JSON meta of the checkpoint at ``step``.

        Raises:
          CheckpointError: if it cannot be read.
        """
        try:
            restored = self._manager.restore(
                step, args=ocp.args.Composite(meta=ocp.args.JsonRestore())
            )
            meta = restored["meta"]
        except Exception as e:  # noqa: BLE001 - any read failure means a corrupt checkpoint
            raise CheckpointError(
                f"checkpoint {self.directory / str(step)} is unreadable (meta): {_short(e)}{_FIX}"
            ) from e
        if not isinstance(meta, dict) or "phase" not in meta:
            raise CheckpointError(
                f"checkpoint {self.directory / str(step)} has no flow phase in its meta; it was "
                "not written by jaxprune. Use another --workdir."
            )
        return meta

    def restore_state(self, step: int, abstract_state: PyTree) -> PyTree:
        """Restores the state at ``step`` into the structure/shardings of ``abstract_state``.

        Args:
          step: checkpoint step.
          abstract_state: a state of ``jax.ShapeDtypeStruct`` (with shardings) like the one
            the run would create.

        Returns:
          The restored state.

        Raises:
          CheckpointError: if the stored arrays do not match ``abstract_state`` (the message lists
            the differing leaves) or the checkpoint cannot be read.
        """
        where = self.directory / str(step)
        try:
            item = self._manager.item_metadata(step)["state"]
        except Exception as e:  # noqa: BLE001
            raise CheckpointError(
                f"checkpoint {where} is unreadable (state metadata): {_short(e)}{_FIX}"
            ) from e
        if item is None or getattr(item, "tree", None) is None:
            raise CheckpointError(
                f"checkpoint {where} is corrupt: its state metadata is missing or unreadable{_FIX}"
            )
        stored_tree = item.tree
        for field in ("params", "batch_stats"):
            stored = _shapes(stored_tree.get(field, {}) if isinstance(stored_tree, dict) else {})
            expected = _shapes(getattr(abstract_state, field))
            problems = _describe_mismatch(field, stored, expected)
            if problems:
                raise CheckpointError(
                    f"checkpoint {where} does not match the configured model: "
                    + "; ".join(problems)
                    + ". It belongs to another model/config; use another --workdir."
                )
        try:
            restored = self._manager.restore(
                step, args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract_state))
            )
        except Exception as e:  # noqa: BLE001
            raise CheckpointError(
                f"checkpoint {where} is corrupt, its arrays could not be read: {_short(e)}{_FIX}"
            ) from e
        return restored["state"]

    def close(self) -> None:
        """Waits for pending saves and releases the manager."""
        self._manager.wait_until_finished()
        self._manager.close()
