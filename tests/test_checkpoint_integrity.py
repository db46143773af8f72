"""Checkpoint checksums: damage to a checkpoint is a CheckpointError, never a silent resume."""

import gc
import json
import re
import shutil
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from configs import lenet300_mnist_gmp
from jaxprune import training
from jaxprune.training import checkpoint, optim, run_config, sharding
from jaxprune.training import state as state_lib

# Orbax leaves the failed reads' coroutines to the garbage collector; their warnings are noise.
pytestmark = pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")

STEP = 5
CONFIG = {
    "model": {"name": "mlp", "width": 1.0},
    "training": {"learning_rate": 0.1, "log_every": 10},
}


def _state():
    """A small TrainState: a random kernel (incompressible, most of the data), Adam, masks."""
    key = jax.random.PRNGKey(0)
    variables = {
        "params": {
            "Dense_0": {"kernel": jax.random.normal(key, (128, 64)), "bias": jnp.zeros(64)},
            "Dense_1": {"kernel": jnp.full((64, 10), 0.5), "bias": jnp.ones(10)},
        },
        "batch_stats": {},
    }
    masks = jax.tree.map(lambda p: p != 0.5, variables["params"])
    state = state_lib.create_train_state(
        variables, optax.adam(0.1), jax.random.PRNGKey(1), masks=masks, step=STEP
    )
    # Non-trivial Adam moments, as after some training.
    mu = jax.tree.map(lambda p: 0.1 * p, state.params)
    nu = jax.tree.map(lambda p: p * p, state.params)
    adam = state.opt_state.inner_state[0]._replace(mu=mu, nu=nu)
    opt_state = state.opt_state._replace(inner_state=(adam, *state.opt_state.inner_state[1:]))
    return state.replace(opt_state=opt_state)


def _carry():
    return {"rewind": {"params": {"w": np.arange(600, dtype=np.float32).reshape(20, 30)}}}


def _meta(config=CONFIG):
    return {"phase": "dense", "phase_index": 0, "phase_steps": [10, 5], "config": config}


def _abstract(state, mesh=None):
    rep = sharding.replicated(mesh or sharding.make_mesh(jax.devices()[:1]))
    return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=rep), state)


def _assert_same(a, b):
    leaves_a, tree_a = jax.tree.flatten(jax.device_get(a))
    leaves_b, tree_b = jax.tree.flatten(jax.device_get(b))
    assert tree_a == tree_b
    for x, y in zip(leaves_a, leaves_b, strict=True):
        assert np.asarray(x).dtype == np.asarray(y).dtype
        np.testing.assert_array_equal(x, y)


@pytest.fixture(scope="module")
def pristine(tmp_path_factory):
    """A directory with one checkpoint (step 5, with carry), written once."""
    directory = tmp_path_factory.mktemp("pristine") / "checkpoints"
    ckpt = checkpoint.Checkpointer(directory, config=CONFIG)
    ckpt.save(STEP, _state(), _meta(), carry=_carry())
    ckpt.close()
    return directory


@pytest.fixture
def ckdir(pristine, tmp_path):
    directory = tmp_path / "checkpoints"
    shutil.copytree(pristine, directory)
    return directory


def _resume(directory, config=CONFIG):
    """What the runner does: meta, then state (abstract, sharded), then carry."""
    ckpt = checkpoint.Checkpointer(directory, config=config)
    try:
        step = ckpt.latest_step()
        meta = ckpt.restore_meta(step)
        state = ckpt.restore_state(step, _abstract(_state()))
        carry = ckpt.restore_carry(step)
        return meta, state, carry
    finally:
        ckpt.close()
        gc.collect()


def _data_files(item_dir: Path) -> list[Path]:
    return sorted(item_dir.glob("ocdbt.process_*/d/*"))


def _largest(item_dir: Path) -> Path:
    return max(_data_files(item_dir), key=lambda f: f.stat().st_size)


def _flip(path: Path, position: int | None = None) -> None:
    data = bytearray(path.read_bytes())
    position = len(data) // 2 if position is None else position
    data[position] ^= 0x10
    path.write_bytes(bytes(data))


