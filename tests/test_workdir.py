"""Run directories: validation, marker, one-process lock, atomic writes, metrics.jsonl damage."""

import json
import logging
import os
import signal
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import matplotlib.pyplot as plt
import pytest

from jaxprune.training import metrics, plots, run_config, workdir

REPO = Path(__file__).resolve().parents[1]
CONFIG = {
    "seed": 0,
    "pruning": {"sparsity": 0.9, "score": "magnitude"},
    "training": {"learning_rate": 0.1, "log_every": 10, "num_epochs": 2},
}


def _config(**changes):
    config = json.loads(json.dumps(CONFIG))
    for dotted, value in changes.items():
        block, field = dotted.split(".")
        config[block][field] = value
    return config


def _tree(path: Path) -> dict[str, bytes | None]:
    """Every entry under ``path`` with its bytes (None for directories)."""
    return {
        str(p.relative_to(path)): None if p.is_dir() else p.read_bytes()
        for p in sorted(path.rglob("*"))
    }


def _dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


# ---- the workdir path -------------------------------------------------------------------------


@pytest.mark.parametrize("path", [None, "", "   ", "\t\n"])
def test_empty_workdir_is_refused_and_nothing_is_written_to_the_cwd(path, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ValueError, match=r"--workdir .*is empty"):
        workdir.check_workdir_path(path)
    with pytest.raises(ValueError, match=r"--workdir .*is empty"):
        with workdir.open_workdir(path, CONFIG):
            pass
    with pytest.raises(ValueError, match=r"--workdir .*is empty"):  # not even on other processes
        with workdir.open_workdir(path, CONFIG, is_writer=False):
            pass
    assert list(tmp_path.iterdir()) == []


def test_workdir_that_is_a_file_is_refused(tmp_path):
    target = tmp_path / "run"
    target.write_text("mine")
    with pytest.raises(ValueError, match=rf"--workdir '{target}' is an existing file"):
        with workdir.open_workdir(target, CONFIG):
            pass
    assert target.read_text() == "mine"


# ---- what a workdir may hold ------------------------------------------------------------------

FOREIGN = {
    # Finding 1: someone's metrics, summary and plots, no checkpoints.
    "outputs_of_another_tool": {
        "metrics.jsonl": '{"epoch": 1}\n',
        "summary.json": '{"acc": 0.9}\n',
        "plots/loss.png": "png",
    },
    "a_note": {"notes.txt": "keep me"},
    "config_json_and_a_note": {"config.json": json.dumps(CONFIG), "notes.txt": "keep me"},
    "checkpoints_only": {"checkpoints/100/state": "x"},
    "seven_files": {f"f{i}.txt": str(i) for i in range(7)},
}


@pytest.mark.parametrize("files", FOREIGN.values(), ids=FOREIGN.keys())
def test_folder_without_a_run_marker_is_refused_untouched(files, tmp_path):
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    before = _tree(tmp_path)
    with pytest.raises(workdir.WorkdirError, match="holds no jaxprune run") as error:
        with workdir.open_workdir(tmp_path, CONFIG, restart=True):
            pass
    top = sorted({name.split("/")[0] for name in files})
    assert ", ".join(top[:5]) in str(error.value) and str(tmp_path) in str(error.value)
    if len(top) > 5:
        assert f"and {len(top) - 5} more" in str(error.value)
    assert _tree(tmp_path) == before  # not even a lock file


def test_legacy_config_json_that_is_not_an_object_is_refused(tmp_path):
    (tmp_path / "config.json").write_text("[1, 2]")
    with pytest.raises(workdir.WorkdirError, match="config.json is not a JSON object"):
        with workdir.open_workdir(tmp_path, CONFIG):
            pass
    assert not (tmp_path / workdir.MARKER).exists()


