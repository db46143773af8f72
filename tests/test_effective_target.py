"""Effective-target search: achieved effective sparsity <= target, within one weight of it."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxprune.pruning import quotas, scores
from jaxprune.pruning.effective import effective_mask
from jaxprune.pruning.effective_target import effective_target_mask
from jaxprune.pruning.select import global_mask, layerwise_mask, random_mask
from jaxprune.pruning.stats import sparsity_report

KEY = jax.random.key(0, impl="rbg")


class MLP(nn.Module):
    @nn.compact
    def __call__(self, x):
        for width in (16, 12, 4):
            x = nn.Dense(width)(x)
        return x


MODEL = MLP()
X = jnp.ones((1, 10))
PARAMS = MODEL.init(KEY, X)["params"]
TOTAL = 10 * 16 + 16 * 12 + 12 * 4


def apply_fn(p, x):
    return MODEL.apply({"params": p}, x)


def effective_sparsity(mask):
    emask = effective_mask(apply_fn, PARAMS, mask, X)
    return sparsity_report(PARAMS, mask, effective_mask=emask).effective_sparsity


MASK_FNS = {
    "global_magnitude": lambda s: global_mask(scores.magnitude(PARAMS), s),
    "igq_magnitude": lambda s: layerwise_mask(scores.magnitude(PARAMS), quotas.igq(PARAMS, s)),
    "random_erk": lambda s: random_mask(KEY, PARAMS, quotas.erk(PARAMS, s)),
}


@pytest.mark.parametrize("method", sorted(MASK_FNS))
def test_search_reaches_target_within_one_step(method):
    mask_fn, target = MASK_FNS[method], 0.9
    result = effective_target_mask(
        mask_fn, target, apply_fn=apply_fn, params=PARAMS, sample_input=X
    )
    assert result.effective_sparsity <= target
    assert result.effective_sparsity == pytest.approx(effective_sparsity(result.mask))
    assert result.direct_sparsity <= result.effective_sparsity
    one_more = effective_sparsity(mask_fn(result.direct_sparsity + 1 / TOTAL))
    assert one_more > target
    assert result.steps <= 12


def test_random_masks_are_nested_across_search_steps():
    previous = None
    for s in np.linspace(0.5, 0.98, 7):
        mask = MASK_FNS["random_erk"](float(s))
        if previous is not None:
            for now, before in zip(jax.tree.leaves(mask), jax.tree.leaves(previous), strict=True):
                assert not (np.asarray(now) & ~np.asarray(before)).any()
        previous = mask


def test_bad_target_is_rejected():
    with pytest.raises(ValueError, match="target"):
        effective_target_mask(
            MASK_FNS["global_magnitude"], 1.5, apply_fn=apply_fn, params=PARAMS, sample_input=X
        )
