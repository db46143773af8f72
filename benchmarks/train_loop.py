"""The README experiment end to end: our CLI vs the raw jitted step vs a plain PyTorch script.

Runs, side by side and interleaved ``--repeats`` times (the order rotates every repeat):

* **ours**: ``python -m jaxprune.main --config configs/lenet300_mnist_gmp.py --workdir <fresh>
  --config.training.epochs=E --config.finetune.epochs=F`` as a subprocess, timed from process
  start to exit. ``--ours LABEL=TREE`` (repeatable) runs the CLI of another source tree too (e.g.
  a baseline checkout, ``git worktree add /tmp/base HEAD``); ``--env LABEL:KEY=VALUE`` sets an
  environment variable for one of them (e.g. a persistent XLA compilation cache;
  ``{fresh}`` in VALUE is replaced by an empty directory made for each run: a cold cache).
* **torch**: ``benchmarks/torch_lenet300_peer.py`` (same data, steps, batch size, evaluations;
  ``torch.set_num_threads(--torch-threads)``), when torch is importable.
* **raw**: our jitted train step of LeNet-300-100 (Adam, cosine, batch 128, the run's sharding)
  in a tight loop on one device-resident batch, in a subprocess: the speed of the compiled step
  alone.

Printed: per run the wall time, the train steps per second over the whole process (steps /
wall) and inside the training loop (from the timestamps of the log lines of each phase, first
interval dropped: no compile, no evaluation), the final test accuracy; then medians and the
ratios ours / torch (of the medians, and the median of the per-repeat ratios, which is robust to
load drifting on a shared machine).

Usage:
  python benchmarks/train_loop.py [--repeats 3] [--epochs 2] [--finetune-epochs 2]
      [--torch-threads 2[,1]] [--no-torch] [--no-raw] [--raw-steps 1000]
      [--ours base=/tmp/base] [--env fast:JAX_COMPILATION_CACHE_DIR=/tmp/xla-cache]
"""

from __future__ import annotations

import argparse
import datetime
import importlib.util
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PEER = REPO / "benchmarks" / "torch_lenet300_peer.py"
CONFIG = "configs/lenet300_mnist_gmp.py"
BATCH_SIZE = 128
STEPS_PER_EPOCH = 60000 // BATCH_SIZE
# absl log line of a train log: "I1202 06:12:17.198301 1399... loop.py:712] step 300 (dense): ..."
_LOG_LINE = re.compile(r"^I\d{4} (\d\d):(\d\d):(\d\d\.\d+) .*\] step (\d+) \(([\w-]+)\): loss")


def phase_steps(epochs: float) -> int:
    return max(1, round(epochs * STEPS_PER_EPOCH))


def in_loop_rate(log: str) -> float | None:
    """Train steps/s between the log lines of each phase (first interval of a phase dropped)."""
    phases: dict[str, list[tuple[float, int]]] = {}
    for line in log.splitlines():
        match = _LOG_LINE.match(line)
        if match:
            hours, minutes, seconds, step, phase = match.groups()
            t = int(hours) * 3600 + int(minutes) * 60 + float(seconds)
            phases.setdefault(phase, []).append((t, int(step)))
    steps = seconds_total = 0.0
    for points in phases.values():
        points = points[1:]  # the first interval holds the compile
        if len(points) >= 2:
            (t0, s0), (t1, s1) = points[0], points[-1]
            if t1 < t0:  # past midnight
                t1 += 86400
            steps += s1 - s0
            seconds_total += t1 - t0
    return steps / seconds_total if seconds_total > 0 else None


def run_ours(tree: Path, epochs: float, finetune_epochs: float, env: dict[str, str]) -> dict:
    workdir = Path(tempfile.mkdtemp(prefix="jaxprune-bench-"))
    command = [
        sys.executable,
        "-m",
        "jaxprune.main",
        "--config",
        CONFIG,
        "--workdir",
        str(workdir),
        f"--config.training.epochs={epochs}",
        f"--config.finetune.epochs={finetune_epochs}",
    ]
    fresh = Path(tempfile.mkdtemp(prefix="jaxprune-bench-fresh-"))
    # "{fresh}" in a value: an empty directory of this run (e.g. a cold compilation cache).
    env = {key: value.replace("{fresh}", str(fresh)) for key, value in env.items()}
    full_env = dict(os.environ, PYTHONPATH=str(tree), **env)
    try:
        start = time.perf_counter()
        proc = subprocess.run(command, cwd=tree, env=full_env, capture_output=True, text=True)
        wall = time.perf_counter() - start
        if proc.returncode != 0:
            raise RuntimeError(f"ours ({tree}) failed:\n{proc.stderr[-3000:]}")
        summary = json.loads((workdir / "summary.json").read_text())
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
        shutil.rmtree(fresh, ignore_errors=True)
    steps = int(summary["steps"])
    return {
        "wall": wall,
        "steps": steps,
        "e2e_rate": steps / wall,
        "loop_rate": in_loop_rate(proc.stderr + proc.stdout),
        "accuracy": summary["test_accuracy"],
    }


