"""Does structured pruning really speed a model up? Narrow model vs channel-masked wide model.

For VGG-16 with Li et al.'s "VGG-16-A" L1-norm filter pruning (half the filters of conv 1 and
convs 8-13) and for ResNet-56 "B", this builds the wide model, the same model with the dropped
channels masked to zero (what an unstructured framework would run), and the narrow model made by
``jaxprune.models.channels.shrink_model``; checks that the masked and narrow outputs agree, then
prints the median wall time of a jitted eval forward pass on one batch of 32x32x3 inputs, the
speed-up of the narrow model over the masked one (measured in the same run) and, next to it, the
FLOPs ratio from ``jp.flops_report`` (the speed-up one could hope for).

Usage: python benchmarks/structured_speedup.py [--batch 128] [--repeats 10]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import jax
import numpy as np

if __package__ in (None, ""):  # run as a script: make the repository root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import jaxprune as jp  # noqa: E402
from benchmarks.global_threshold import median_time  # noqa: E402
from jaxprune.models import channels, get_model  # noqa: E402
from jaxprune.pruning import structured  # noqa: E402

SETTINGS = {
    # name: (model, default ratio, (regex, ratio) overrides, skip regexes)
    "vgg16_a": ("vgg16", 0.5, (), (r"^Conv_[1-6]$",)),
    "resnet56_b": (
        "resnet56",
        0.1,
        (
            (r"^BasicBlock_[0-8]/", 0.6),
            (r"^BasicBlock_(9|1[0-7])/", 0.3),
            (r"^BasicBlock_(1[89]|2[0-6])/", 0.1),
        ),
        (r"^BasicBlock_(7|8|9|16|18|26)/",),
    ),
}


def run(name: str, batch: int, repeats: int) -> dict[str, float]:
    """Times masked-wide and narrow eval forward passes of setting ``name``."""
    model_name, ratio, overrides, skip = SETTINGS[name]
    model = get_model(model_name, 10)
    x = jax.random.normal(jax.random.key(1), (batch, 32, 32, 3))
    variables = jax.device_get(
        jax.jit(lambda k: model.init({"params": k}, x[:1], train=False))(
            jax.random.key(0, impl="rbg")
        )
    )
    groups = channels.channel_groups(model, variables)
    ratios = structured.layer_ratios(groups, ratio, overrides, skip)
    kept = structured.select_top(structured.filter_l1_norms(variables, groups), ratios)
    masks = structured.channel_masks(variables, groups, kept)
    masked = dict(variables, params=jp.apply_mask(variables["params"], masks))
    narrow_model, narrow_vars = channels.shrink_model(model, variables, kept)

    wide_fn = jax.jit(lambda v, x: model.apply(v, x, train=False))
    narrow_fn = jax.jit(lambda v, x: narrow_model.apply(v, x, train=False))
    np.testing.assert_allclose(
        np.asarray(narrow_fn(narrow_vars, x)), np.asarray(wide_fn(masked, x)), rtol=1e-4, atol=1e-4
    )
    t_wide = median_time(lambda: wide_fn(masked, x), repeats)
    t_narrow = median_time(lambda: narrow_fn(narrow_vars, x), repeats)

    def apply_fn(m, v):
        return lambda p, inputs: m.apply({**v, "params": p}, inputs, train=False)

    dense = jp.flops_report(apply_fn(model, variables), variables["params"], x[:1])
    small = jp.flops_report(apply_fn(narrow_model, narrow_vars), narrow_vars["params"], x[:1])
    return {
        "masked_s": t_wide,
        "narrow_s": t_narrow,
        "speedup": t_wide / t_narrow,
        "flops_ratio": dense.total_flops / small.total_flops,
        "params_ratio": dense.total_params / small.total_params,
    }


def main() -> None:
    """Prints one line per setting."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--settings", nargs="+", default=list(SETTINGS))
    args = parser.parse_args()
    print(f"devices: {jax.devices()}; batch {args.batch}, median of {args.repeats}")
    print(
        f"{'setting':<12} {'masked wide':>12} {'narrow':>10} {'speed-up':>9} "
        f"{'FLOPs ratio':>12} {'params ratio':>13}"
    )
    for name in args.settings:
        r = run(name, args.batch, args.repeats)
        print(
            f"{name:<12} {r['masked_s'] * 1e3:>10.1f}ms {r['narrow_s'] * 1e3:>8.1f}ms "
            f"{r['speedup']:>8.2f}x {r['flops_ratio']:>11.2f}x {r['params_ratio']:>12.2f}x"
        )


if __name__ == "__main__":
    main()
