"""TensorBoard scalars mirror metrics.jsonl; a resume hides the events past its checkpoint."""

import json
import struct

import pytest
from tensorboardX.proto import event_pb2

from configs import lenet300_mnist_gmp
from jaxprune import training
from jaxprune.training import tensorboard


def _events(directory):
    """(tag, step, value) of every scalar in the event files, oldest file first, and purges."""
    scalars, purges = [], []
    for path in sorted(directory.glob("events.out.tfevents.*")):
        data = path.read_bytes()
        offset = 0
        while offset < len(data):  # TFRecord: length, crc, payload, crc
            (length,) = struct.unpack("<Q", data[offset : offset + 8])
            payload = data[offset + 12 : offset + 12 + length]
            offset += 12 + length + 4
            event = event_pb2.Event.FromString(payload)
            if event.HasField("session_log") and event.session_log.status == 1:  # START
                purges.append(event.step)
            for value in event.summary.value:
                scalars.append((value.tag, event.step, value.simple_value))
    return scalars, purges


def _expected(workdir):
    out = []
    for line in (workdir / "metrics.jsonl").read_text().splitlines():
        record = json.loads(line)
        for name, value in record.items():
            if name in ("step", "phase") or isinstance(value, bool | str | list | dict):
                continue
            out.append((tensorboard.tag_of(record["phase"], name), record["step"], value))
    return out


def _config(**training_fields):
    config = lenet300_mnist_gmp.get_config("smoke")
    config.training.update(training_fields)
    return config


def test_every_metrics_record_is_a_scalar_of_the_same_step(tmp_path):
    training.train_and_evaluate(_config(), tmp_path)
    scalars, _ = _events(tmp_path / "tensorboard")
    want = _expected(tmp_path)
    assert [(t, s) for t, s, _ in scalars] == [(t, s) for t, s, _ in want]
    for (_, _, got), (_, _, value) in zip(scalars, want, strict=True):
        assert got == pytest.approx(value, rel=1e-6)  # float32 in the event file
    tags = {t for t, _, _ in scalars}
    assert {"train_loss", "test_accuracy", "after_pruning/test_accuracy"} <= tags


def test_a_resumed_run_purges_the_events_past_its_checkpoint(tmp_path):
    # Stopped at step 50 (checkpoint at 40), rerun: it resumes from step 40.
    config = _config(checkpoint_every=20, log_every=5)
    config.debug.stop_at_step = 50
    other = tmp_path
    training.train_and_evaluate(config, other)
    config.debug.stop_at_step = 0
    training.train_and_evaluate(config, other)
    scalars, purges = _events(other / "tensorboard")
    assert purges == [41]  # the second writer hides steps >= 41 written by the first
    # What TensorBoard shows: events of the first file before the purge step, then the second.
    files = sorted((other / "tensorboard").glob("events.out.tfevents.*"))
    assert len(files) == 2
    first, _ = _events_of(files[0])
    second, _ = _events_of(files[1])
    shown = [e for e in first if e[1] < 41] + second
    assert [(t, s) for t, s, _ in shown] == [(t, s) for t, s, _ in _expected(other)]


def _events_of(path):
    scratch = path.parent / f"only_{path.name}"
    scratch.mkdir()
    (scratch / path.name).write_bytes(path.read_bytes())
    return _events(scratch)


def test_switched_off_writes_no_event_file(tmp_path):
    training.train_and_evaluate(_config(tensorboard=False), tmp_path)
    assert not (tmp_path / "tensorboard").exists()
    # Smoke configs switch the figures off too (training.plots); the summary is still written.
    assert not (tmp_path / "plots").exists()
    assert (tmp_path / "summary.json").is_file()


def test_tensorboardx_is_imported_without_torch_and_leaves_it_importable():
    import subprocess
    import sys

    code = (
        "import importlib.util, sys\n"
        "from jaxprune.training import tensorboard\n"
        "tensorboard._import_tensorboardx()\n"
        "assert 'tensorboardX' in sys.modules and 'torch' not in sys.modules\n"
        "if importlib.util.find_spec('torch') is not None:\n"
        "    import torch\n"
        "    assert torch.zeros(2).sum().item() == 0.0\n"
        "print('ok')\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False
    )
    assert out.stdout.strip() == "ok", out.stderr[-2000:]
