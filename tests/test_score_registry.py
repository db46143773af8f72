"""``jp.scores.register``: which re-registrations pass silently and which need overwrite=True.

Pinned down: the same object is a no-op; a redefinition (same module and qualname, e.g. a
re-run notebook cell in ``__main__``, edited or not) replaces the entry; a different function,
a factory closure or a lambda under a taken name, and anything under a built-in name, raise a
ValueError naming the score and ``overwrite=True``, which always allows the replacement.
"""

import jax.numpy as jnp
import pytest

import jaxprune as jp
from jaxprune.pruning import scores as scores_lib

NAME = "registry_test_score"

CELL = """
import jaxprune as jp

@jp.scores.register({name!r})
def my_score(params, **ctx):
    return {{k: v * {factor} for k, v in params.items()}}
"""


@pytest.fixture(autouse=True)
def _clean_registry():
    yield
    scores_lib._REGISTRY.pop(NAME, None)


def _run_cell(factor: float) -> dict:
    """Executes a notebook cell the way IPython does: a fresh function in module ``__main__``."""
    namespace = {"__name__": "__main__"}
    exec(compile(CELL.format(name=NAME, factor=factor), "<cell>", "exec"), namespace)
    return namespace


def _value(name: str) -> float:
    return float(jp.scores.get(name)({"w": jnp.ones(())})["w"])


def test_same_object_registers_again_silently():
    def score(params, **ctx):
        return params

    assert jp.scores.register(NAME)(score) is score
    assert jp.scores.register(NAME)(score) is score
    assert jp.scores.get(NAME) is score
    assert jp.scores.register("magnitude")(jp.scores.magnitude) is jp.scores.magnitude


def test_rerun_notebook_cell_replaces_the_score_even_when_edited():
    first = _run_cell(2.0)["my_score"]
    second = _run_cell(3.0)["my_score"]  # new object, same __main__.my_score
    assert first is not second and second.__module__ == "__main__"
    assert jp.scores.get(NAME) is second and _value(NAME) == 3.0


def test_different_function_needs_overwrite():
    _run_cell(2.0)

    def other(params, **ctx):
        return params

    with pytest.raises(ValueError, match=rf"'{NAME}' is already registered.*overwrite=True"):
        jp.scores.register(NAME)(other)
    with pytest.raises(ValueError, match="overwrite=True"):  # two lambdas share '<lambda>'
        jp.scores.register(NAME)(lambda params, **ctx: params)
    assert _value(NAME) == 2.0
    jp.scores.register(NAME, overwrite=True)(other)
    assert jp.scores.get(NAME) is other


def test_factory_closures_are_different_functions():
    def make(factor):
        def score(params, **ctx):
            return {k: v * factor for k, v in params.items()}

        return score

    jp.scores.register(NAME)(make(2.0))
    with pytest.raises(ValueError, match="overwrite=True"):
        jp.scores.register(NAME)(make(5.0))
    assert _value(NAME) == 2.0


def test_builtin_names_are_never_replaced_silently():
    builtin = jp.scores.get("magnitude")
    namespace = {"__name__": builtin.__module__}  # even a look-alike of the built-in
    exec("def magnitude(params, **ctx):\n    return params\n", namespace)
    with pytest.raises(ValueError, match=r"'magnitude' is already registered \(a built-in"):
        jp.scores.register("magnitude")(namespace["magnitude"])
    with pytest.raises(ValueError, match="overwrite=True"):
        jp.scores.register("magnitude")(lambda params, **ctx: params)
    assert jp.scores.get("magnitude") is builtin
    try:
        jp.scores.register("magnitude", overwrite=True)(namespace["magnitude"])
        assert jp.scores.get("magnitude") is namespace["magnitude"]
    finally:
        scores_lib._REGISTRY["magnitude"] = builtin
