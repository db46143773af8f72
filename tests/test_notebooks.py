"""The notebooks in ``experiments/notebooks/`` run top to bottom, at smoke scale, in a fresh kernel.

Each notebook ends with a cell of assertions on its own results, so executing it is a test of
what it claims, not only that it runs. The kernel is this interpreter (``sys.executable``, via a
kernel spec written to a temporary folder: nothing is registered with Jupyter), started in a
temporary working directory with ``JAXPRUNE_SMOKE=1``, the repository root on ``PYTHONPATH`` and
``JAXPRUNE_NOTEBOOK_WORKDIR`` in that directory, so nothing is written into the repository. The
kernel shares the suite's persistent XLA compilation cache (``JAXPRUNE_COMPILATION_CACHE``, set
in ``tests/conftest.py``).

The committed notebooks carry no outputs (``test_committed_notebooks_have_no_outputs``).
"""

import json
import os
import sys
import time
from pathlib import Path

import nbformat
import pytest
from jupyter_client.kernelspec import KernelSpecManager
from jupyter_client.manager import KernelManager
from nbclient import NotebookClient

REPO = Path(__file__).resolve().parents[1]
NOTEBOOK_DIR = REPO / "experiments" / "notebooks"
NOTEBOOKS = (
    "custom_score.ipynb",
    "layer_collapse.ipynb",
    "effective_sparsity.ipynb",
    "bring_your_own_model.ipynb",
)
KERNEL_NAME = "jaxprune-tests"
CELL_TIMEOUT_S = 300

STRIP_HINT = (
    'strip it: python -c "import nbformat, sys; p = sys.argv[1]; nb = nbformat.read(p, 4); '
    "[c.update(outputs=[], execution_count=None) for c in nb.cells if c.cell_type == 'code']; "
    'nbformat.write(nb, p)" NOTEBOOK'
)


def _kernel_manager(root: Path) -> KernelManager:
    """A kernel manager that starts ``sys.executable -m ipykernel_launcher``.

    The kernel spec lives in ``root``, so neither a Jupyter installation elsewhere nor a user's
    own ``python3`` kernel can substitute another interpreter.
    """
    spec_dir = root / "kernels" / KERNEL_NAME
    spec_dir.mkdir(parents=True)
    spec = {
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "jaxprune tests",
        "language": "python",
    }
    (spec_dir / "kernel.json").write_text(json.dumps(spec))
    specs = KernelSpecManager(kernel_dirs=[str(root / "kernels")], ensure_native_kernel=False)
    manager = KernelManager(kernel_name=KERNEL_NAME, kernel_spec_manager=specs)
    manager.connection_file = str(root / "kernel-connection.json")
    return manager


def _kernel_env(root: Path) -> dict[str, str]:
    env = dict(os.environ)
    pythonpath = [str(REPO)] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
    env.update(
        JAXPRUNE_SMOKE="1",
        JAXPRUNE_NOTEBOOK_WORKDIR=str(root / "runs"),
        PYTHONPATH=os.pathsep.join(pythonpath),
        PYTHONDONTWRITEBYTECODE="1",
        IPYTHONDIR=str(root / "ipython"),
        MPLBACKEND="module://matplotlib_inline.backend_inline",
    )
    cache = env.get("JAXPRUNE_COMPILATION_CACHE", "")
    if cache and cache.strip().lower() not in ("0", "off", "none"):
        env.update(
            JAX_COMPILATION_CACHE_DIR=os.path.expanduser(cache),
            JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0",
            JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES="0",
        )
    return env


def execute_notebook(path: Path, workdir: Path) -> tuple[nbformat.NotebookNode, float]:
    """Executes the notebook at ``path`` with ``workdir`` as the kernel's working directory.

    Returns:
      The executed notebook and the wall time of its cells (kernel start excluded).
    """
    nb = nbformat.read(path, as_version=4)
    client = NotebookClient(
        nb,
        km=_kernel_manager(workdir),
        timeout=CELL_TIMEOUT_S,
        kernel_name=KERNEL_NAME,
        resources={"metadata": {"path": str(workdir)}},
    )
    with client.setup_kernel(env=_kernel_env(workdir)):
        start = time.perf_counter()
        for index, cell in enumerate(nb.cells):
            client.execute_cell(cell, index)
        elapsed = time.perf_counter() - start
    return nb, elapsed


def _outputs(nb: nbformat.NotebookNode) -> str:
    texts = []
    for cell in nb.cells:
        for output in cell.get("outputs", []):
            if output.get("output_type") == "stream":
                texts.append(output.get("text", ""))
            elif "data" in output:
                texts.append(output["data"].get("text/plain", ""))
    return "".join(texts)


def test_the_notebook_list_is_complete():
    assert sorted(p.name for p in NOTEBOOK_DIR.glob("*.ipynb")) == sorted(NOTEBOOKS)


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_committed_notebooks_have_no_outputs(name):
    nb = nbformat.read(NOTEBOOK_DIR / name, as_version=4)
    nbformat.validate(nb)
    assert nb.cells[0].cell_type == "markdown", "each notebook opens with an introduction"
    for cell in nb.cells:
        if cell.cell_type == "code":
            assert cell.outputs == [] and cell.execution_count is None, f"{name}: {STRIP_HINT}"


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_notebook_runs_and_its_checks_pass(name, tmp_path):
    before = sorted(p.relative_to(REPO) for p in NOTEBOOK_DIR.rglob("*"))
    nb, elapsed = execute_notebook(NOTEBOOK_DIR / name, tmp_path)
    text = _outputs(nb)
    assert "all checks passed" in text, text[-2000:]
    print(f"{name}: {elapsed:.1f} s of cells")
    # Nothing was written next to the notebooks (modules and runs went to the temp folder).
    assert sorted(p.relative_to(REPO) for p in NOTEBOOK_DIR.rglob("*")) == before
