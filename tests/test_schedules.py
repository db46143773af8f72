"""Sparsity schedules: hand-computed values, update steps, validation, jit with a traced step."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxprune.pruning import schedules


def _paper_schedule():
    return schedules.polynomial(0.0, 0.9, begin_step=0, end_step=1000, frequency=100)


def test_polynomial_values_by_hand():
    s = _paper_schedule()
    # 0.9 * (1 - (1 - t/1000)^3)
    expected = {0: 0.0, 100: 0.2439, 300: 0.5913, 500: 0.7875, 900: 0.8991, 1000: 0.9, 5000: 0.9}
    for step, value in expected.items():
        assert s.sparsity_at(step) == pytest.approx(value, abs=1e-12), step
        assert float(s.sparsity_at(jnp.int32(step))) == pytest.approx(value, abs=1e-6), step


def test_polynomial_with_initial_sparsity_and_offset_window():
    s = schedules.polynomial(0.5, 0.8, begin_step=200, end_step=600, frequency=50, power=1)
    assert s.sparsity_at(0) == 0.5 and s.sparsity_at(200) == 0.5
    assert s.sparsity_at(400) == pytest.approx(0.65)
    assert s.sparsity_at(600) == pytest.approx(0.8) and s.sparsity_at(10**6) == pytest.approx(0.8)


def test_update_steps():
    s = _paper_schedule()
    updates = [t for t in range(0, 1500) if s.should_update(t)]
    assert updates == list(range(0, 1001, 100))
    assert s.update_steps(1500) == updates
    assert s.update_steps(350) == [0, 100, 200, 300]
    traced = np.asarray(jax.vmap(s.should_update)(jnp.arange(1500, dtype=jnp.int32)))
    np.testing.assert_array_equal(np.flatnonzero(traced), updates)


def test_one_shot_and_constant():
    once = schedules.one_shot(30, 0.7)
    assert [t for t in range(100) if once.should_update(t)] == [30]
    assert once.sparsity_at(0) == 0.7 and once.sparsity_at(99) == 0.7
    assert float(once.sparsity_at(jnp.int32(5))) == pytest.approx(0.7)
    const = schedules.constant(0.5, begin_step=10, frequency=20)
    assert [t for t in range(100) if const.should_update(t)] == [10, 30, 50, 70, 90]
    assert bool(const.should_update(jnp.int32(2_000_000_010)))
    assert const.sparsity_at(10**9) == 0.5
    bounded = schedules.constant(0.5, begin_step=0, end_step=40, frequency=20)
    assert [t for t in range(100) if bounded.should_update(t)] == [0, 20, 40]


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"end_step": 5, "begin_step": 10}, r"end_step must be >= begin_step \(10\), got 5"),
        ({"frequency": 0}, "frequency must be >= 1, got 0"),
        ({"initial_sparsity": -0.1}, r"initial_sparsity must be in \[0, 1\], got -0.1"),
        ({"final_sparsity": 1.5}, r"final_sparsity must be in \[0, 1\], got 1.5"),
        ({"final_sparsity": float("nan")}, r"final_sparsity must be in \[0, 1\], got nan"),
        ({"begin_step": -1}, "begin_step must be >= 0, got -1"),
        ({"frequency": 2.5}, "frequency must be an integer, got 2.5"),
        ({"power": 0}, "power must be a number > 0, got 0"),
    ],
)
def test_validation(kwargs, message):
    args = dict(initial_sparsity=0.0, final_sparsity=0.9, begin_step=0, end_step=100, frequency=10)
    args.update(kwargs)
    with pytest.raises(ValueError, match=message):
        schedules.polynomial(**args)


def test_one_shot_and_constant_validate():
    with pytest.raises(ValueError, match=r"initial_sparsity must be in \[0, 1\], got 2"):
        schedules.one_shot(0, 2)
    with pytest.raises(ValueError, match="frequency must be >= 1, got 0"):
        schedules.constant(0.5, frequency=0)


def test_jit_with_traced_step_compiles_once():
    s = _paper_schedule()
    traces = []

    @jax.jit
    def f(step):
        traces.append(1)
        return s.sparsity_at(step), s.should_update(step)

    got = [f(jnp.int32(t)) for t in (100, 150, 300, 900, 1000, 1100)]
    assert len(traces) == 1
    np.testing.assert_allclose(
        [float(v) for v, _ in got], [0.2439, 0.3472875, 0.5913, 0.8991, 0.9, 0.9], atol=1e-6
    )
    assert [bool(u) for _, u in got] == [True, False, True, True, True, False]
