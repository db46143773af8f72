"""Runs that cannot succeed fail early and loudly; interrupted runs lose nothing.

Pre-training checks (MT feasibility, the gradual schedule inside the run, a prunable pattern
matching nothing, a score that cannot run inside the jitted step, an unprepared dataset),
divergence, a run ending below its target, a missing checkpoint directory with recorded
progress (``--restart``), SIGTERM / SIGINT saving a checkpoint and resuming bit for bit, and the
command line's one-line errors with exit codes 2 / 1 / 130.
"""

import json
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest

from configs import lenet300_mnist_gmp, lenet300_mnist_gradual
from jaxprune import training
from jaxprune.data.tfds_source import DatasetNotPreparedError
from jaxprune.training import flows, runner

REPO = Path(__file__).resolve().parents[1]
SMOKE = "configs/lenet300_mnist_gmp.py:smoke"


def _config(**overrides):
    config = lenet300_mnist_gmp.get_config("smoke")
    config.update_from_flattened_dict(overrides)
    return config


def _gradual(**overrides):
    config = lenet300_mnist_gradual.get_config("smoke")
    config.update_from_flattened_dict(overrides)
    return config


@pytest.mark.parametrize(
    "make, error, message",
    [
        (
            lambda: _config(**{"pruning.sparsity": 0.999, "pruning.min_keep_fraction": 0.002}),
            ValueError,
            r"pruning\.min_keep_fraction=0\.002 is infeasible at the target sparsity 0\.999: "
            r"3 layers x floor 532 = 1596 weights kept, but the budget is 266",
        ),
        (
            lambda: _gradual(**{"pruning.schedule.end_step": 10_000}),
            ValueError,
            r"pruning\.schedule\.end_step=10000 is not inside the run \(\d+ steps\)",
        ),
        (
            lambda: _gradual(
                **{"pruning.schedule.begin_step": 30, "pruning.schedule.end_step": 30}
            ),
            ValueError,
            r"begin_step=30 must be < end_step=30",
        ),
        (
            lambda: _config(**{"pruning.prunable": ("^Conv_.*/kernel$",)}),
            ValueError,
            r"pruning\.prunable=\('\^Conv_\.\*/kernel\$',\) matches no leaf of model 'lenet300'.*"
            r"Dense_0/kernel",
        ),
        (
            lambda: _gradual(**{"pruning.score": "synflow"}),
            ValueError,
            r"pruning\.score='synflow' \(flow='gradual'\) cannot run inside the jitted train step",
        ),
        (
            lambda: _config(
                **{"dataset.name": "cifar10", "model.name": "resnet20", "dataset.data_dir": "EMPTY"}
            ),
            DatasetNotPreparedError,
            r"cifar10.*not prepared|tfds build cifar10",
        ),
    ],
    ids=[
        "mt_infeasible",
        "schedule_past_end",
        "schedule_empty",
        "prunable_none",
        "synflow_gradual",
        "dataset_unprepared",
    ],
)
def test_checkable_problems_fail_before_training(make, error, message, tmp_path):
    config = make()
    if config.dataset.data_dir == "EMPTY":
        config.dataset.data_dir = str(tmp_path / "tfds")
    with pytest.raises(error, match=message):
        training.train_and_evaluate(config, tmp_path / "run")
    assert not (tmp_path / "run" / "metrics.jsonl").exists()  # not a single step was trained
    assert not list((tmp_path / "run").glob("checkpoints/*"))


def test_divergence_stops_and_keeps_the_last_good_checkpoint(tmp_path):
    config = _config(**{"training.learning_rate": 1e9, "training.checkpoint_every": 10})
    with pytest.raises(FloatingPointError, match=r"training diverged: .* at step \d+") as info:
        training.train_and_evaluate(config, tmp_path)
    message = str(info.value)
    assert "divergence_factor" in message or "not finite" in message
    steps = ocp.CheckpointManager(tmp_path / "checkpoints").all_steps()
    records = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert all(s < records[-1]["step"] for s in steps)  # nothing saved after divergence
    # A loss that only grows a little is not divergence: the same run with a sane rate passes.
    ok = training.train_and_evaluate(
        _config(**{"training.steps": 20, "finetune.steps": 10}), tmp_path / "ok"
    )
    assert ok.finished


def test_divergence_factor_catches_a_finite_blow_up(tmp_path):
    config = _config(**{"training.learning_rate": 1.0, "training.divergence_factor": 1.5})
    with pytest.raises(FloatingPointError, match=r"over training\.divergence_factor=1\.5 times"):
        training.train_and_evaluate(config, tmp_path)


def test_a_run_below_its_target_fails_and_says_so(tmp_path):
    @flows.register
    class Overclaiming(flows.get("prune_finetune").__class__):
        name = "overclaiming"

        def target_sparsity(self, config):
            return 0.999  # prunes pruning.sparsity (0.98) but claims more

    try:
        with pytest.raises(runner.TargetNotReachedError, match=r"below its target 0\.999"):
            config = _config(flow="overclaiming", **{"pruning.min_keep_fraction": 0.0})
            training.train_and_evaluate(config, tmp_path)
    finally:
        flows._REGISTRY.pop("overclaiming", None)
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["target_reached"] is False and summary["target_sparsity"] == 0.999