def _edit_meta(step_dir: Path, edit) -> None:
    path = step_dir / "meta" / "metadata"
    meta = json.loads(path.read_text())
    edit(meta)
    path.write_text(json.dumps(meta))


# ---- clean round trip -------------------------------------------------------------------------


def test_round_trip_is_bit_identical_and_verifies(ckdir):
    mesh = sharding.make_mesh(jax.devices()[:1])
    ckpt = checkpoint.Checkpointer(ckdir, config=CONFIG)
    meta = ckpt.restore_meta(STEP)
    assert meta == _meta()  # the integrity block is internal
    restored = ckpt.restore_state(STEP, _abstract(_state(), mesh))
    _assert_same(restored, _state())
    assert restored.params["Dense_0"]["kernel"].sharding == sharding.replicated(mesh)
    _assert_same(ckpt.restore_carry(STEP), _carry())
    assert ckpt.verify(STEP) == meta  # the raw stored tree (no abstract state) verifies too
    assert ckpt.all_steps() == [STEP]
    ckpt.close()

    stored = json.loads((ckdir / str(STEP) / "meta" / "metadata").read_text())
    integrity = stored["integrity"]
    assert integrity["step"] == STEP and integrity["algorithm"] == "sha256"
    assert integrity["config_hash"] == run_config.config_hash(CONFIG)
    assert set(integrity["state"]) == set(checkpoint.array_checksums(_state()))
    assert integrity["state"]["params/Dense_0/kernel"].startswith("float32[128, 64]:")
    assert integrity["state"]["step"].startswith("int32[]:")
    assert set(integrity["carry"]) == {"rewind/params/w"}


def test_checksum_ignores_the_device_layout(monkeypatch):
    state = _state()
    serial = checkpoint.array_checksums(state)
    monkeypatch.setattr(checkpoint, "_PARALLEL_BYTES", 0)  # the threaded path of large states
    assert checkpoint.array_checksums(state) == serial
    assert checkpoint.array_checksums(jax.device_put(state, jax.devices()[0])) == (
        checkpoint.array_checksums(jax.device_get(state))
    )
    mesh = sharding.make_mesh(jax.devices()[:1])
    on_mesh = jax.device_put(state, sharding.replicated(mesh))
    assert checkpoint.array_checksums(on_mesh) == checkpoint.array_checksums(state)


def test_config_fields_ignored_on_resume_may_differ(ckdir):
    config = json.loads(json.dumps(CONFIG))
    config["training"]["log_every"] = 1000
    meta, state, _ = _resume(ckdir, config)
    assert meta["config"] == CONFIG
    _assert_same(state, _state())


def test_no_carry_round_trip(tmp_path):
    ckpt = checkpoint.Checkpointer(tmp_path)
    ckpt.save(3, _state(), {"phase": "dense", "phase_index": 0})
    ckpt.wait()
    assert ckpt.restore_carry(3) == {}
    ckpt.verify(3, _abstract(_state()))
    ckpt.close()


def test_optimizer_state_of_another_layout_is_refused_by_name(ckdir):
    """Same config and model, other optimizer-state layout (another version): a clear error."""
    state = _state()
    tx = optax.chain(optax.adam(None), optim.scale_by_phase_lr("cosine", 0.1, 10))
    variables = {"params": jax.device_get(state.params), "batch_stats": {}}
    other = state_lib.create_train_state(variables, tx, jax.random.PRNGKey(1), step=STEP)
    ckpt = checkpoint.Checkpointer(ckdir, config=CONFIG)
    try:
        with pytest.raises(
            checkpoint.CheckpointError,
            match=r"checkpoints/5 holds an optimizer state of another layout \(13 arrays\) than "
            r"this version of jaxprune builds for this config \(17 arrays\)",
        ):
            ckpt.restore_state(STEP, _abstract(other))
        _assert_same(ckpt.restore_state(STEP, _abstract(state)), state)  # its own layout: fine
    finally:
        ckpt.close()
        gc.collect()


# ---- damage -----------------------------------------------------------------------------------


def _flip_largest_state_file(step_dir):
    _flip(_largest(step_dir / "state"))


def _flip_largest_carry_file(step_dir):
    _flip(_largest(step_dir / "carry"))