@pytest.mark.parametrize("exists", [False, True])
def test_new_run_writes_its_marker_and_holds_the_lock(exists, tmp_path):
    path = tmp_path / "a" / "run"
    if exists:
        path.mkdir(parents=True)
    with workdir.open_workdir(path, CONFIG) as run:
        assert run.path == path and run.new and run.is_writer
        holder = json.loads((path / workdir.LOCK).read_text())
        assert holder["pid"] == os.getpid() and holder["host"] == socket.gethostname()
    marker = json.loads((path / workdir.MARKER).read_text())
    assert marker["run_id"] == run.run_id and len(run.run_id) == 32
    assert marker["config_hash"] == run_config.config_hash(CONFIG)
    assert set(marker) == {"run_id", "config_hash", "jaxprune_version", "created"}
    assert (path / workdir.LOCK).read_text() == ""  # a clean exit leaves no holder
    assert sorted(os.listdir(path)) == [workdir.LOCK, workdir.MARKER]


def test_same_config_resumes_and_ignored_fields_may_change(tmp_path):
    with workdir.open_workdir(tmp_path, CONFIG) as first:
        pass
    with workdir.open_workdir(tmp_path, _config(**{"training.log_every": 5})) as second:
        assert not second.new and second.run_id == first.run_id


def test_other_config_is_refused_with_the_differing_fields(tmp_path):
    with workdir.open_workdir(tmp_path, CONFIG):
        pass
    marker = (tmp_path / workdir.MARKER).read_bytes()
    other = _config(**{"pruning.sparsity": 0.8})
    with pytest.raises(workdir.WorkdirError, match=r"hash sha256:\w+ differs from sha256:"):
        with workdir.open_workdir(tmp_path, other):
            pass
    (tmp_path / "config.json").write_text(json.dumps(CONFIG))  # what the runner writes
    with pytest.raises(
        workdir.WorkdirError, match=r"config\.json in pruning\.sparsity: 0\.9 -> 0\.8.*--restart"
    ):
        with workdir.open_workdir(tmp_path, other):
            pass
    (tmp_path / "checkpoints" / "100").mkdir(parents=True)
    with pytest.raises(workdir.WorkdirError, match=r"original config\.$"):  # no --restart hint
        with workdir.open_workdir(tmp_path, other, restart=True):
            pass
    assert (tmp_path / workdir.MARKER).read_bytes() == marker


def test_equal_config_with_a_hash_of_another_version_resumes(tmp_path):
    with workdir.open_workdir(tmp_path, CONFIG) as first:
        pass
    marker = json.loads((tmp_path / workdir.MARKER).read_text())
    marker["config_hash"] = "sha256:from-another-version"
    (tmp_path / workdir.MARKER).write_text(json.dumps(marker))
    (tmp_path / "config.json").write_text(json.dumps(CONFIG))
    with workdir.open_workdir(tmp_path, CONFIG) as run:
        assert not run.new and run.run_id == first.run_id


DAMAGED_MARKERS = {
    "not_json": ("{run", "not valid JSON"),
    "not_an_object": ("[]", "not a JSON object but list"),
    "no_run_id": ('{"config_hash": "sha256:0"}', "run_id missing or not a string"),
    "int_hash": ('{"run_id": "a", "config_hash": 3}', "config_hash missing or not a string"),
}


@pytest.mark.parametrize("text, problem", DAMAGED_MARKERS.values(), ids=DAMAGED_MARKERS.keys())
def test_damaged_marker_is_refused_untouched(text, problem, tmp_path):
    (tmp_path / workdir.MARKER).write_text(text)
    with pytest.raises(workdir.WorkdirError, match=rf"{workdir.MARKER} is not a valid .*{problem}"):
        with workdir.open_workdir(tmp_path, CONFIG):
            pass
    assert (tmp_path / workdir.MARKER).read_text() == text


