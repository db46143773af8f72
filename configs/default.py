"""Default configuration, runnable as a config file of its own.

Every field, with the comment saying what it does, is declared in ``jaxprune/configs/default.py``
(``jaxprune.configs.default.get_config``), which the experiment configs here import; this file
re-exports it so that the default config can be run by path (dense LeNet-300-100 on the embedded
MNIST):

    python -m jaxprune.main --config configs/default.py --workdir runs/default
"""

from jaxprune.configs.default import get_config

__all__ = ["get_config"]