def _truncate_largest_state_file(step_dir):
    path = _largest(step_dir / "state")
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def _delete_largest_state_file(step_dir):
    _largest(step_dir / "state").unlink()


def _truncate_meta(step_dir):
    path = step_dir / "meta" / "metadata"
    path.write_bytes(path.read_bytes()[:-20])


def _edit_phase_index(step_dir):
    _edit_meta(step_dir, lambda m: m.update(phase_index=1))


def _edit_config(step_dir):
    _edit_meta(step_dir, lambda m: m["config"]["training"].update(learning_rate=0.2))


def _edit_leaf_checksum(step_dir):
    def edit(meta):
        state = meta["integrity"]["state"]
        name = "opt_state/inner_state/0/mu/Dense_0/kernel"
        state[name] = state[name][:-4] + "0000"

    _edit_meta(step_dir, edit)


def _delete_integrity(step_dir):
    _edit_meta(step_dir, lambda m: m.pop("integrity"))


def _delete_carry(step_dir):
    shutil.rmtree(step_dir / "carry")


DAMAGE = {
    "flip_state_data": (_flip_largest_state_file, r"is corrupt"),
    "flip_carry_data": (_flip_largest_carry_file, r"is corrupt"),
    "truncate_state_data": (_truncate_largest_state_file, r"corrupt"),
    "delete_state_data": (_delete_largest_state_file, r"corrupt"),
    "truncate_meta": (_truncate_meta, r"unreadable \(meta\)"),
    "edit_phase_index": (_edit_phase_index, r"corrupt: its meta .* was modified"),
    "edit_config": (_edit_config, r"corrupt: its meta .* was modified"),
    "edit_leaf_checksum": (_edit_leaf_checksum, r"corrupt: its meta .* was modified"),
    "delete_integrity": (_delete_integrity, r"predates checksums"),
    "delete_carry": (_delete_carry, r"corrupt: its carry item .* is missing"),
}


@pytest.mark.parametrize("damage", sorted(DAMAGE))
def test_damage_is_an_error_naming_the_step(ckdir, damage):
    apply, message = DAMAGE[damage]
    step_dir = ckdir / str(STEP)
    apply(step_dir)
    with pytest.raises(checkpoint.CheckpointError, match=rf"checkpoint {step_dir} .*{message}"):
        _resume(ckdir)


