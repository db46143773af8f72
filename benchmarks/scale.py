"""Scale benchmark: a global mask on a 1B-weight sharded tree, ResNet-50 steps on 1 vs 2 processes.

Two measurements, each in fresh child processes on fake CPU devices
(``--xla_force_host_platform_device_count``), or on the real devices with ``--real``:

1. **Global mask at scale** (``mask``): a synthetic tree of ``--weights`` float32 weights (default
   1e9, 4 GB) in leaves shaped like big dense / conv kernels, drawn on the devices already
   sharded over all of them (no host copy). ``jp.global_mask(jp.scores.magnitude(p), s)``
   under ``jax.jit`` with sharded inputs and outputs: compile time, then the median wall time;
   the per-device memory XLA plans for it (``memory_analysis``: arguments + outputs + temporaries
   of one device's program) next to the tree's size per device, and the process's peak RSS.
   It checks the mask keeps exactly ``n_keep_for(s, N)`` weights and that every mask keeps its
   leaf's sharding.
2. **ResNet-50 train step** (``resnet``): our masked train step (``training.steps`` under
   ``sharding.jit_train_step``) at 90% sparsity on synthetic ImageNet-shaped batches, with 1
   process x 8 devices and with 2 processes x 4 devices (``jax.distributed`` on localhost, gloo),
   and the dense step alongside (same program without masks' effect): images/s of each and the
   ratios. On fake CPU devices all processes share the same cores, so the multi-process figure
   shows the cost of the cross-process collectives, not a speed-up.

Usage:
  python benchmarks/scale.py [--weights 1e9] [--devices 8] [--image_size 224] [--batch 64]
                             [--steps 5] [--only mask|resnet] [--real]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import socket
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _child_env(devices: int, real: bool) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    if not real:
        env["XLA_FLAGS"] = (
            env.get("XLA_FLAGS", "") + f" --xla_force_host_platform_device_count={devices}"
        ).strip()
        env["JAX_PLATFORMS"] = "cpu"
    return env


def _spawn(args: argparse.Namespace, role: str, processes: int) -> list[dict]:
    """Runs this script as ``processes`` children in ``role``; their JSON results."""
    devices = args.devices // processes
    port = None
    if processes > 1:
        with socket.socket() as s:
            s.bind(("localhost", 0))
            port = s.getsockname()[1]
    children = []
    for i in range(processes):
        cmd = [sys.executable, __file__, "--role", role, *sys.argv[1:]]
        if processes > 1:
            cmd += ["--coordinator", f"localhost:{port}", "--processes", str(processes)]
            cmd += ["--process_id", str(i)]
        children.append(
            subprocess.Popen(
                cmd,
                env=_child_env(devices, args.real),
                stdout=subprocess.PIPE,
                text=True,
            )
        )
    results = []
    for child in children:
        out, _ = child.communicate()
        if child.returncode:
            raise SystemExit(f"{role} child failed with exit code {child.returncode}")
        results.append(json.loads(out.strip().splitlines()[-1]))
    return results


# ---- children --------------------------------------------------------------------------------


def _leaf_shapes(total: int) -> list[tuple[int, ...]]:
    """Kernel-like shapes (rows divisible by 8) that add up to about ``total`` weights."""
    unit = [(4096, 4096), (3, 3, 512, 512), (2048, 1024), (1, 1, 1024, 2048), (1000, 2048)]
    per_round = sum(int(_prod(s)) for s in unit)
    shapes = []
    for _ in range(max(1, round(total / per_round))):
        shapes += unit
    return shapes


def _prod(shape) -> int:
    out = 1
    for d in shape:
        out *= d
    return out


def _mask_child(args: argparse.Namespace) -> dict:
    import jax
    import jax.numpy as jnp
    import numpy as np
    from jax.sharding import NamedSharding, PartitionSpec

    import jaxprune as jp

    mesh = jax.make_mesh((jax.device_count(),), ("x",), axis_types=(jax.sharding.AxisType.Auto,))
    shapes = _leaf_shapes(int(float(args.weights)))

    def spec(shape):
        axis = next((a for a, d in enumerate(shape) if d % jax.device_count() == 0), None)
        return PartitionSpec() if axis is None else PartitionSpec(*([None] * axis + ["x"]))

    names = [f"layer_{i:04d}" for i in range(len(shapes))]
    shardings = {
        n: {"kernel": NamedSharding(mesh, spec(s))} for n, s in zip(names, shapes, strict=True)
    }

    def draw(key):
        keys = jax.random.split(key, len(shapes))
        return {
            n: {"kernel": jax.random.normal(k, s, jnp.float32)}
            for n, k, s in zip(names, keys, shapes, strict=True)
        }

    params = jax.jit(draw, out_shardings=shardings)(jax.random.key(0))
    total = sum(_prod(s) for s in shapes)
    select = jax.jit(
        lambda p: jp.global_mask(jp.scores.magnitude(p), args.sparsity), out_shardings=shardings
    )
    t0 = time.perf_counter()
    compiled = select.lower(params).compile()
    compile_s = time.perf_counter() - t0
    memory = compiled.memory_analysis()
    times = []
    for _ in range(args.repeats):
        t0 = time.perf_counter()
        masks = compiled(params)
        jax.block_until_ready(masks)
        times.append(time.perf_counter() - t0)
    kept = int(sum(int(jnp.sum(m)) for m in jax.tree.leaves(masks)))
    assert kept == jp.n_keep_for(args.sparsity, total), (kept, total)
    pairs = zip(jax.tree.leaves(masks), jax.tree.leaves(shardings), strict=True)
    assert all(m.sharding == s for m, s in pairs)
    per_device_bytes = None
    if memory is not None:
        per_device_bytes = int(
            memory.argument_size_in_bytes + memory.output_size_in_bytes + memory.temp_size_in_bytes
        )
    return {
        "weights": total,
        "leaves": len(shapes),
        "devices": jax.device_count(),
        "sparsity": args.sparsity,
        "kept": kept,
        "compile_s": compile_s,
        "median_s": float(np.median(times)),
        "tree_bytes": 4 * total,
        "tree_bytes_per_device": 4 * total // jax.device_count(),
        "planned_bytes_per_device": per_device_bytes,
        "temp_bytes_per_device": None if memory is None else int(memory.temp_size_in_bytes),
        "peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
    }


def _resnet_child(args: argparse.Namespace) -> dict:
    import jax

    if args.coordinator:
        from jaxprune.training import distributed

        distributed.initialize(args.coordinator, args.processes, args.process_id)
    import jax.numpy as jnp
    import numpy as np
    import optax

    import jaxprune as jp
    from jaxprune import models
    from jaxprune.training import sharding, state, steps

    mesh = sharding.make_mesh()
    model = models.get_model("resnet50", 1000)
    shape = (args.image_size, args.image_size, 3)
    variables = jax.jit(lambda k: model.init(k, jnp.zeros((1, *shape)), train=False))(
        jax.random.key(0, impl="rbg")
    )
    params = jax.device_get(variables["params"])
    masks = jax.tree.map(np.asarray, jp.global_mask(jp.scores.magnitude(params), args.sparsity))
    tx = optax.sgd(0.1, momentum=0.9, nesterov=True)
    rows = args.batch // jax.process_count()
    rng = np.random.default_rng(jax.process_index())
    local = {
        "image": rng.normal(size=(rows, *shape)).astype(np.float32),
        "label": rng.integers(0, 1000, size=rows).astype(np.int32),
    }
    batch = sharding.shard_batch(local, mesh)
    out = {"processes": jax.process_count(), "devices": jax.device_count(), "batch": args.batch}
    for name, step_masks in (("dense", None), ("masked", masks)):
        build = jax.jit(
            lambda v, m: state.create_train_state(v, tx, jax.random.key(1), masks=m),
            out_shardings=sharding.replicated(mesh),
        )
        train_state = build(variables, step_masks)
        step = sharding.jit_train_step(steps.train_step_fn(model.apply, tx), mesh)
        t0 = time.perf_counter()
        train_state, metrics = step(train_state, batch)
        jax.block_until_ready(metrics)
        out[f"{name}_first_step_s"] = time.perf_counter() - t0
        times = []
        for _ in range(args.steps):
            t0 = time.perf_counter()
            train_state, metrics = step(train_state, batch)
            jax.block_until_ready(metrics)
            times.append(time.perf_counter() - t0)
        out[f"{name}_images_per_s"] = args.batch / float(np.median(times))
    return out


# ---- parent ----------------------------------------------------------------------------------


def _gib(n) -> str:
    return "n/a" if n is None else f"{n / 2**30:.2f} GiB"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--weights", default="1e9")
    parser.add_argument("--sparsity", type=float, default=0.9)
    parser.add_argument("--devices", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--image_size", type=int, default=224)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--only", choices=["mask", "resnet"], default=None)
    parser.add_argument("--real", action="store_true", help="use the real devices")
    parser.add_argument("--role", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--coordinator", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--processes", type=int, default=1, help=argparse.SUPPRESS)
    parser.add_argument("--process_id", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.role == "mask":
        print(json.dumps(_mask_child(args)))
        return
    if args.role == "resnet":
        print(json.dumps(_resnet_child(args)))
        return

    if args.only in (None, "mask"):
        (r,) = _spawn(args, "mask", 1)
        print(
            f"global mask, {r['weights']:,} float32 weights in {r['leaves']} leaves sharded over "
            f"{r['devices']} devices, sparsity {r['sparsity']}:"
        )
        print(f"  kept {r['kept']:,} (= n_keep_for, exact); masks keep the leaves' shardings")
        print(f"  compile {r['compile_s']:.1f} s, run {r['median_s']:.2f} s (median)")
        print(
            f"  per device: tree {_gib(r['tree_bytes_per_device'])}, planned by XLA "
            f"{_gib(r['planned_bytes_per_device'])} (temporaries "
            f"{_gib(r['temp_bytes_per_device'])}); whole tree {_gib(r['tree_bytes'])}; "
            f"process peak RSS {_gib(r['peak_rss_bytes'])}"
        )
    if args.only in (None, "resnet"):
        single = _spawn(args, "resnet", 1)[0]
        multi = _spawn(args, "resnet", 2)[0]
        print(
            f"ResNet-50 train step, global batch {args.batch} at {args.image_size}px, "
            f"{args.devices} devices, 90% sparse masks (images/s, median of {args.steps}):"
        )
        for label, r in (("1 process x", single), ("2 processes x", multi)):
            per = r["devices"] // r["processes"]
            print(
                f"  {label} {per} devices: dense {r['dense_images_per_s']:.1f}, masked "
                f"{r['masked_images_per_s']:.1f} (masked/dense "
                f"{r['masked_images_per_s'] / r['dense_images_per_s']:.3f}); first step "
                f"{r['masked_first_step_s']:.1f} s"
            )
        print(
            "  2-process / 1-process throughput (masked): "
            f"{multi['masked_images_per_s'] / single['masked_images_per_s']:.3f}"
        )


if __name__ == "__main__":
    main()