def test_run_written_before_markers_is_adopted(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps(CONFIG))
    (tmp_path / "metrics.jsonl").write_text('{"step": 1, "phase": "dense"}\n')
    (tmp_path / "checkpoints" / "100").mkdir(parents=True)
    before = _tree(tmp_path)
    with pytest.raises(workdir.WorkdirError, match=r"pruning\.sparsity: 0\.9 -> 0\.5"):
        with workdir.open_workdir(tmp_path, _config(**{"pruning.sparsity": 0.5})):
            pass
    assert _tree(tmp_path) == {**before, workdir.LOCK: b""}
    with workdir.open_workdir(tmp_path, CONFIG) as run:
        assert not run.new
    assert json.loads((tmp_path / workdir.MARKER).read_text())["run_id"] == run.run_id
    assert (tmp_path / "metrics.jsonl").read_bytes() == before["metrics.jsonl"]


def test_restart_discards_a_run_without_checkpoint_and_keeps_other_files(tmp_path):
    with workdir.open_workdir(tmp_path, CONFIG) as first:
        pass
    for name in ("config.json", "metrics.jsonl", "summary.json", "plots/a.png", "notes.txt"):
        (tmp_path / name).parent.mkdir(exist_ok=True)
        (tmp_path / name).write_text("{}")
    (tmp_path / "checkpoints" / "100.orbax-checkpoint-tmp-1").mkdir(parents=True)  # unfinished
    other = _config(**{"training.learning_rate": 0.5})
    with workdir.open_workdir(tmp_path, other, restart=True) as run:
        assert run.new and run.run_id != first.run_id
    assert sorted(os.listdir(tmp_path)) == [workdir.LOCK, workdir.MARKER, "notes.txt"]
    marker = json.loads((tmp_path / workdir.MARKER).read_text())
    assert marker["restarted_from"] == first.run_id
    assert marker["config_hash"] == run_config.config_hash(other)


def test_restart_with_a_checkpoint_resumes_and_deletes_nothing(tmp_path):
    with workdir.open_workdir(tmp_path, CONFIG) as first:
        pass
    (tmp_path / "checkpoints" / "100").mkdir(parents=True)
    (tmp_path / "metrics.jsonl").write_text('{"step": 1, "phase": "dense"}\n')
    before = _tree(tmp_path)
    with workdir.open_workdir(tmp_path, CONFIG, restart=True) as run:
        assert not run.new and run.run_id == first.run_id
    assert _tree(tmp_path) == before


def test_non_writer_reads_writes_and_locks_nothing(tmp_path):
    path = tmp_path / "run"
    with workdir.open_workdir(path, CONFIG, is_writer=False) as run:
        assert run == workdir.RunDir(path, None, None, is_writer=False)
    assert not path.exists()
    (tmp_path / "notes.txt").write_text("x")
    with workdir.open_workdir(tmp_path, CONFIG, is_writer=False):  # process 0 validates
        pass
    assert os.listdir(tmp_path) == ["notes.txt"]


# ---- the lock -----------------------------------------------------------------------------


def test_second_opener_in_the_same_process_is_refused(tmp_path):
    with workdir.open_workdir(tmp_path, CONFIG):
        with pytest.raises(workdir.RunLockedError, match=rf"pid {os.getpid()} on host "):
            with workdir.open_workdir(tmp_path, CONFIG):
                pass
    with workdir.open_workdir(tmp_path, CONFIG) as run:  # released on exit
        assert not run.new


def test_lock_is_released_when_the_run_raises(tmp_path):
    with pytest.raises(KeyError):
        with workdir.open_workdir(tmp_path, CONFIG):
            raise KeyError("boom")
    with workdir.open_workdir(tmp_path, CONFIG):
        pass


