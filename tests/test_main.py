"""Tests of the command line: `python -m jaxprune.main --config ... --workdir ...`."""

import json
import os
import subprocess
import sys
from pathlib import Path

import jax
import pytest

import jaxprune as jp

REPO = Path(__file__).resolve().parents[1]
SMOKE = "configs/lenet300_mnist_gmp.py:smoke"


def _main(*args, timeout=300):
    return subprocess.run(
        [sys.executable, "-m", "jaxprune.main", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_cli_runs_smoke_config_with_overrides(tmp_path):
    out = _main(
        f"--config={SMOKE}",
        f"--workdir={tmp_path}",
        "--config.pruning.sparsity=0.99",
        "--config.training.steps=20",
        "--config.finetune.steps=10",
    )
    assert out.returncode == 0, out.stderr[-3000:]
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["steps"] == 30
    assert summary["target_sparsity"] == 0.99
    assert summary["sparsity"]["kept"] == round(0.01 * 266_200)  # 2662
    config = json.loads((tmp_path / "config.json").read_text())
    assert (config["pruning"]["sparsity"], config["training"]["steps"]) == (0.99, 20)
    # The final table: one line per phase with its accuracy, then per-layer sparsity.
    finetune_line = next(line for line in out.stdout.splitlines() if line.startswith("finetune"))
    assert f"{100 * summary['test_accuracy']:.2f}%" in finetune_line
    for layer in ("Dense_0/kernel", "Dense_1/kernel", "Dense_2/kernel"):
        assert layer in out.stdout
    # Rerunning the finished run resumes from its last checkpoint and changes nothing.
    again = _main(
        f"--config={SMOKE}",
        f"--workdir={tmp_path}",
        "--config.pruning.sparsity=0.99",
        "--config.training.steps=20",
        "--config.finetune.steps=10",
    )
    assert again.returncode == 0, again.stderr[-3000:]
    resumed = json.loads((tmp_path / "summary.json").read_text())
    assert resumed["phases"] == summary["phases"]
    # The command line keeps compiled programs in JAXPRUNE_COMPILATION_CACHE (conftest.py).
    cache = Path(os.environ["JAXPRUNE_COMPILATION_CACHE"])
    assert cache.is_dir() and any(cache.iterdir())


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("--config.pruning.sparsty=0.5", 'Did you mean "sparsity"'),
        ("--config.pruning.sparsity=1.5", "pruning.sparsity must be in [0, 1], got 1.5"),
        ("--config.model.name=resnet9000", "model.name must be one of"),
        ("--config.pruning.score=oracle", "pruning.score must be one of"),
    ],
)
def test_cli_rejects_bad_config_at_start(tmp_path, override, message):
    out = _main(f"--config={SMOKE}", f"--workdir={tmp_path}", override, timeout=120)
    assert out.returncode != 0
    assert message in out.stderr
    assert not (tmp_path / "checkpoints").exists()


def test_cli_requires_workdir():
    out = _main(f"--config={SMOKE}", timeout=120)
    assert out.returncode != 0
    assert "workdir" in out.stderr


def test_enable_compilation_cache_from_python(tmp_path, monkeypatch):
    before = jax.config.jax_compilation_cache_dir
    try:
        assert jp.enable_compilation_cache("off") is None
        assert jax.config.jax_compilation_cache_dir == before  # "off" changes nothing
        monkeypatch.setenv("JAXPRUNE_COMPILATION_CACHE", str(tmp_path / "env"))
        assert jp.enable_compilation_cache() == str(tmp_path / "env")
        assert jp.enable_compilation_cache(tmp_path / "x") == str(tmp_path / "x")
        assert jax.config.jax_compilation_cache_dir == str(tmp_path / "x")
        assert jax.config.jax_persistent_cache_min_compile_time_secs == 0.0  # every program
    finally:
        jax.config.update("jax_compilation_cache_dir", before)