def run_torch(epochs: float, finetune_epochs: float, threads: int) -> dict:
    command = [
        sys.executable,
        "-W",
        "ignore",
        str(PEER),
        f"--epochs={epochs}",
        f"--finetune-epochs={finetune_epochs}",
        f"--threads={threads}",
    ]
    start = time.perf_counter()
    proc = subprocess.run(command, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        raise RuntimeError(f"torch peer failed:\n{proc.stderr[-3000:]}")
    rate = re.search(r"train steps/s: ([\d.]+)", proc.stdout)
    acc = re.search(r"^finetune\s+\d+\s+([\d.]+)%", proc.stdout, re.M)
    steps = phase_steps(epochs) + phase_steps(finetune_epochs)
    return {
        "wall": wall,
        "steps": steps,
        "e2e_rate": steps / wall,
        "loop_rate": float(rate.group(1)) if rate else None,
        "accuracy": float(acc.group(1)) / 100 if acc else None,
    }


def run_raw(tree: Path, steps: int) -> dict:
    command = [sys.executable, str(Path(__file__).resolve()), "--mode=raw", f"--raw-steps={steps}"]
    env = dict(os.environ, PYTHONPATH=str(tree))
    proc = subprocess.run(command, cwd=tree, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"raw step benchmark failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def raw_step_rate(num_steps: int) -> dict:
    """Steps/s of our jitted LeNet-300-100 train step alone (run with ``--mode=raw``)."""
    import jax
    import jax.numpy as jnp

    from jaxprune import data, models
    from jaxprune.training import optim, sharding, steps
    from jaxprune.training import state as state_lib

    spec = importlib.util.spec_from_file_location("bench_config", Path.cwd() / CONFIG)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    config = module.get_config()
    ds = data.get_dataset("mnist")
    model = models.get_model("lenet300", ds.num_classes)
    mesh = sharding.make_mesh()
    tx, _ = optim.make_optimizer(
        config.training, learning_rate=1e-3, lr_schedule="cosine", total_steps=num_steps
    )
    sample = jnp.zeros((1, *ds.input_shape), jnp.float32)
    variables = jax.jit(lambda key: model.init({"params": key}, sample, train=False))(
        jax.random.key(0, impl="rbg")
    )
    state = state_lib.create_train_state(variables, tx, jax.random.PRNGKey(0))
    state = sharding.replicate(state, mesh)
    train_step = sharding.jit_train_step(steps.train_step_fn(model.apply, tx), mesh)
    batch = sharding.shard_batch(ds.train_batch(BATCH_SIZE, 0, 0), mesh)
    for _ in range(20):  # compile and warm up
        state, metrics = train_step(state, batch)
    jax.block_until_ready(state)
    start = time.perf_counter()
    for _ in range(num_steps):
        state, metrics = train_step(state, batch)
    jax.block_until_ready((state, metrics))
    seconds = time.perf_counter() - start
    return {
        "steps": num_steps,
        "rate": num_steps / seconds,
        "ms_per_step": 1e3 * seconds / num_steps,
    }


def torch_available() -> bool:
    return importlib.util.find_spec("torch") is not None


def median(values: list[float | None]) -> float | None:
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def fmt(value: float | None, spec: str) -> str:
    return "n/a" if value is None else format(value, spec)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mode", choices=["bench", "raw"], default="bench")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--epochs", type=float, default=2.0, help="dense epochs")
    parser.add_argument("--finetune-epochs", type=float, default=2.0)
    parser.add_argument("--torch-threads", default="2", help="comma-separated, e.g. 2,1")
    parser.add_argument("--no-torch", action="store_true")
    parser.add_argument("--no-raw", action="store_true")
    parser.add_argument("--no-ours", action="store_true", help="skip this checkout's CLI")
    parser.add_argument("--raw-steps", type=int, default=1000)
    parser.add_argument(
        "--ours", action="append", default=[], help="LABEL=TREE: also time this tree's CLI"
    )
    parser.add_argument(
        "--env", action="append", default=[], help="LABEL:KEY=VALUE for one of the 'ours' runs"
    )
    args = parser.parse_args()
    if args.mode == "raw":
        print(json.dumps(raw_step_rate(args.raw_steps)))
        return

    trees = {} if args.no_ours else {"ours": REPO}
    for item in args.ours:
        label, _, tree = item.partition("=")
        trees[label] = Path(tree).resolve()
    envs: dict[str, dict[str, str]] = {label: {} for label in trees}
    for item in args.env:
        label, _, assignment = item.partition(":")
        key, _, value = assignment.partition("=")
        if label not in envs:
            parser.error(f"--env {item}: no run labelled {label!r}")
        envs[label][key] = value
    runs = {
        label: (lambda t=tree, e=envs[label]: run_ours(t, args.epochs, args.finetune_epochs, e))
        for label, tree in trees.items()
    }
    if not args.no_torch:
        if torch_available():
            for threads in (int(t) for t in args.torch_threads.split(",")):
                runs[f"torch-{threads}t"] = lambda n=threads: run_torch(
                    args.epochs, args.finetune_epochs, n
                )
        else:
            print("torch is not installed: no PyTorch peer (pip install torch to add it)")
    if not args.no_raw:
        raw_tree = next(iter(trees.values()), REPO)
        runs["raw-step"] = lambda: run_raw(raw_tree, args.raw_steps)

    steps = phase_steps(args.epochs) + phase_steps(args.finetune_epochs)
    print(
        f"LeNet-300-100 / MNIST, {args.epochs:g} + {args.finetune_epochs:g} epochs "
        f"({steps} train steps, batch {BATCH_SIZE}), {args.repeats} interleaved repeats, "
        f"{os.cpu_count()} CPUs, {datetime.datetime.now():%Y-%m-%d %H:%M}"
    )
    results: dict[str, list[dict]] = {label: [] for label in runs}
    labels = list(runs)
    for r in range(args.repeats):
        order = labels[r % len(labels) :] + labels[: r % len(labels)]
        for label in order:
            out = runs[label]()
            results[label].append(out)
            if label == "raw-step":
                print(f"  [{r + 1}] {label:<12} {out['rate']:8.1f} steps/s", flush=True)
            else:
                print(
                    f"  [{r + 1}] {label:<12} {out['wall']:7.2f} s  e2e {out['e2e_rate']:6.1f} "
                    f"steps/s  loop {fmt(out['loop_rate'], '6.1f')} steps/s  "
                    f"acc {fmt(out['accuracy'], '.4f')}",
                    flush=True,
                )

    print("\nmedians")
    print(f"  {'run':<12} {'wall s':>8} {'e2e steps/s':>12} {'loop steps/s':>13} {'test acc':>9}")
    walls = {}
    for label, outs in results.items():
        if label == "raw-step":
            continue
        walls[label] = [o["wall"] for o in outs]
        print(
            f"  {label:<12} {median(walls[label]):8.2f} "
            f"{median([o['e2e_rate'] for o in outs]):12.1f} "
            f"{fmt(median([o['loop_rate'] for o in outs]), '13.1f')} "
            f"{fmt(median([o['accuracy'] for o in outs]), '9.4f')}"
        )
    if "raw-step" in results:
        raw = median([o["rate"] for o in results["raw-step"]])
        print(f"  {'raw-step':<12} {'':>8} {'':>12} {raw:13.1f}   (jitted step alone)")
        for label, outs in results.items():
            if label in trees:
                loop = median([o["loop_rate"] for o in outs])
                e2e = median([o["e2e_rate"] for o in outs])
                print(
                    f"  {label}: in-loop rate = {fmt(loop and loop / raw, '.2f')} x raw step, "
                    f"end-to-end rate = {e2e / raw:.2f} x raw step"
                )
    torch_labels = [label for label in walls if label.startswith("torch-")]
    for label in trees:
        for peer in torch_labels:
            ratio_of_medians = median(walls[label]) / median(walls[peer])
            paired = median([a / b for a, b in zip(walls[label], walls[peer], strict=True)])
            print(
                f"  wall {label} / {peer}: {ratio_of_medians:.2f} (ratio of medians), "
                f"{paired:.2f} (median of per-repeat ratios)"
            )
    for label in trees:
        for other in trees:
            if label < other:
                ratio = median(walls[label]) / median(walls[other])
                print(f"  wall {label} / {other}: {ratio:.2f}")


if __name__ == "__main__":
    main()
