"""Global magnitude threshold on ResNet-50 kernel shapes: our radix select vs jnp.sort vs numpy.

Prints, for each sparsity, the median wall time of
  * ``jnp.sort``: the textbook reference (sort the concatenated |w|, take the k-th value, compare),
  * ``eager``: ``jp.global_mask(scores, s)`` called as a user calls it, on concrete scores (on one
    CPU device: the sampled select in NumPy, ``host_select``; sharded: the compiled radix select),
  * ``jit``: the same call inside ``jax.jit`` (the compiled radix select, as in a jitted step),
  * ``+abs``: the eager call on ``jp.scores.magnitude(params)``, |w| included,
  * ``np.partition``: numpy's introselect of the k-th value on a host copy (threshold only),
and the ratios between them, plus the extra device memory XLA reserves for the jitted select
(``memory_analysis().temp_size_in_bytes``) next to the size of the params. It also checks that
both masks equal the stable-argsort reference bit for bit.

With ``--devices 8`` it re-runs itself on 8 fake CPU devices
(``XLA_FLAGS=--xla_force_host_platform_device_count=8``) with every kernel sharded along its
first axis that divides by 8 (replicated otherwise), and checks that the masks equal the
single-device ones bit for bit. The fake devices share the same CPU cores, so those times show the
cost of the partitioned program, not a speed-up.

Usage: python benchmarks/global_threshold.py [--repeats 5] [--sparsities 0.9,0.99] [--devices 8]
"""

from __future__ import annotations

import argparse
import os
import sys
import time

if "--devices" in sys.argv:  # must be set before JAX starts
    _count = sys.argv[sys.argv.index("--devices") + 1]
    os.environ["XLA_FLAGS"] = (
        os.environ.get("XLA_FLAGS", "") + f" --xla_force_host_platform_device_count={_count}"
    )

import jax
import jax.numpy as jnp
import numpy as np

import jaxprune as jp


def resnet50_kernel_shapes() -> list[tuple[int, ...]]:
    """The 54 prunable kernels of ResNet-50 (stem, 16 bottlenecks, 4 projections, fc)."""
    shapes = [(7, 7, 3, 64)]
    c_in = 64
    for width, blocks in zip([64, 128, 256, 512], [3, 4, 6, 3], strict=True):
        for b in range(blocks):
            shapes += [(1, 1, c_in, width), (3, 3, width, width), (1, 1, width, 4 * width)]
            if b == 0:
                shapes.append((1, 1, c_in, 4 * width))
            c_in = 4 * width
    shapes.append((2048, 1000))
    return shapes


def median_time(fn, repeats: int) -> float:
    jax.block_until_ready(fn())  # compile / warm up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(fn())
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def temp_bytes(jitted, *args) -> int:
    analysis = jitted.lower(*args).compile().memory_analysis()
    return int(getattr(analysis, "temp_size_in_bytes", 0)) if analysis is not None else 0


