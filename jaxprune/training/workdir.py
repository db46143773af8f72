"""The run directory (``--workdir``): what it may hold, who may write it, how files are written.

A workdir is either missing or empty (a new run), or a jaxprune run, recognised by its marker
``jaxprune_run.json`` (run id, config hash, jaxprune version, creation time). Anything else is
refused before a single byte is written, with the first few entries it holds named in the
message: nothing a user wrote is ever truncated or overwritten. A marker whose config hash
(``run_config.config_hash``: only the fields that change the result) differs from this run's
config is refused too, with the differing fields when ``config.json`` is there to diff against.
A directory written before markers existed (only run outputs, among them a ``config.json`` of the
same config) is adopted: its marker is written and the run resumes. ``restart=True``
(``--restart``) starts over in a run that has no checkpoint to resume: its outputs are deleted
and a new run id is written (the config may differ); a run with a checkpoint just resumes.

One process per workdir: ``open_workdir`` holds an exclusive ``fcntl.flock`` on ``.lock`` in the
workdir for as long as the run lasts and writes ``{"pid", "host", "started"}`` into it. A
second process gets ``RunLockedError`` naming the holder. The OS drops a flock when its process
dies, so a lock file left by a killed run holds no lock: the next run takes it over. The lock
file itself is never deleted (deleting it would let two processes lock two different files);
a clean exit empties it. Locks are held by the open file, so a process forked by the run (not
exec'd) and still alive keeps the workdir locked after the run itself died.

Every file a run writes as a whole (``config.json``, ``summary.json``, the marker, plots,
``metrics.jsonl`` when resuming truncates it) goes through ``atomic_write_bytes``: a temporary
file in the same directory, fsynced, then ``os.replace`` and an fsync of the directory, so a
reader or a crash sees the old file or the new one, never a mix.
"""

import contextlib
import dataclasses
import datetime
import errno
import fcntl
import importlib.metadata
import json
import os
import shutil
import socket
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from absl import logging

from jaxprune.training import run_config

MARKER = "jaxprune_run.json"
LOCK = ".lock"
# What a run writes at the top of its workdir (what a restart deletes, in this order).
RUN_ENTRIES = (
    "checkpoints",
    "summary.json",
    "metrics.jsonl",
    "plots",
    "tensorboard",
    "config.json",
)
_SHOW = 5  # entries named in a refusal


class WorkdirError(ValueError):
    """The workdir holds something that is not this run: refused, nothing written."""


class RunLockedError(RuntimeError):
    """Another process holds the workdir's lock."""


@dataclasses.dataclass(frozen=True)
class RunDir:
    """An opened workdir.

    Attributes:
      path: the run directory.
      run_id: the run's id (a uuid4 hex string) from its marker; None when not the writer.
      new: True for a new (or restarted) run, False for one being resumed; None when not
        the writer (nothing was read).
      is_writer: whether this process validated, locked and may write the workdir.
    """

    path: Path
    run_id: str | None
    new: bool | None
    is_writer: bool = True


def check_workdir_path(path: str | os.PathLike | None) -> Path:
    """The workdir as a ``Path``; refuses an empty path and an existing non-directory.

    Args:
      path: the ``--workdir`` value.

    Returns:
      ``Path(path)``.

    Raises:
      ValueError: for None, an empty or whitespace-only string (an unset shell variable would
        otherwise write the run into the current directory), or a path naming a file.
    """
    if path is None or not str(os.fspath(path)).strip():
        raise ValueError(
            f"--workdir (workdir) is empty ({path!r}): pass the run directory, e.g. "
            "--workdir=runs/lenet300 (an unset shell variable expands to nothing)"
        )
    workdir = Path(path)
    if workdir.exists() and not workdir.is_dir():
        raise ValueError(f"--workdir {str(workdir)!r} is an existing file, not a directory")
    return workdir


# ---- atomic writes ----------------------------------------------------------------------------


def fsync_dir(path: str | os.PathLike) -> None:
    """Fsyncs directory ``path`` so that renames and new entries in it survive a power loss."""
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        os.fsync(fd)
    except OSError as e:  # some filesystems cannot fsync a directory; the data file is synced
        if e.errno not in (errno.EINVAL, errno.ENOTSUP, errno.EBADF):
            raise
    finally:
        os.close(fd)


