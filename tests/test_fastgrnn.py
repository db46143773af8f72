"""FastGRNN (models.fastgrnn) and HAR-2 (data.har): counts, a numpy oracle of the recurrence, an
explicit unrolled-graph oracle of effective sparsity, the UCI HAR parser on a fake folder, and an
end-to-end smoke run of configs/fastgrnn_har2_gmp.py."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxprune as jp
from configs import fastgrnn_har2_gmp
from jaxprune import data, training
from jaxprune.data import har
from jaxprune.data.tfds_source import DatasetNotPreparedError
from jaxprune.models import FastGRNN, channels, get_model, model_names

KEY = jax.random.PRNGKey(0)


def _init(model, shape):
    x = jax.random.normal(jax.random.PRNGKey(1), shape)
    return model.init(KEY, x)["params"], x


def _n_params(params):
    return sum(int(np.size(leaf)) for leaf in jax.tree.leaves(params))


# ---------------------------------------------------------------- model: structure and counts


@pytest.mark.parametrize(
    "w_rank, u_rank, prunable",
    [
        (None, None, ["Dense_0/kernel", "U/kernel", "W/kernel"]),
        (3, 5, ["Dense_0/kernel", "U1/kernel", "U2/kernel", "W1/kernel", "W2/kernel"]),
    ],
)
def test_param_count_shapes_and_prunable_leaves(w_rank, u_rank, prunable):
    d, h, c, t = 9, 16, 3, 7
    model = FastGRNN(num_classes=c, hidden_size=h, w_rank=w_rank, u_rank=u_rank)
    params, x = _init(model, (4, t, d))
    w = d * h if w_rank is None else d * w_rank + w_rank * h
    u = h * h if u_rank is None else 2 * h * u_rank
    assert _n_params(params) == w + u + 2 * h + 2 + h * c + c
    assert jp.prunable_names(params) == prunable  # biases, zeta, nu never prunable
    assert model.apply({"params": params}, x).shape == (4, c)
    np.testing.assert_allclose(params["bias_gate"], 1.0)
    np.testing.assert_allclose(params["bias_update"], 1.0)
    assert params["zeta"].tolist() == [1.0] and params["nu"].tolist() == [-4.0]
    # MACs: x W at every step, U inside the scan once per step, the classifier once.
    report = jp.flops_report(lambda p, x: model.apply({"params": p}, x), params, x[:1])
    assert report.total_flops == t * (w + u) + h * c


def test_har2_default_size_and_registry():
    model = get_model("fastgrnn", 2)
    assert isinstance(model, FastGRNN) and "fastgrnn" in model_names()
    params = jax.eval_shape(model.init, KEY, jnp.zeros((1, 128, 9)))["params"]
    assert _n_params(params) == 9 * 80 + 80 * 80 + 2 * 80 + 2 + 80 * 2 + 2 == 7_444
    half = get_model("FastGRNN", 6, width=0.5, u_rank=8)
    params, x = _init(half, (2, 5, 3))
    assert params["U1"]["kernel"].shape == (40, 8) and half.apply({"params": params}, x).shape == (
        2,
        6,
    )
    with pytest.raises(ValueError, match=r"inputs \(batch, time, features\)"):
        model.init(KEY, jnp.zeros((1, 128, 9, 1)))
    with pytest.raises(ValueError, match="w_rank must be None .* got 0"):
        FastGRNN(w_rank=0).init(KEY, jnp.zeros((1, 4, 2)))
    with pytest.raises(ValueError, match="gate_nonlinearity must be one of"):
        FastGRNN(gate_nonlinearity="softsign").init(KEY, jnp.zeros((1, 4, 2)))


def test_structured_pruning_removes_hidden_units_l1_only():
    model = get_model("fastgrnn", 2)
    variables = model.init(KEY, jnp.zeros((1, 4, 9)))
    (group,) = channels.channel_groups(model, variables)
    assert (group.name, group.size, group.bn_scale) == ("hidden", 80, None)
    assert ("params/U/kernel", 1) in group.producers
    assert ("params/U/kernel", 0, 1) in group.consumers
    config = fastgrnn_har2_gmp.get_config("smoke")
    config.structured.method = "l1_filter"
    training.validate_config(config)
    config.structured.method = "slimming"  # no BatchNorm scales to threshold
    with pytest.raises(ValueError, match="needs a model with BatchNorm scales.*'fastgrnn'"):
        training.validate_config(config)


# ---------------------------------------------------------------- forward: numpy oracle


def _numpy_fastgrnn(params, x, gate, update):
    p = jax.tree.map(lambda a: np.asarray(a, np.float64), params)
    w = p["W"]["kernel"] if "W" in p else p["W1"]["kernel"] @ p["W2"]["kernel"]
    u = p["U"]["kernel"] if "U" in p else p["U1"]["kernel"] @ p["U2"]["kernel"]
    zeta, nu = (1 / (1 + np.exp(-p[k][0])) for k in ("zeta", "nu"))
    h = np.zeros((x.shape[0], w.shape[1]))
    for t in range(x.shape[1]):
        pre = x[:, t] @ w + h @ u
        z = gate(pre + p["bias_gate"])
        c = update(pre + p["bias_update"])
        h = z * h + (zeta * (1 - z) + nu) * c
    return h @ p["Dense_0"]["kernel"] + p["Dense_0"]["bias"]


def _sigmoid(v):
    return 1 / (1 + np.exp(-v))


@pytest.mark.parametrize(
    "kwargs, gate, update",
    [
        ({}, _sigmoid, np.tanh),
        ({"w_rank": 2, "u_rank": 3}, _sigmoid, np.tanh),
        (
            {"gate_nonlinearity": "tanh", "update_nonlinearity": "quant_sigmoid"},
            np.tanh,
            lambda v: np.clip((v + 1) / 2, 0, 1),
        ),
    ],
)
def test_forward_matches_numpy_recurrence(kwargs, gate, update):
    model = FastGRNN(num_classes=3, hidden_size=5, zeta_init=0.3, nu_init=-1.0, **kwargs)
    params, x = _init(model, (3, 6, 4))
    # Non-trivial biases and scalars, so that every term of the update is exercised.
    params = dict(params)
    rng = np.random.default_rng(0)
    for name in ("bias_gate", "bias_update"):
        params[name] = jnp.asarray(rng.normal(size=5), jnp.float32)
    expected = _numpy_fastgrnn(params, np.asarray(x, np.float64), gate, update)
    got = model.apply({"params": params}, x)
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)


# ---------------------------------------------------------------- effective sparsity oracle


def _propagate(reach, matrix):
    return (reach.astype(np.int64) @ matrix.astype(np.int64)) > 0


def _back(reach, matrix):
    return (matrix.astype(np.int64) @ reach.astype(np.int64)) > 0


def _effective_oracle(w_chain, u_chain, classifier, steps):
    """Edges of the time-unrolled graph on an input -> output path, per kept weight entry.

    Units: inputs x_t (all reachable), W-chain units, U-chain units, h_t (h_0 is a constant),
    logits. Edges: kept W / U / classifier entries at every step; h_{t-1}[j] -> h_t[j] (the
    gate product z_t * h_{t-1}); pre_t[j] -> h_t[j]. Biases, zeta and nu carry no signal.
    """
    d, h = w_chain[0].shape[0], w_chain[-1].shape[1]
    fw_h = [np.zeros(h, bool)]
    w_in, u_in = [], []
    for _ in range(steps):
        ins, reach = [], np.ones(d, bool)
        for m in w_chain:
            ins.append(reach)
            reach = _propagate(reach, m)
        w_in.append(ins)
        ins, from_u = [], fw_h[-1]
        for m in u_chain:
            ins.append(from_u)
            from_u = _propagate(from_u, m)
        u_in.append(ins)
        fw_h.append(reach | from_u | fw_h[-1])
    bw_h = classifier.any(axis=1)
    w_out, u_out = [None] * steps, [None] * steps
    for t in reversed(range(steps)):  # bw_h: units of h_{t+1} that reach a logit
        outs, back = [None] * len(w_chain), bw_h
        for i in reversed(range(len(w_chain))):
            outs[i] = back
            back = _back(back, w_chain[i])
        w_out[t] = outs
        outs, back = [None] * len(u_chain), bw_h
        for i in reversed(range(len(u_chain))):
            outs[i] = back
            back = _back(back, u_chain[i])
        u_out[t] = outs
        bw_h = bw_h | back
    eff_w = [np.zeros_like(m) for m in w_chain]
    eff_u = [np.zeros_like(m) for m in u_chain]
    for t in range(steps):
        for i, m in enumerate(w_chain):
            eff_w[i] |= m & np.outer(w_in[t][i], w_out[t][i])
        for i, m in enumerate(u_chain):
            eff_u[i] |= m & np.outer(u_in[t][i], u_out[t][i])
    eff_c = classifier & fw_h[-1][:, None]
    return eff_w, eff_u, eff_c


@pytest.mark.parametrize("low_rank", [False, True])
def test_effective_mask_matches_unrolled_graph_oracle(low_rank):
    steps = 3  # short: units far from the output in U hops are cut by the sequence length
    kwargs = {"w_rank": 2, "u_rank": 2} if low_rank else {}
    model = FastGRNN(num_classes=2, hidden_size=5, **kwargs)
    params, x = _init(model, (1, steps, 3))

    def apply_fn(p, x):
        return model.apply({"params": p}, x)

    w_names = ["W1", "W2"] if low_rank else ["W"]
    u_names = ["U1", "U2"] if low_rank else ["U"]
    rng = np.random.default_rng(1)
    nontrivial = 0
    for trial in range(12):
        density = (0.15, 0.3, 0.5)[trial % 3]
        mask = jax.tree.map(lambda a: np.ones(a.shape, bool), params)
        for name in [*w_names, *u_names, "Dense_0"]:
            shape = params[name]["kernel"].shape
            mask[name] = dict(mask[name], kernel=rng.random(shape) < density)
        emask = jp.effective_mask(apply_fn, params, mask, x)
        eff_w, eff_u, eff_c = _effective_oracle(
            [mask[n]["kernel"] for n in w_names],
            [mask[n]["kernel"] for n in u_names],
            mask["Dense_0"]["kernel"],
            steps,
        )
        for name, expected in zip(
            [*w_names, *u_names, "Dense_0"], [*eff_w, *eff_u, eff_c], strict=True
        ):
            np.testing.assert_array_equal(np.asarray(emask[name]["kernel"]), expected, name)
            nontrivial += int((expected != mask[name]["kernel"]).any())
        for name in ("bias_gate", "bias_update", "zeta", "nu"):
            assert np.asarray(emask[name]).all()  # not prunable: all-True, as in the mask
    assert nontrivial > 0  # the oracle did cut kept weights somewhere


def test_effective_mask_dense_all_effective_and_no_w_none():
    model = FastGRNN(num_classes=2, hidden_size=6)
    params, x = _init(model, (1, 4, 3))

    def apply_fn(p, x):
        return model.apply({"params": p}, x)

    dense = jax.tree.map(lambda a: np.ones(a.shape, bool), params)
    emask = jp.effective_mask(apply_fn, params, dense, x)
    assert all(np.asarray(m).all() for m in jax.tree.leaves(emask))
    no_w = dict(dense, W={"kernel": np.zeros((3, 6), bool)})
    emask = jp.effective_mask(apply_fn, params, no_w, x)
    for name in ("W", "U", "Dense_0"):
        assert not np.asarray(emask[name]["kernel"]).any(), name


# ---------------------------------------------------------------- HAR-2 parser


def _write_fake_har(root, sizes=(("train", 6), ("test", 4)), seed=0):
    """A tiny 'UCI HAR Dataset' folder; returns {split: (raw float32[N, 128, 9], labels)}."""
    rng = np.random.default_rng(seed)
    out = {}
    for split, n in sizes:
        folder = root / split / "Inertial Signals"
        folder.mkdir(parents=True)
        raw = rng.normal(size=(n, har.TIME_STEPS, len(har.SIGNALS))).astype(np.float32)
        raw[:, 5, 2] = 0.25  # a constant feature: std 0 -> divided by 1
        for k, name in enumerate(har.SIGNALS):
            # The UCI layout: fixed-width scientific notation with leading spaces.
            lines = [" ".join(f"{v: .7e}" for v in row) for row in raw[:, :, k]]
            (folder / f"{name}_{split}.txt").write_text("\n".join(" " + s for s in lines) + "\n")
        labels = np.arange(n) % 6 + 1
        (root / split / f"y_{split}.txt").write_text("".join(f"{y}\n" for y in labels))
        out[split] = (raw, labels)
    return out


def test_har2_parser_labels_layout_and_normalisation(tmp_path):
    raw = _write_fake_har(tmp_path / har.FOLDER)
    ds_parent = data.get_dataset("har2", data_dir=str(tmp_path))  # folder holding the dataset
    ds_self = har.load(data_dir=str(tmp_path / har.FOLDER))  # the dataset folder itself
    for ds in (ds_parent, ds_self):
        assert (ds.num_classes, ds.input_shape, ds.num_train, ds.num_test) == (2, (128, 9), 6, 4)
    train_x, train_y = ds_parent.arrays("train")
    test_x, test_y = ds_parent.arrays("test")
    # {Sitting 4, Laying 6, Walking_Upstairs 2} -> 0; {Standing 5, Walking 1, Downstairs 3} -> 1.
    assert train_y.tolist() == [1, 0, 1, 0, 1, 0] and test_y.tolist() == [1, 0, 1, 0]
    assert train_x.dtype == np.float32 and train_x.shape == (6, 128, 9)
    # Time-major (t, signal) layout in SIGNALS order, standardised per position with train stats.
    mean = raw["train"][0].astype(np.float64).mean(axis=0)
    std = raw["train"][0].astype(np.float64).std(axis=0)
    std[std < 1e-6] = 1.0
    np.testing.assert_allclose(train_x, (raw["train"][0] - mean) / std, atol=2e-6)
    np.testing.assert_allclose(test_x, (raw["test"][0] - mean) / std, atol=2e-6)
    np.testing.assert_allclose(train_x.mean(axis=0), 0.0, atol=1e-6)
    assert np.allclose(train_x.std(axis=0)[std != 1.0], 1.0, atol=1e-5)
    assert np.all(train_x[:, 5, 2] == 0.0)
    batch = next(ds_parent.train_batches(4, seed=0))
    assert batch["image"].shape == (4, 128, 9) and batch["label"].dtype == np.int32
    evals = list(ds_parent.eval_batches(3))
    assert [b["weight"].tolist() for b in evals] == [[1, 1, 1], [1, 0, 0]]
    with pytest.raises(ValueError, match="har2 has no training augmentation"):
        data.get_dataset("har2", data_dir=str(tmp_path), augment=True)


def test_har2_missing_files_error_names_every_file(tmp_path):
    _write_fake_har(tmp_path / har.FOLDER)
    gone = tmp_path / har.FOLDER / "test" / "Inertial Signals" / "body_gyro_y_test.txt"
    gone.unlink()
    with pytest.raises(har.HarNotFoundError) as info:
        data.get_dataset("har2", data_dir=str(tmp_path))
    message = str(info.value)
    assert isinstance(info.value, DatasetNotPreparedError | FileNotFoundError)
    assert f"MISSING {gone}" in message and "1 of the 20 files" in message
    for paths in har.expected_files(tmp_path / har.FOLDER).values():
        for path in paths:
            assert str(path) in message
    assert har.DOWNLOAD_URL in message
    with pytest.raises(har.HarNotFoundError, match="20 of the 20 files"):
        har.load(data_dir=str(tmp_path / "empty"))


def test_har2_synthetic_shapes_and_determinism():
    ds = data.get_dataset("har2_synthetic")
    assert (ds.input_shape, ds.num_classes, ds.num_train, ds.num_test) == ((128, 9), 2, 512, 256)
    a = ds.train_batch(8, seed=3, step=5)
    b = data.get_dataset("har2_synthetic").train_batch(8, seed=3, step=5)
    np.testing.assert_array_equal(a["image"], b["image"])
    assert set(np.unique(ds.arrays("train")[1]).tolist()) == {0, 1}
    # Process shards are the rows of the global evaluation batch.
    full = next(ds.eval_batches(8))
    second = next(ds.eval_batches(8, shard=(1, 2)))
    np.testing.assert_array_equal(second["image"], full["image"][4:])


# ---------------------------------------------------------------- end to end


def test_smoke_config_trains_prunes_to_exact_target(tmp_path):
    config = fastgrnn_har2_gmp.get_config("smoke")
    summary = training.train_and_evaluate(config, tmp_path / "run").summary
    total = 9 * 80 + 80 * 80 + 80 * 2
    report = summary["sparsity"]
    assert report["total"] == total
    assert report["kept"] == jp.n_keep_for(config.pruning.sparsity, total) == 728
    floor = math.floor(config.pruning.min_keep_fraction * total)
    layers = report["layers"]
    assert set(layers) == {"Dense_0/kernel", "U/kernel", "W/kernel"}
    assert all(layer["kept"] >= floor for layer in layers.values())  # MT
    assert list(summary["phases"]) == ["dense", "pruned", "finetune"]
    assert summary["test_accuracy"] > 0.6