def shard_first_divisible_axis(params, count: int):
    """Places each kernel sharded on its first axis divisible by ``count`` (else replicated)."""
    from jax.sharding import Mesh, NamedSharding, PartitionSpec

    mesh = Mesh(np.asarray(jax.devices()[:count]), ("x",))

    def place(x):
        axis = next((a for a, d in enumerate(x.shape) if d % count == 0), None)
        spec = PartitionSpec() if axis is None else PartitionSpec(*([None] * axis + ["x"]))
        return jax.device_put(x, NamedSharding(mesh, spec))

    return jax.tree.map(place, params)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--sparsities", default="0.9,0.99")
    parser.add_argument("--no-check", action="store_true", help="skip the argsort agreement check")
    parser.add_argument("--sort-repeats", type=int, default=1, help="jnp.sort takes seconds")
    parser.add_argument("--devices", type=int, default=1, help="fake CPU devices; shard params")
    parser.add_argument("--no-sort", action="store_true", help="skip the jnp.sort baseline")
    args = parser.parse_args()

    shapes = resnet50_kernel_shapes()
    rng = np.random.default_rng(0)
    params = {
        f"layer_{i:02d}": {
            "kernel": jnp.asarray(
                rng.standard_normal(s, dtype=np.float32) * np.sqrt(2.0 / np.prod(s[:-1]))
            )
        }
        for i, s in enumerate(shapes)
    }
    total = sum(int(np.prod(s)) for s in shapes)
    param_bytes = 4 * total
    single_device_masks = None
    if args.devices > 1:
        single_device_masks = {
            s: jax.jit(lambda p, s=s: jp.global_mask(jp.scores.magnitude(p), s))(params)
            for s in [float(x) for x in args.sparsities.split(",")]
        }
        params = shard_first_divisible_axis(params, args.devices)
    scores = jp.scores.magnitude(params)
    host = np.concatenate([np.asarray(p["kernel"]).ravel() for p in scores.values()])
    print(
        f"backend={jax.default_backend()} devices={jax.device_count()} "
        f"leaves={len(shapes)} weights={total:,} params={param_bytes / 2**20:.1f} MiB"
    )

    ours = jax.jit(lambda sc, s: jp.global_mask(sc, s), static_argnums=1)

    @jax.jit
    def sort_reference(sc, k):
        flat = jnp.concatenate([leaf.reshape(-1) for leaf in jax.tree.leaves(sc)])
        threshold = jnp.sort(flat)[flat.size - k]
        return jax.tree.map(lambda w: w >= threshold, sc)

    print("times in seconds, from precomputed scores |w| (device arrays; host copy for numpy);")
    print("'+abs' also computes |w| from the params (eager call)")
    header = (
        f"{'sparsity':>8} {'jnp.sort':>9} {'eager':>7} {'jit':>7} {'+abs':>7} {'np.part':>8} "
        f"{'sort/eager':>11} {'eager/np':>9} {'jit/np':>7}"
    )
    print(header)
    for s in [float(x) for x in args.sparsities.split(",")]:
        k = jp.n_keep_for(s, total)
        t_sort = (
            float("nan")
            if args.no_sort
            else median_time(lambda k=k: sort_reference(scores, k), args.sort_repeats)
        )
        t_eager = median_time(lambda s=s: jp.global_mask(scores, s), args.repeats)
        t_jit = median_time(lambda s=s: ours(scores, s), args.repeats)
        t_abs = median_time(
            lambda s=s: jp.global_mask(jp.scores.magnitude(params), s), args.repeats
        )
        t_np = median_time(lambda k=k: np.partition(host, total - k)[total - k], args.repeats)
        print(
            f"{s:8.3f} {t_sort:9.3f} {t_eager:7.3f} {t_jit:7.3f} {t_abs:7.3f} {t_np:8.3f} "
            f"{t_sort / t_eager:10.1f}x {t_eager / t_np:8.2f}x {t_jit / t_np:6.2f}x"
        )
        mask = jp.global_mask(scores, s)
        jitted_mask = ours(scores, s)
        kept = sum(int(m.sum()) for m in jax.tree.leaves(mask))
        assert kept == k, (kept, k)
        same_paths = all(
            bool((np.asarray(a) == np.asarray(b)).all())
            for a, b in zip(jax.tree.leaves(mask), jax.tree.leaves(jitted_mask), strict=True)
        )
        assert same_paths, "the eager and jitted masks differ"
        if not args.no_check:
            reference = jax.jit(
                lambda sc, s: jp.global_mask(sc, s, method="sort"), static_argnums=1
            )(scores, s)
            same = all(
                bool((np.asarray(a) == np.asarray(b)).all())
                for a, b in zip(jax.tree.leaves(mask), jax.tree.leaves(reference), strict=True)
            )
            print(
                f"         kept {kept:,} = round((1-s)N); eager = jit: {same_paths}; "
                f"equal to stable argsort: {same}"
            )
            assert same
        if single_device_masks is not None:
            same = all(
                bool((np.asarray(a) == np.asarray(b)).all())
                for a, b in zip(
                    jax.tree.leaves(mask), jax.tree.leaves(single_device_masks[s]), strict=True
                )
            )
            shardings = {str(m.sharding.spec) for m in jax.tree.leaves(mask)}
            print(f"         equal to the 1-device masks: {same}; mask shardings {shardings}")
            assert same

    extra_ours = temp_bytes(ours, scores, 0.9)
    extra_sort = float("nan") if args.no_sort else temp_bytes(sort_reference, scores, 1000)
    print(
        f"extra device memory: jaxprune (jit) {extra_ours / 2**20:.1f} MiB "
        f"({extra_ours / param_bytes:.1%} of params), jnp.sort {extra_sort / 2**20:.1f} MiB "
        f"({extra_sort / param_bytes:.1%} of params); masks themselves are {total / 2**20:.1f} MiB"
        " (bool)"
    )


if __name__ == "__main__":
    main()