def atomic_write_bytes(path: str | os.PathLike, data: bytes, *, fsync: bool = True) -> Path:
    """Replaces ``path`` with ``data`` atomically: readers see the old or the new file.

    The data goes to ``.<name>.<random>.tmp`` in the same directory (created with the usual
    permissions, umask applied), is fsynced, then renamed over ``path``; the directory is
    fsynced after the rename. The parent directory is created if missing.

    Args:
      path: the file to write.
      data: its new contents.
      fsync: fsync the file and the directory (durable across a power loss, ~1-2 ms on ext4);
        without it the write is still atomic for readers and for a crash of this process.

    Returns:
      ``Path(path)``.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".{path.name}.{uuid.uuid4().hex[:12]}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            if fsync:
                os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    if fsync:
        fsync_dir(path.parent)
    return path


def atomic_write_text(path: str | os.PathLike, text: str, *, fsync: bool = True) -> Path:
    """``atomic_write_bytes`` of ``text`` encoded as UTF-8."""
    return atomic_write_bytes(path, text.encode("utf-8"), fsync=fsync)


# ---- marker -------------------------------------------------------------------------------


def _version() -> str:
    try:
        return importlib.metadata.version("jaxprune")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")


def read_marker(workdir: str | os.PathLike) -> dict[str, Any] | None:
    """The marker of the run in ``workdir``, or None when there is none.

    Raises:
      WorkdirError: if the marker exists but is not a JSON object with a string ``run_id``
        and ``config_hash``.
    """
    path = Path(workdir) / MARKER
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError) as e:
        raise WorkdirError(f"{path} cannot be read ({e}); use another --workdir") from e
    try:
        marker = json.loads(text)
    except json.JSONDecodeError as e:
        marker, problem = None, f"not valid JSON ({e})"
    else:
        problem = None
    if problem is None:
        if not isinstance(marker, dict):
            problem = f"not a JSON object but {type(marker).__name__}"
        else:
            bad = [k for k in ("run_id", "config_hash") if not isinstance(marker.get(k), str)]
            if bad:
                problem = f"{' and '.join(bad)} missing or not a string"
    if problem is not None:
        raise WorkdirError(
            f"{path} is not a valid jaxprune run marker: {problem}. Restore it, or use another "
            "--workdir (nothing in that directory was changed)."
        )
    return marker


def _write_marker(workdir: Path, config_hash: str, previous: str | None = None) -> dict:
    marker = {
        "run_id": uuid.uuid4().hex,
        "config_hash": config_hash,
        "jaxprune_version": _version(),
        "created": _now(),
    }
    if previous is not None:
        marker["restarted_from"] = previous
    atomic_write_text(workdir / MARKER, json.dumps(marker, indent=2) + "\n")
    return marker


def _stored_config(workdir: Path) -> dict[str, Any] | None:
    try:
        stored = json.loads((workdir / "config.json").read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None
    return stored if isinstance(stored, dict) else None


def has_checkpoint(workdir: str | os.PathLike) -> bool:
    """Whether ``workdir/checkpoints`` holds a finished Orbax step directory (``<step>/``)."""
    directory = Path(workdir) / "checkpoints"
    try:
        return any(n.isdigit() and (directory / n).is_dir() for n in os.listdir(directory))
    except (FileNotFoundError, NotADirectoryError):
        return False


def _check_config(workdir: Path, config_dict: dict[str, Any], stored_hash: str | None) -> None:
    """Raises WorkdirError if this config is not the one of the run in ``workdir``.

    The marker's hash decides; when it differs, ``config.json`` is diffed for the message, and
    a ``config.json`` equal in every field that matters passes (a hash from another version).
    """
    if stored_hash is not None and stored_hash == run_config.config_hash(config_dict):
        return
    stored = _stored_config(workdir)
    diffs = [] if stored is None else run_config.config_differences(stored, config_dict)
    if stored is not None and not diffs:
        return
    if diffs:
        what = f"differs from {workdir / 'config.json'} in " + "; ".join(diffs)
    else:
        what = (
            f"hash {run_config.config_hash(config_dict)} differs from {stored_hash} in "
            f"{workdir / MARKER}"
        )
    fix = "Use another --workdir or restore the original config"
    if not has_checkpoint(workdir):
        fix += ", or pass --restart (restart=True): it has no checkpoint, nothing to resume"
    raise WorkdirError(f"refusing to resume the run in {workdir}: this config {what}. {fix}.")


def _listing(workdir: Path, *, clean: bool = False) -> list[str]:
    """Top-level entries of ``workdir`` that count: all but the lock and our marker temps.

    Args:
      workdir: an existing directory.
      clean: delete the temporary files of an interrupted marker write (only under the lock).
    """
    names = []
    for name in sorted(os.listdir(workdir)):
        if name == LOCK:
            continue
        if name.startswith(f".{MARKER}.") and name.endswith(".tmp"):
            if clean:
                (workdir / name).unlink(missing_ok=True)
            continue
        names.append(name)
    return names


def _maybe_run(names: list[str]) -> bool:
    """Whether a directory holding ``names`` may be a jaxprune run (else it is refused).

    A run has its marker; one written before markers existed has only run outputs, among them
    a ``config.json``.
    """
    return MARKER in names or ("config.json" in names and set(names) <= set(RUN_ENTRIES))


def _foreign(workdir: Path, names: list[str]) -> WorkdirError:
    more = len(names) - _SHOW
    shown = ", ".join(names[:_SHOW]) + (f" and {more} more" if more > 0 else "")
    return WorkdirError(
        f"--workdir {workdir} is not empty and holds no jaxprune run (no {MARKER}); it contains "
        f"{shown}. Refusing to write into it: use an empty or new directory."
    )


def _remove_run(workdir: Path) -> None:
    """Deletes the run outputs (``RUN_ENTRIES``) of ``workdir``; other entries stay."""
    for name in RUN_ENTRIES:
        target = workdir / name
        if target.is_dir() and not target.is_symlink():
            shutil.rmtree(target)
        elif target.exists() or target.is_symlink():
            target.unlink()
    fsync_dir(workdir)


def _prepare(workdir: Path, config_dict: dict[str, Any], restart: bool) -> RunDir:
    """Validates the locked ``workdir``; writes the marker of a new (or restarted) run."""
    config_hash = run_config.config_hash(config_dict)
    names = _listing(workdir, clean=True)
    if not names:
        marker = _write_marker(workdir, config_hash)
        logging.info("new run %s in %s", marker["run_id"], workdir)
        return RunDir(workdir, marker["run_id"], True)
    marker = read_marker(workdir) if MARKER in names else None
    if marker is None:
        if not _maybe_run(names):
            raise _foreign(workdir, names)
        if _stored_config(workdir) is None:
            raise WorkdirError(
                f"--workdir {workdir} holds no {MARKER} and its config.json is not a JSON "
                "object; refusing to write into it: use another --workdir."
            )
    if restart and not has_checkpoint(workdir):
        previous = None if marker is None else marker["run_id"]
        _remove_run(workdir)
        marker = _write_marker(workdir, config_hash, previous)
        logging.warning(
            "restart: discarded the outputs of run %s in %s (no checkpoint); new run %s",
            previous,
            workdir,
            marker["run_id"],
        )
        return RunDir(workdir, marker["run_id"], True)
    if marker is None:
        _check_config(workdir, config_dict, None)
        marker = _write_marker(workdir, config_hash)
        logging.info("adopted the run in %s (written before run markers)", workdir)
        return RunDir(workdir, marker["run_id"], False)
    _check_config(workdir, config_dict, marker["config_hash"])
    if restart:
        logging.info("restart: %s holds checkpoints, the run resumes", workdir)
    logging.info("resuming run %s in %s", marker["run_id"], workdir)
    return RunDir(workdir, marker["run_id"], False)


# ---- lock ---------------------------------------------------------------------------------


def _holder(lock_path: Path) -> dict[str, Any]:
    try:
        holder = json.loads(lock_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return {}
    return holder if isinstance(holder, dict) else {}


@contextlib.contextmanager
def _locked(workdir: Path) -> Iterator[None]:
    """Holds an exclusive flock on ``workdir/.lock`` (with this process's info in it)."""
    lock_path = workdir / LOCK
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), 0o666)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _holder(lock_path)
            raise RunLockedError(
                f"--workdir {workdir} is in use by another jaxprune run (pid "
                f"{holder.get('pid', '?')} on host {holder.get('host', '?')}, started "
                f"{holder.get('started', '?')}; lock file {lock_path}). Wait for it to end, "
                "stop it, or use another --workdir."
            ) from None
        except OSError as e:
            raise OSError(
                e.errno, f"cannot lock {lock_path} (the filesystem may not support flock): {e}"
            ) from e
        stale = _holder(lock_path)
        if stale:
            logging.info("took over the lock %s of a run that ended (%s)", lock_path, stale)
        info = {"pid": os.getpid(), "host": socket.gethostname(), "started": _now()}
        os.ftruncate(fd, 0)
        os.pwrite(fd, (json.dumps(info) + "\n").encode(), 0)
        os.fsync(fd)
        try:
            yield
        finally:
            os.ftruncate(fd, 0)  # a clean exit leaves no holder behind
    finally:
        os.close(fd)  # releases the flock


