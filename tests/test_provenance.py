"""``provenance()``: versions as importlib.metadata reports them, devices, and the git commit
of the checkout holding jaxprune (None, never an exception, outside one)."""

import importlib.metadata
import json
import platform
import shutil
import subprocess
from pathlib import Path

import jax
import pytest

import jaxprune
from jaxprune.training import provenance as prov

REPO = Path(jaxprune.__file__).resolve().parent.parent
needs_git = pytest.mark.skipif(shutil.which("git") is None, reason="git is not installed")


def _git(cwd, *args):
    return subprocess.run(
        ["git", "-c", "user.name=t", "-c", "user.email=t@t", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()


def test_keys_versions_and_devices():
    info = prov.provenance()
    json.dumps(info)
    assert set(info) == {"versions", "devices", "git"}
    versions = info["versions"]
    assert set(versions) == {*prov.DISTRIBUTIONS, "python"}
    for name in ("jax", "jaxlib", "flax", "optax", "orbax-checkpoint", "numpy"):
        assert versions[name] == importlib.metadata.version(name), name
    assert versions["python"] == platform.python_version()
    assert isinstance(versions["jaxprune"], str)  # installed, or the source's pyproject.toml
    assert info["devices"] == {
        "platform": jax.devices()[0].platform,
        "kind": jax.devices()[0].device_kind,
        "count": jax.device_count(),
        "local_count": jax.local_device_count(),
        "process_count": jax.process_count(),
    }


@needs_git
def test_commit_is_head_of_the_jaxprune_checkout():
    try:
        head = _git(REPO, "rev-parse", "HEAD")
    except subprocess.CalledProcessError:
        pytest.skip("jaxprune is not imported from a git checkout")
    git = prov.provenance()["git"]
    assert git is not None and git["commit"] == head and isinstance(git["dirty"], bool)


@needs_git
def test_dirty_counts_tracked_changes_only(tmp_path):
    _git(tmp_path, "init", "-q")
    package = tmp_path / "pkg"
    package.mkdir()
    (package / "a.py").write_text("x = 1\n")
    _git(tmp_path, "add", ".")
    _git(tmp_path, "commit", "-q", "-m", "one")
    head = _git(tmp_path, "rev-parse", "HEAD")
    (package / "untracked_run_output.json").write_text("{}")
    assert prov.git_info(package) == {"commit": head, "dirty": False}
    (package / "a.py").write_text("x = 2\n")
    assert prov.git_info(package) == {"commit": head, "dirty": True}


@needs_git
def test_no_git_checkout_gives_none(tmp_path, monkeypatch):
    plain = tmp_path / "site-packages" / "jaxprune"
    plain.mkdir(parents=True)
    monkeypatch.setattr(prov, "_PACKAGE_DIR", plain)
    assert prov.provenance()["git"] is None
    # An ignored copy inside some repository (a venv in a checkout) is not that checkout.
    _git(tmp_path, "init", "-q")
    (tmp_path / ".gitignore").write_text("site-packages/\n")
    _git(tmp_path, "add", ".gitignore")
    _git(tmp_path, "commit", "-q", "-m", "one")
    assert prov.git_info(plain) is None
    assert prov.git_info(tmp_path / "missing") is None


def test_git_missing_gives_none(monkeypatch):
    monkeypatch.setenv("PATH", "")
    assert prov.git_info(REPO / "jaxprune") is None
