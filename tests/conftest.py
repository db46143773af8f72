"""Suite-wide pytest settings.

``tests/multidevice/`` needs 8 (fake CPU) devices, which must be set before JAX starts: those
tests run in their own process, started by ``tests/test_multidevice.py`` with
``XLA_FLAGS=--xla_force_host_platform_device_count=8`` and ``JAXPRUNE_MULTIDEVICE=1``. The main
session skips collecting them.
"""

import os

collect_ignore = [] if os.environ.get("JAXPRUNE_MULTIDEVICE") == "1" else ["multidevice"]
