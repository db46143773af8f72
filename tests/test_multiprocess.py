"""Multi-process runs: 2 processes x 4 fake CPU devices on localhost against 1 process x 8.

Each run is ``python -m jaxprune.main`` started as a child process (JAX fixes its devices and
its distributed client when it starts); the processes of one run find each other through
``--coordinator_address`` and exchange data with gloo. The mesh has the same 8 devices in the
same order either way and every device gets the same rows of every batch, so the runs can differ
only in the order the gradient all-reduce adds its 8 terms: masks, kept counts and every integer
must match exactly, floats to float32 rounding.
"""

import importlib
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import pytest

import jaxprune as jp
from jaxprune.training import distributed, prune

ROOT = Path(__file__).resolve().parent.parent
TIMEOUT_S = 300


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def _run(config: str, workdir: Path, processes: int, *extra: str) -> list[str]:
    """Runs ``config`` as ``processes`` processes sharing 8 CPU devices; their stdouts."""
    env = dict(os.environ)
    env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={8 // processes}"
    env["JAX_PLATFORMS"] = "cpu"
    env["PYTHONPATH"] = str(ROOT)
    base = [sys.executable, "-m", "jaxprune.main", f"--config={config}", f"--workdir={workdir}"]
    launch = []
    if processes > 1:
        launch = [f"--coordinator_address=localhost:{_free_port()}", f"--num_processes={processes}"]
    children = [
        subprocess.Popen(
            base + launch + ([f"--process_id={i}"] if processes > 1 else []) + list(extra),
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(processes)
    ]
    outputs = []
    try:
        for i, child in enumerate(children):
            out, err = child.communicate(timeout=TIMEOUT_S)
            assert child.returncode == 0, f"process {i} of {processes}: {err[-6000:]}"
            outputs.append(out)
    finally:
        for child in children:
            child.kill()
    return outputs


def _records(workdir: Path) -> list[dict]:
    return [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]


def _assert_same_records(got: list[dict], want: list[dict], *, exact: bool) -> None:
    assert [(r["step"], r["phase"], sorted(r)) for r in got] == [
        (r["step"], r["phase"], sorted(r)) for r in want
    ]
    for a, b in zip(got, want, strict=True):
        for key, value in b.items():
            if key == "wall_time_s":
                continue
            if isinstance(value, float) and not exact:
                np.testing.assert_allclose(a[key], value, rtol=2e-5, atol=1e-7, err_msg=key)
            else:
                assert a[key] == value, (key, a, b)


GMP = "configs/lenet300_mnist_gmp.py:smoke"
GRADUAL = "configs/lenet300_mnist_gradual.py:smoke"
N_PRUNABLE = 784 * 300 + 300 * 100 + 100 * 10


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """prune_finetune on 1 x 8 devices, and on 2 x 4 stopped at step 30 and resumed; gradual
    on 1 x 8 and 2 x 4."""
    root = tmp_path_factory.mktemp("multiprocess")
    out = {"gmp_1": (root / "gmp_1", _run(GMP, root / "gmp_1", 1))}
    stopped = _run(GMP, root / "gmp_2", 2, "--config.debug.stop_at_step=30")
    out["gmp_2_stopped"] = (root / "gmp_2", stopped, _records(root / "gmp_2"))
    plots = "--config.training.plots=True"  # only process 0 draws them (smoke configs: off)
    out["gmp_2"] = (root / "gmp_2", _run(GMP, root / "gmp_2", 2, plots))
    out["gradual_1"] = (root / "gradual_1", _run(GRADUAL, root / "gradual_1", 1))
    out["gradual_2"] = (root / "gradual_2", _run(GRADUAL, root / "gradual_2", 2, plots))
    return out


def test_two_processes_match_one_process_on_eight_devices(runs):
    one, _ = runs["gmp_1"]
    two, _ = runs["gmp_2"]
    _assert_same_records(_records(two), _records(one), exact=False)
    s1 = json.loads((one / "summary.json").read_text())
    s2 = json.loads((two / "summary.json").read_text())
    assert s2["sparsity"] == s1["sparsity"]
    assert s1["sparsity"]["kept"] == jp.n_keep_for(0.98, N_PRUNABLE)
    assert len(s2["devices"]) == len(s1["devices"]) == 8
    assert s1["mesh"] == s2["mesh"] == {"data": 8}
    assert s1["provenance"]["devices"]["process_count"] == 1
    assert s2["provenance"]["devices"]["process_count"] == 2
    assert s2["provenance"]["versions"]["jax"] == jax.__version__
    r1, r2 = jp.load_run(one), jp.load_run(two)
    assert r1.step == r2.step
    for m1, m2 in zip(jax.tree.leaves(r1.masks), jax.tree.leaves(r2.masks), strict=True):
        np.testing.assert_array_equal(m2, m1)
    params1, params2 = r1.variables["params"], r2.variables["params"]
    for p1, p2 in zip(jax.tree.leaves(params1), jax.tree.leaves(params2), strict=True):
        np.testing.assert_allclose(p2, p1, rtol=1e-4, atol=1e-6)
        assert np.array_equal(p2 == 0, p1 == 0)  # pruned weights exactly zero in both


def test_a_stopped_two_process_run_resumed_where_it_stopped(runs):
    _, outputs, records = runs["gmp_2_stopped"]
    assert max(r["step"] for r in records) == 30
    assert all("TOTAL" not in out for out in outputs)  # no summary: it stopped
    workdir, _ = runs["gmp_2"]
    assert jp.load_run(workdir).step == 100
    # Nothing logged twice (the test above: the records are those of the 1 x 8 run).
    keys = [(r["step"], r["phase"], tuple(sorted(r))) for r in _records(workdir)]
    assert len(keys) == len(set(keys)) == len(_records(runs["gmp_1"][0]))


def test_gradual_pruning_inside_the_two_process_step_keeps_exact_counts(runs):
    workdir, _ = runs["gradual_2"]
    summary = json.loads((workdir / "summary.json").read_text())
    assert summary["sparsity"]["kept"] == jp.n_keep_for(0.98, N_PRUNABLE)
    config = importlib.import_module("configs.lenet300_mnist_gradual").get_config("smoke")
    schedule = prune.make_schedule(config.pruning.schedule)
    updates = [r for r in _records(workdir) if "achieved_sparsity" in r]
    assert len(updates) == 4
    for record in updates:
        assert record["kept"] == jp.n_keep_for(schedule.sparsity_at(record["step"] - 1), N_PRUNABLE)
    # The same masks (updated inside the jitted step) and records as on 1 x 8 devices.
    one, _ = runs["gradual_1"]
    _assert_same_records(_records(workdir), _records(one), exact=False)
    r1, r2 = jp.load_run(one), jp.load_run(workdir)
    for m1, m2 in zip(jax.tree.leaves(r1.masks), jax.tree.leaves(r2.masks), strict=True):
        np.testing.assert_array_equal(m2, m1)


@pytest.mark.parametrize("run", ["gmp_2", "gradual_2"])
def test_only_process_zero_writes_and_prints(runs, run):
    workdir, (out0, out1) = runs[run]
    assert "TOTAL" in out0 and "TOTAL" not in out1
    lines = (workdir / "metrics.jsonl").read_text().splitlines()
    assert len(lines) == len(set(lines))
    assert sorted(p.name for p in (workdir / "plots").iterdir()) == [
        "effective_sparsity.png",
        "layer_sparsity.png",
        "learning_curve.png",
    ]


@pytest.mark.parametrize(
    "flags, message",
    [
        (("localhost:1234", None, None), "--num_processes, --process_id missing"),
        ((None, 2, 0), "--coordinator_address missing"),
        (("localhost", 2, 0), "--coordinator_address must be HOST:PORT, got 'localhost'"),
        (("localhost:1234", 0, 0), "--num_processes must be >= 1, got 0"),
        (("localhost:1234", 2, 2), "--process_id must be in [0, 1] (--num_processes=2), got 2"),
        (("localhost:1234", 2, -1), "--process_id must be in [0, 1]"),
    ],
)
def test_bad_launch_flags_are_refused_naming_the_flag(flags, message):
    with pytest.raises(ValueError) as info:
        distributed.check_flags(*flags)
    assert message in str(info.value)


def test_launch_flags_given_or_not():
    assert distributed.check_flags(None, None, None) is False
    assert distributed.check_flags("10.0.0.1:8476", 4, 3) is True
    assert distributed.initialize() is False  # nothing given, no cluster: one process


@pytest.mark.parametrize(
    "environ, found",
    [
        ({}, None),
        ({"TPU_WORKER_HOSTNAMES": "t1k-w-0"}, None),  # a single-host TPU VM
        ({"TPU_WORKER_HOSTNAMES": "t1k-w-0,t1k-w-1"}, "TPU_WORKER_HOSTNAMES"),
        ({"SLURM_STEP_NUM_TASKS": "1"}, None),
        ({"SLURM_STEP_NUM_TASKS": "16"}, "SLURM_STEP_NUM_TASKS"),
        ({"OMPI_COMM_WORLD_SIZE": "2"}, "OMPI_COMM_WORLD_SIZE"),
        ({"MEGASCALE_COORDINATOR_ADDRESS": "10.0.0.2:8080"}, "MEGASCALE_COORDINATOR_ADDRESS"),
    ],
)
def test_cluster_jobs_are_detected_from_their_environment(environ, found):
    assert distributed.detect_cluster(environ) == found


def test_main_refuses_partial_launch_flags_with_exit_code_2(tmp_path):
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "jaxprune.main",
            "--config=configs/lenet300_mnist_gmp.py:smoke",
            f"--workdir={tmp_path}",
            "--num_processes=2",
        ],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2, result.stderr
    assert result.stderr.strip().splitlines()[-1] == (
        "jaxprune: error: --coordinator_address, --process_id missing: a multi-process run needs "
        "--coordinator_address HOST:PORT, --num_processes N and --process_id I (0 <= I < N) on "
        "every process"
    )
    assert not list(tmp_path.iterdir())