@pytest.mark.parametrize("existing_run", [False, True])
def test_stale_lock_file_of_a_dead_process_is_taken_over(existing_run, tmp_path):
    if existing_run:
        with workdir.open_workdir(tmp_path, CONFIG):
            pass
    stale = {"pid": _dead_pid(), "host": socket.gethostname(), "started": "2020-01-01T00:00:00"}
    (tmp_path / workdir.LOCK).write_text(json.dumps(stale))
    with workdir.open_workdir(tmp_path, CONFIG) as run:
        assert run.new != existing_run
        holder = json.loads((tmp_path / workdir.LOCK).read_text())
        assert holder["pid"] == os.getpid() and holder["started"] != stale["started"]


_HOLDER = """
import sys, time
from jaxprune.training import workdir
with workdir.open_workdir(sys.argv[1], {"seed": 0}):
    print("locked", flush=True)
    time.sleep(120)
"""


def test_lock_contention_between_processes_and_sigkill_releases(tmp_path):
    path = tmp_path / "run"
    child = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(_HOLDER), str(path)],
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO), "JAX_PLATFORMS": "cpu"},
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert child.stdout.readline().strip() == "locked"
        with pytest.raises(workdir.RunLockedError) as error:
            with workdir.open_workdir(path, {"seed": 0}):
                pass
        message = str(error.value)
        assert f"pid {child.pid} on host {socket.gethostname()}" in message
        assert str(path / workdir.LOCK) in message
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=30)
        child.stdout.close()
    with workdir.open_workdir(path, {"seed": 0}) as run:  # the OS dropped the dead holder's lock
        assert not run.new
        assert json.loads((path / workdir.LOCK).read_text())["pid"] == os.getpid()


# ---- config hash ------------------------------------------------------------------------------


def test_config_hash_ignores_order_and_resume_fields_but_not_the_rest():
    reordered = {
        "training": {"num_epochs": 2, "log_every": 10, "learning_rate": 0.1},
        "pruning": {"score": "magnitude", "sparsity": 0.9},
        "seed": 0,
    }
    base = run_config.config_hash(CONFIG)
    assert base.startswith("sha256:") and run_config.config_hash(reordered) == base
    for field in run_config.IGNORED_ON_RESUME:
        block, name = field.split(".")
        changed = json.loads(json.dumps(CONFIG))
        changed.setdefault(block, {})[name] = 12345
        assert run_config.config_hash(changed) == base, field
    assert run_config.config_hash(_config(**{"training.num_epochs": 2.0})) == base  # 2 == 2.0
    changed = [
        {**CONFIG, "seed": 1},
        {**CONFIG, "extra": None},
        _config(**{"pruning.sparsity": 0.8}),
        _config(**{"training.learning_rate": 1}),
    ]
    for config in changed:
        assert run_config.config_hash(config) != base, config


def test_config_hash_of_the_default_config_is_stable():
    from jaxprune.configs import default

    config_dict = run_config.config_to_dict(default.get_config())
    reversed_dict = json.loads(json.dumps(dict(reversed(list(config_dict.items())))))
    assert run_config.config_hash(reversed_dict) == run_config.config_hash(config_dict)


# ---- atomic writes ----------------------------------------------------------------------------


def test_atomic_write_replaces_the_file_with_usual_permissions(tmp_path):
    path = tmp_path / "sub" / "out.json"
    workdir.atomic_write_text(path, "one\n")
    workdir.atomic_write_text(path, "two\n", fsync=False)
    assert path.read_text() == "two\n" and os.listdir(path.parent) == ["out.json"]
    umask = os.umask(0)
    os.umask(umask)
    assert path.stat().st_mode & 0o777 == 0o666 & ~umask


def _failing_replace(monkeypatch):
    def fail(src, dst):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", fail)


