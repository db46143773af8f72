"""The gradual flow (masks recomputed inside the jitted data-parallel step) on 8 devices.

Before the radix select, this run ended at 5,337 kept weights instead of 5,324 with exit 0.
"""

import json

import jax

import jaxprune as jp
from configs import lenet300_mnist_gradual
from jaxprune import training
from jaxprune.training import prune

N_PRUNABLE = 784 * 300 + 300 * 100 + 100 * 10


def test_gradual_smoke_run_on_8_devices_keeps_exactly_n_keep(tmp_path):
    assert jax.device_count() == 8
    config = lenet300_mnist_gradual.get_config("smoke")
    summary = training.train_and_evaluate(config, tmp_path).summary
    assert summary["sparsity"]["kept"] == jp.n_keep_for(0.98, N_PRUNABLE) == 5324
    schedule = prune.make_schedule(config.pruning.schedule)
    records = [json.loads(r) for r in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    updates = [r for r in records if "achieved_sparsity" in r]
    assert len(updates) == 4
    for record in updates:
        target = schedule.sparsity_at(record["step"] - 1)
        assert record["kept"] == jp.n_keep_for(target, N_PRUNABLE)
    layers = summary["sparsity"]["layers"]
    assert min(v["kept"] for v in layers.values()) >= round(0.002 * N_PRUNABLE)