@contextlib.contextmanager
def open_workdir(
    path: str | os.PathLike | None,
    config_dict: dict[str, Any],
    *,
    restart: bool = False,
    is_writer: bool = True,
) -> Iterator[RunDir]:
    """Validates, locks and (for a new run) marks the workdir for the duration of a run.

    Args:
      path: the ``--workdir``; created if missing.
      config_dict: this run's config (``run_config.config_to_dict``).
      restart: start over when the jaxprune run in ``path`` has no checkpoint: its outputs
        (metrics, summary, plots, config.json; other files stay) are deleted and a new run (new
        id, this config, which may differ) begins. A run with a checkpoint resumes as without
        it; a directory that holds no jaxprune run is refused all the same.
      is_writer: False for the processes that write nothing (multi-host processes other than
        0): the path is checked, nothing is read, created or locked.

    Yields:
      The ``RunDir``; the lock is held until the ``with`` block ends.

    Raises:
      ValueError: for an empty path or one naming a file.
      WorkdirError: (a ValueError) for a non-empty directory without a jaxprune run, a damaged
        marker, or a run of another config.
      RunLockedError: when another process holds the workdir.
    """
    workdir = check_workdir_path(path)
    if not is_writer:
        yield RunDir(workdir, None, None, is_writer=False)
        return
    if workdir.exists():
        names = _listing(workdir)
        if names and not _maybe_run(names):
            raise _foreign(workdir, names)  # before the lock file is created in it
    workdir.mkdir(parents=True, exist_ok=True)
    with _locked(workdir):
        yield _prepare(workdir, config_dict, restart)