def test_missing_checkpoints_with_recorded_progress_need_restart(tmp_path):
    config = _config(**{"debug.stop_at_step": 25})
    training.train_and_evaluate(config, tmp_path)
    for path in sorted((tmp_path / "checkpoints").rglob("*"), reverse=True):
        path.rmdir() if path.is_dir() else path.unlink()
    config.debug.stop_at_step = 0
    with pytest.raises(runner.RestartRequiredError, match=r"progress up to step 20.*--restart"):
        training.train_and_evaluate(config, tmp_path)
    result = training.train_and_evaluate(config, tmp_path, restart=True)
    records = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert result.finished and [r["step"] for r in records if "train_loss" in r][:2] == [10, 20]


_SIGNAL_CHILD = textwrap.dedent(
    """
    import os, signal, sys
    sys.path.insert(0, {repo!r})
    from configs import lenet300_mnist_gmp
    from jaxprune import training
    from jaxprune.training import flows, runner

    base = flows.get("prune_finetune").__class__

    @flows.register
    class SignalAt(base):  # same name: only this child process sees it
        name = "prune_finetune"

        def after_step(self, ctx, index, step, state, metrics):
            if step == {at}:
                os.kill(os.getpid(), signal.{sig})
            return super().after_step(ctx, index, step, state, metrics)

    config = lenet300_mnist_gmp.get_config("smoke")
    try:
        training.train_and_evaluate(config, {workdir!r})
    except runner.RunInterrupted as stopped:
        print("STOPPED", stopped.step, stopped.exit_code, flush=True)
        sys.exit(stopped.exit_code)
    """
)


@pytest.fixture(scope="module")
def clean_run(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("clean")
    return workdir, training.train_and_evaluate(_config(), workdir)


@pytest.mark.parametrize("sig, at, code", [("SIGTERM", 37, 143), ("SIGINT", 73, 130)])
def test_signal_saves_a_checkpoint_and_the_rerun_is_bit_identical(
    sig, at, code, clean_run, tmp_path
):
    clean_dir, clean = clean_run
    workdir = tmp_path / "signalled"
    child = subprocess.run(
        [
            sys.executable,
            "-c",
            _SIGNAL_CHILD.format(repo=str(REPO), at=at, sig=sig, workdir=str(workdir)),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=REPO,
    )
    assert child.returncode == code, child.stderr[-2000:]
    assert f"STOPPED {at} {code}" in child.stdout
    assert at in ocp.CheckpointManager(workdir / "checkpoints").all_steps()  # saved at the signal
    resumed = training.train_and_evaluate(_config(), workdir)
    jax.tree.map(np.testing.assert_array_equal, resumed.variables, clean.variables)
    jax.tree.map(np.testing.assert_array_equal, resumed.masks, clean.masks)
    assert (workdir / "metrics.jsonl").read_text() == (clean_dir / "metrics.jsonl").read_text()


def _cli(*args, **kwargs):
    return subprocess.run(
        [sys.executable, "-m", "jaxprune.main", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
        **kwargs,
    )


def test_cli_config_errors_are_one_line_with_exit_code_2(tmp_path):
    out = _cli(f"--config={SMOKE}", f"--workdir={tmp_path}", "--config.pruning.sparsity=1.5")
    assert out.returncode == 2
    errors = [line for line in out.stderr.splitlines() if "Traceback" in line or "error" in line]
    assert errors == ["jaxprune: error: pruning.sparsity must be in [0, 1], got 1.5"]
    out = _cli(f"--config={SMOKE}", f"--workdir={tmp_path}", "--config.pruning.sparsty=0.5")
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert 'Did you mean "sparsity"' in out.stderr
    out = _cli(f"--config={SMOKE}", "--workdir=")
    assert out.returncode == 2 and "--workdir is empty" in out.stderr
    out = _cli("--config=configs/no_such_config.py", f"--workdir={tmp_path}")
    assert out.returncode == 2 and "no_such_config.py" in out.stderr
    assert "Traceback" not in out.stderr
    # A failed run (divergence) is exit code 1, also one line.
    out = _cli(
        f"--config={SMOKE}", f"--workdir={tmp_path / 'div'}", "--config.training.learning_rate=1e9"
    )
    assert out.returncode == 1 and "Traceback" not in out.stderr
    assert "jaxprune: error: training diverged" in out.stderr


def test_cli_sigint_exits_130_and_says_how_to_resume(tmp_path):
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "jaxprune.main",
            f"--config={SMOKE}",
            f"--workdir={tmp_path}",
            "--config.training.steps=100000",
            "--config.training.log_every=5",
        ],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.time() + 240
    while time.time() < deadline and not (tmp_path / "metrics.jsonl").exists():
        time.sleep(0.2)
    assert (tmp_path / "metrics.jsonl").exists(), "the run never logged"
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 130, stderr[-2000:]
    assert "rerun the same command to resume" in stderr and "Traceback" not in stderr
    assert ocp.CheckpointManager(tmp_path / "checkpoints").all_steps()
