"""The ``mesh`` config block on 8 devices: (data 8), (data 2 x model 4) and one device.

With ``mesh.model = 4`` every state leaf that 4 divides is split over the model axis (FSDP);
the masks, the kept counts and every integer must equal the one-device run's, the floats up to
the order in which the all-reduce adds the gradient.
"""

import json

import jax
import numpy as np
import pytest
from jax.sharding import PartitionSpec

import jaxprune as jp
from configs import lenet300_mnist_gmp, lenet300_mnist_gradual
from jaxprune import training
from jaxprune.training import prune, sharding

N_PRUNABLE = 784 * 300 + 300 * 100 + 100 * 10
LAYOUTS = {"one_device": (1, 1), "data8": (0, 1), "data2_model4": (2, 4)}


def _records(workdir):
    return [json.loads(r) for r in (workdir / "metrics.jsonl").read_text().splitlines()]


def _run(module, layout, workdir, monkeypatch):
    """Runs ``module``'s smoke config on ``layout``; (result, state shardings of the steps)."""
    config = module.get_config("smoke")
    config.mesh.data, config.mesh.model = LAYOUTS[layout]
    seen = []
    original = sharding.jit_train_step

    def spy(step, mesh, state_sharding=None):
        seen.append((mesh, state_sharding))
        return original(step, mesh, state_sharding)

    monkeypatch.setattr(sharding, "jit_train_step", spy)
    return training.train_and_evaluate(config, workdir), seen


@pytest.mark.parametrize(
    "module, layouts",
    [
        (lenet300_mnist_gmp, list(LAYOUTS)),
        # The gradual flow on 8 data devices is tests/multidevice/test_gradual_flow.py's run.
        (lenet300_mnist_gradual, ["one_device", "data2_model4"]),
    ],
)
def test_layouts_give_the_one_device_masks(module, layouts, tmp_path, monkeypatch):
    results, shardings = {}, {}
    for layout in layouts:
        results[layout], shardings[layout] = _run(module, layout, tmp_path / layout, monkeypatch)
    want = results["one_device"]
    assert want.summary["sparsity"]["kept"] == jp.n_keep_for(0.98, N_PRUNABLE)
    for layout, got in results.items():
        assert got.summary["sparsity"] == want.summary["sparsity"], layout
        data, model = LAYOUTS[layout]
        assert got.summary["mesh"] == (
            {"data": data or 8} if model == 1 else {"data": data, "model": model}
        )
        for m_got, m_want in zip(
            jax.tree.leaves(got.masks), jax.tree.leaves(want.masks), strict=True
        ):
            np.testing.assert_array_equal(m_got, m_want, err_msg=layout)
        params_got, params_want = got.variables["params"], want.variables["params"]
        for p_got, p_want in zip(
            jax.tree.leaves(params_got), jax.tree.leaves(params_want), strict=True
        ):
            np.testing.assert_allclose(p_got, p_want, rtol=1e-4, atol=1e-5, err_msg=layout)
        records, reference = _records(tmp_path / layout), _records(tmp_path / "one_device")
        assert [(r["step"], r["phase"]) for r in records] == [
            (r["step"], r["phase"]) for r in reference
        ]
        for r, ref in zip(records, reference, strict=True):
            for key in ("kept", "achieved_sparsity", "sparsity", "effective_sparsity"):
                if key in ref:
                    assert r[key] == ref[key], (layout, key, r)
    # (data 2 x model 4): the kernels, biases, masks and Adam moments are split 4 ways.
    mesh, placed = shardings["data2_model4"][0]
    assert dict(mesh.shape) == {"data": 2, "model": 4}
    specs = {
        jax.tree_util.keystr(path): s.spec
        for path, s in jax.tree_util.tree_flatten_with_path(placed)[0]
    }
    split = [k for k, spec in specs.items() if "model" in str(spec)]
    assert specs[".params['Dense_0']['kernel']"] == PartitionSpec("model")
    assert specs[".params['Dense_2']['bias']"] == PartitionSpec()  # 10 outputs: not split
    # The masks and the Adam moments live in the optimizer state (jp.masked): split alike.
    mask_keys = [k for k in split if ".masks" in k and "Dense_0" in k and "kernel" in k]
    moment_keys = [k for k in split if ".mu" in k and "Dense_0" in k and "kernel" in k]
    assert mask_keys and moment_keys, sorted(specs)
    assert all(specs[k] == PartitionSpec("model") for k in mask_keys + moment_keys)
    if module is lenet300_mnist_gradual:
        schedule = prune.make_schedule(module.get_config("smoke").pruning.schedule)
        updates = [r for r in _records(tmp_path / "data2_model4") if "achieved_sparsity" in r]
        assert updates and all(
            r["kept"] == jp.n_keep_for(schedule.sparsity_at(r["step"] - 1), N_PRUNABLE)
            for r in updates
        )