WRITERS = {
    "atomic_write_text": lambda d: workdir.atomic_write_text(d / "config.json", "new"),
    "write_or_check_config": lambda d: run_config.write_or_check_config(
        d, _config(**{"training.log_every": 1})
    ),
    "write_summary": lambda d: metrics.write_summary(d, {"test_accuracy": 0.5}),
    "truncate_after": lambda d: metrics.MetricsWriter(d).truncate_after(1),
    "plot": lambda d: plots.plot_layer_sparsity(
        {"a": {"kept": 1, "total": 2, "sparsity": 0.5}}, d / "plots" / "layer_sparsity.png"
    ),
}
OLD = {
    "config.json": json.dumps(CONFIG),
    "summary.json": '{"test_accuracy": 0.9}\n',
    "metrics.jsonl": '{"step": 1, "phase": "a"}\n{"step": 2, "phase": "a"}\n',
    "plots/layer_sparsity.png": "old png",
}


@pytest.mark.parametrize("write", WRITERS.values(), ids=WRITERS.keys())
def test_interrupted_write_keeps_the_old_file_whole(write, tmp_path, monkeypatch):
    for name, text in OLD.items():
        (tmp_path / name).parent.mkdir(exist_ok=True)
        (tmp_path / name).write_text(text)
    before = _tree(tmp_path)
    _failing_replace(monkeypatch)
    with pytest.raises(OSError, match="No space left"):
        write(tmp_path)
    assert _tree(tmp_path) == before  # old contents, no temporary file left behind


def test_plots_write_the_bytes_savefig_writes(tmp_path, monkeypatch):
    figures = []
    close = plt.close
    monkeypatch.setattr(plt, "close", lambda fig: (figures.append(fig), close(fig)))
    layers = {
        f"layer{i}": {"kept": i, "total": 10, "sparsity": 1 - i / 10, "effective_sparsity": 0.9}
        for i in range(1, 4)
    }
    written = plots.plot_effective_sparsity(layers, tmp_path / "plots" / "effective.png")
    figures[-1].savefig(tmp_path / "direct.png", dpi=100)
    assert written.read_bytes() == (tmp_path / "direct.png").read_bytes()
    assert sorted(os.listdir(tmp_path / "plots")) == ["effective.png"]


# ---- metrics.jsonl ----------------------------------------------------------------------------


def _lines(*records) -> str:
    return "".join(json.dumps(r) + "\n" for r in records)


def test_metrics_write_appends_whole_lines(tmp_path):
    writer = metrics.MetricsWriter(tmp_path)
    writer.write(1, "dense", train_loss=float("nan"), train_accuracy=0.5)
    writer.write(2, "dense", test_accuracy=0.75)
    assert writer.read() == [
        {"step": 1, "phase": "dense", "train_loss": "nan", "train_accuracy": 0.5},
        {"step": 2, "phase": "dense", "test_accuracy": 0.75},
    ]
    assert writer.path.read_text().count("\n") == 2
    with pytest.raises(TypeError, match=r"phase must be a str, got 3"):
        writer.write(3, 3)


TORN = '{"step": 3, "phase": "dense", "train_lo'


@pytest.mark.parametrize("then", ["read", "write", "truncate_after"])
def test_torn_last_line_is_dropped_with_a_warning(then, tmp_path, caplog):
    good = _lines({"step": 1, "phase": "dense"}, {"step": 2, "phase": "dense"})
    (tmp_path / "metrics.jsonl").write_text(good + TORN)
    writer = metrics.MetricsWriter(tmp_path)
    with caplog.at_level(logging.WARNING):
        if then == "read":
            assert [r["step"] for r in writer.read()] == [1, 2]
        elif then == "write":
            writer.write(3, "dense", train_loss=0.5)
        else:
            writer.truncate_after(1)
    assert "dropping its last line 3" in caplog.text and "metrics.jsonl" in caplog.text
    expected = {
        "read": good + TORN,  # reading changes nothing
        "write": good + _lines({"step": 3, "phase": "dense", "train_loss": 0.5}),
        "truncate_after": _lines({"step": 1, "phase": "dense"}),
    }[then]
    assert writer.path.read_text() == expected