def test_flipped_bytes_in_the_array_data_are_all_errors(ckdir, tmp_path):
    relative = _largest(ckdir / str(STEP) / "state").relative_to(ckdir)
    size = (ckdir / relative).stat().st_size
    caught_by_checksum = []
    for i in range(8):
        copy = tmp_path / f"copy{i}"
        shutil.copytree(ckdir, copy)
        _flip(copy / relative, (2 * i + 1) * size // 16)
        with pytest.raises(
            checkpoint.CheckpointError, match=rf"checkpoint {copy / str(STEP)} is corrupt"
        ) as info:
            _resume(copy)
        if "does not match its checksum" in str(info.value):
            caught_by_checksum.append(str(info.value))
        shutil.rmtree(copy)
    # Orbax reads most such flips without complaint (zstd stores random floats raw): the
    # checksums are what catches them, naming the damaged array.
    assert caught_by_checksum
    assert all(
        re.search(r"state/(params|opt_state)/\S+ \(float32\[128, 64\]\) does not", m)
        for m in caught_by_checksum
    )


def test_changed_value_is_named_by_its_leaf(ckdir, monkeypatch):
    """A value Orbax reads back changed (one bit of an Adam moment) is named exactly."""
    read = checkpoint.Checkpointer._restore_item
    target = "opt_state/inner_state/0/nu/Dense_0/kernel"

    def damaged_read(self, step, item, abstract):
        def flip(path, leaf):
            if checkpoint._path_name(path) != target:
                return leaf
            value = np.array(leaf)
            value.view(np.uint32)[3, 7] ^= 1
            return value

        tree = read(self, step, item, abstract)
        return jax.tree_util.tree_map_with_path(flip, tree) if item == "state" else tree

    monkeypatch.setattr(checkpoint.Checkpointer, "_restore_item", damaged_read)
    with pytest.raises(
        checkpoint.CheckpointError,
        match=rf"checkpoint {ckdir / str(STEP)} is corrupt, its arrays differ from the ones "
        rf"saved: state/{target} \(float32\[128, 64\]\) does not match its checksum",
    ):
        _resume(ckdir)


def test_flipped_byte_in_any_state_file_is_an_error_or_harmless(ckdir, tmp_path):
    """No single flipped byte in any file of the state item restores wrong values.

    Flips in the array data are errors; files no restore reads (OCDBT B-tree nodes superseded
    by the merged root, or the commit marker) may change and still give the exact saved state.
    """
    files = sorted(f for f in (ckdir / str(STEP) / "state").rglob("*") if f.is_file())
    data = set(_data_files(ckdir / str(STEP) / "state"))
    assert data and len(files) > len(data)
    outcomes = {}
    for i, relative in enumerate(f.relative_to(ckdir) for f in files):
        for position in (0.5, 0.9):
            copy = tmp_path / f"copy{i}_{position}"
            shutil.copytree(ckdir, copy)
            target = copy / relative
            _flip(target, int(position * (target.stat().st_size - 1)))
            try:
                _, state, _ = _resume(copy)
            except checkpoint.CheckpointError as e:
                assert f"checkpoint {copy / str(STEP)} " in str(e)
                outcomes[relative, position] = "error"
            else:
                _assert_same(state, _state())
                outcomes[relative, position] = "harmless"
            shutil.rmtree(copy)
    largest = _largest(ckdir / str(STEP) / "state").relative_to(ckdir)
    assert outcomes[largest, 0.5] == outcomes[largest, 0.9] == "error"


def test_checkpoint_of_another_config_is_refused(ckdir):
    other = json.loads(json.dumps(CONFIG))
    other["model"]["width"] = 0.5
    with pytest.raises(
        checkpoint.ConfigMismatchError,
        match=rf"checkpoint {ckdir / str(STEP)} belongs to another config.*model\.width: 1\.0 -> "
        r"0\.5",
    ) as info:
        _resume(ckdir, other)
    assert isinstance(info.value, ValueError)  # callers that catch ValueError still refuse
    # Without an expected config, the stored one is returned for the caller to compare.
    assert checkpoint.Checkpointer(ckdir).restore_meta(STEP)["config"] == CONFIG


def test_renamed_step_directory_is_refused(ckdir):
    (ckdir / str(STEP)).rename(ckdir / "7")
    with pytest.raises(
        checkpoint.CheckpointError,
        match=rf"checkpoint {ckdir / '7'} .*holds the checkpoint of step 5",
    ):
        _resume(ckdir)


def test_restored_arrays_of_other_dtype_are_named(ckdir):
    ckpt = checkpoint.Checkpointer(ckdir)
    abstract = _abstract(_state())
    abstract = abstract.replace(
        opt_state=jax.tree.map(
            lambda x: (
                jax.ShapeDtypeStruct(x.shape, jnp.bfloat16, sharding=x.sharding)
                if x.dtype == jnp.float32
                else x
            ),
            abstract.opt_state,
        )
    )
    with pytest.raises(
        checkpoint.CheckpointError,
        match=r"opt_state/inner_state/0/mu/Dense_0/bias was saved as float32\[64\] but reads as "
        r"bfloat16\[64\]",
    ):
        ckpt.restore_state(STEP, abstract)
    ckpt.close()


# ---- end to end ---------------------------------------------------------------------------------


def test_flipped_byte_in_a_run_is_an_error_not_a_resume(tmp_path):
    config = lenet300_mnist_gmp.get_config("smoke")
    training.train_and_evaluate(config, tmp_path)
    ckdir = tmp_path / "checkpoints"
    newest = max(int(p.name) for p in ckdir.iterdir() if p.name.isdigit())
    _flip(_largest(ckdir / str(newest) / "state"))
    with pytest.raises(
        checkpoint.CheckpointError,
        match=rf"checkpoint {ckdir / str(newest)} is corrupt",
    ):
        training.train_and_evaluate(config, tmp_path)
    gc.collect()
