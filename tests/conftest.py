"""Suite-wide pytest settings.

``tests/multidevice/`` needs 8 (fake CPU) devices, which must be set before JAX starts: those
tests run in their own process, started by ``tests/test_multidevice.py`` with
``XLA_FLAGS=--xla_force_host_platform_device_count=8`` and ``JAXPRUNE_MULTIDEVICE=1``. The main
session skips collecting them.

The test processes, and the command-line runs and notebook kernels they start, share one
persistent XLA compilation cache in the system temp folder instead of the user's
``~/.cache/jaxprune``: the many runs of the same smoke models compile each program once per suite
instead of once per run (it starts empty on a fresh machine; the cache changes no result).
"""

import os
import tempfile

os.environ.setdefault(
    "JAXPRUNE_COMPILATION_CACHE", os.path.join(tempfile.gettempdir(), "jaxprune-tests-xla")
)

from jaxprune.compilation_cache import enable_compilation_cache  # noqa: E402 - after the env

enable_compilation_cache()

collect_ignore = [] if os.environ.get("JAXPRUNE_MULTIDEVICE") == "1" else ["multidevice"]

# The longest test files go first, so that with
# ``pytest -n 2`` the two workers finish together instead of one waiting on a late long test.
# ``--dist loadfile`` (Makefile) gives a whole file to one worker, so a module fixture that trains
# runs once, not once per worker; ``--no-loadscope-reorder`` keeps this order (by default xdist
# starts the files with the most tests first, which left the one-test 8-device run for last).
_LONG_FIRST = (
    "tests/test_multidevice.py",
    "tests/test_multiprocess.py",
    "tests/test_paper_scale_configs.py",
    "tests/test_notebooks.py",
    "tests/test_train.py",
    "tests/test_run_failures.py",
    "tests/test_rethinking_flows.py",
    "tests/test_zoo_imagenet.py",
    "tests/test_sweep.py",
    "tests/test_report.py",
    "tests/test_checkpoint_integrity.py",
    "tests/test_lottery.py",
)


def pytest_collection_modifyitems(config, items):
    del config

    def rank(item):
        path = item.nodeid.split("::")[0]
        return _LONG_FIRST.index(path) if path in _LONG_FIRST else len(_LONG_FIRST)

    items.sort(key=rank)  # stable: the order within each group is kept