def test_complete_last_line_without_newline_is_kept(tmp_path):
    (tmp_path / "metrics.jsonl").write_text('{"step": 1, "phase": "dense"}')
    writer = metrics.MetricsWriter(tmp_path)
    assert writer.read() == [{"step": 1, "phase": "dense"}]
    writer.write(2, "dense")
    assert writer.path.read_text() == _lines(
        {"step": 1, "phase": "dense"}, {"step": 2, "phase": "dense"}
    )


DAMAGE = {
    "not_json": (b"{oops\n", "not valid JSON"),
    "array": (b"[1, 2]\n", "not a JSON object but list"),
    "no_step": (b'{"phase": "dense"}\n', "'step' is None, not an int"),
    "str_step": (b'{"step": "3", "phase": "dense"}\n', "'step' is '3', not an int"),
    "bool_step": (b'{"step": true, "phase": "dense"}\n', "'step' is True, not an int"),
    "int_phase": (b'{"step": 3, "phase": 1}\n', "'phase' is 1, not a string"),
    "not_utf8": (b'{"step": 3, "phase": "\xff"}\n', "not valid JSON"),
}


@pytest.mark.parametrize("where", ["middle", "last"])
@pytest.mark.parametrize("line, problem", DAMAGE.values(), ids=DAMAGE.keys())
def test_damaged_line_names_file_line_and_excerpt(line, problem, where, tmp_path):
    good = _lines({"step": 1, "phase": "dense"}).encode()
    data = good + line + (good if where == "middle" else b"")
    if where == "last" and problem != "not valid JSON":
        data = data.rstrip(b"\n")  # parses, so not torn: still an error without its newline
    (tmp_path / "metrics.jsonl").write_bytes(data)
    writer = metrics.MetricsWriter(tmp_path)
    for action in (writer.read, lambda: writer.truncate_after(5)):
        with pytest.raises(metrics.MetricsFileError) as error:
            action()
        message = str(error.value)
        assert f"{writer.path} line 2 is damaged: {problem}" in message
        assert repr(line.rstrip(b"\n").decode("utf-8", "replace"))[:20] in message
    assert writer.path.read_bytes() == data
    assert isinstance(error.value, ValueError)


def test_long_damaged_line_is_excerpted(tmp_path):
    (tmp_path / "metrics.jsonl").write_text("x" * 500 + "\n")
    with pytest.raises(metrics.MetricsFileError, match=r"line 1 .*'x{80}\.\.\.'\. Fix or delete"):
        metrics.MetricsWriter(tmp_path).read()


def test_truncate_after_keeps_the_lines_byte_for_byte_and_skips_needless_rewrites(tmp_path):
    text = '{"step": 1, "phase": "a", "x": 1.0000000000000002}\n{"step":2,"phase":"a"}\n'
    (tmp_path / "metrics.jsonl").write_text(text)
    writer = metrics.MetricsWriter(tmp_path)
    inode = writer.path.stat().st_ino
    writer.truncate_after(2)
    assert writer.path.stat().st_ino == inode  # nothing to drop: not rewritten
    writer.truncate_after(1)
    assert writer.path.read_text() == text.splitlines(keepends=True)[0]
    writer.truncate_after(-1)
    assert writer.path.read_text() == ""
    missing = metrics.MetricsWriter(tmp_path / "new")
    missing.truncate_after(-1)
    assert missing.path.read_text() == ""


def test_metrics_fsync_policy(tmp_path, monkeypatch):
    synced = []
    fsync = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: (synced.append(fd), fsync(fd)))
    every = metrics.MetricsWriter(tmp_path / "every", fsync_every_s=0)
    for step in range(3):
        every.write(step, "a")
    assert len(synced) == 3
    synced.clear()
    batched = metrics.MetricsWriter(tmp_path / "batched", fsync_every_s=3600)
    for step in range(3):
        batched.write(step, "a")
    assert synced == []
    batched.flush()
    assert len(synced) == 1
    batched.flush()  # nothing new
    assert len(synced) == 1
