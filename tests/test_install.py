"""Packaging: the wheel holds exactly the ``jaxprune`` package, and it runs from any directory.

The wheel is built offline (``pip wheel --no-deps --no-build-isolation``, with the setuptools of
the test requirements) from a copy of the source tree, so the build leaves nothing in the
repository. It is then unpacked with ``pip install --target`` into a folder that holds nothing but
``jaxprune``; a smoke run from another working directory with only that folder on ``PYTHONPATH``
(its dependencies come from this venv) proves that the experiment configs no longer need the
repository root on the path.
"""

import email.parser
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
RUN_DEPS = {"jax", "flax", "optax", "orbax-checkpoint", "ml-collections", "numpy"}
NOT_PACKAGED = ("tests/", "configs/", "benchmarks/", "experiments/", "docs/")
_COPY_IGNORE = shutil.ignore_patterns(
    ".git", ".venv", "__pycache__", "*.pyc", "*.egg-info", "build", "dist", "runs", "workdir",
    ".hypothesis", ".pytest_cache", ".ruff_cache", "out",
)  # fmt: skip


def _pip(*args, cwd=None):
    out = subprocess.run(
        [sys.executable, "-m", "pip", *args, "--disable-pip-version-check", "--no-input"],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-3000:]
    return out


@pytest.fixture(scope="module")
def wheel(tmp_path_factory):
    """The wheel built from a copy of the source tree (same files, no build/ left in the repo)."""
    if importlib.util.find_spec("setuptools") is None:
        pytest.fail("setuptools missing: pip install -r requirements-test.txt -c constraints.txt")
    tmp = tmp_path_factory.mktemp("wheel")
    src = tmp / "src"
    shutil.copytree(REPO, src, ignore=_COPY_IGNORE)
    _pip("wheel", "--no-deps", "--no-build-isolation", "--no-index", "-w", str(tmp / "dist"), ".",
         cwd=src)  # fmt: skip
    (path,) = (tmp / "dist").glob("jaxprune-*.whl")
    return path


def test_wheel_holds_the_package_and_only_it(wheel):
    with zipfile.ZipFile(wheel) as zf:
        names = set(zf.namelist())
        (metadata,) = [n for n in names if n.endswith(".dist-info/METADATA")]
        meta = email.parser.Parser().parsestr(zf.read(metadata).decode())
    sources = {p.relative_to(REPO).as_posix() for p in (REPO / "jaxprune").rglob("*.py")}
    assert {"jaxprune/__init__.py", "jaxprune/main.py", "jaxprune/configs/default.py"} <= sources
    assert sources - names == set(), "source files missing from the wheel"
    packaged = {n for n in names if ".dist-info/" not in n}
    assert all(n.startswith("jaxprune/") for n in packaged), sorted(packaged)
    assert not [n for n in names if n.startswith(NOT_PACKAGED)]
    assert meta["Name"] == "jaxprune"
    requires = meta.get_all("Requires-Dist") or []
    core = {
        re.split(r"[\s<>=!~;\[(]", r, maxsplit=1)[0].lower() for r in requires if "extra" not in r
    }
    core = {name.replace("_", "-") for name in core}
    assert RUN_DEPS <= core, requires
    pins = [r for r in requires if "==" in r.split(";")[0]]
    assert not pins, f"run-time dependencies are ranges, not pins: {pins}"
    extras = {
        re.split(r"[\s<>=!~;\[(]", r, maxsplit=1)[0].lower() for r in requires if "extra" in r
    }
    assert {"pytest", "hypothesis", "chex", "pytest-xdist"} <= extras


def test_configs_import_only_the_package():
    """No config imports ``configs`` (which only resolves with the repository root on the path)."""
    for path in sorted((REPO / "configs").glob("*.py")):
        text = path.read_text()
        assert not re.search(r"^\s*(from|import) configs\b", text, re.M), path.name
        assert "_recipes" not in text, path.name


def test_installed_package_runs_a_config_from_another_directory(wheel, tmp_path):
    site = tmp_path / "site"
    _pip("install", "--no-deps", "--no-index", "--target", str(site), str(wheel))
    env = {**os.environ, "PYTHONPATH": str(site)}  # jaxprune only: not the repository root
    probe = subprocess.run(
        [sys.executable, "-c", "import importlib.util as u; "
         "print(u.find_spec('jaxprune').origin); print(u.find_spec('configs'))"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    origin, configs_spec = probe.stdout.split()
    assert Path(origin).resolve().is_relative_to(site.resolve()) and configs_spec == "None", (
        probe.stdout
    )
    config = REPO / "configs" / "lenet300_mnist_gmp.py"
    workdir = tmp_path / "run"
    out = subprocess.run(
        [sys.executable, "-m", "jaxprune.main", f"--config={config}:smoke",
         f"--workdir={workdir}", "--config.training.steps=20", "--config.finetune.steps=10"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-3000:]
    summary = json.loads((workdir / "summary.json").read_text())
    assert 0.0 <= summary["test_accuracy"] <= 1.0
    assert summary["steps"] == 30
